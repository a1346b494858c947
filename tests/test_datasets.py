import pytest

from conftest import save_brain_layout, save_cnmc_flat, save_cnmc_official
from edge.images import load_image
from edge.datasets import find_brain_images, find_cnmc_images, patient_from_name


def test_brain_layout_loads_every_format_and_mode(tmp_path):
    root = save_brain_layout(tmp_path / "kaggle")
    samples = find_brain_images([root])
    assert len(samples) == 12
    assert {s.label for s in samples if "/yes/" in s.path} == {1}
    assert {s.label for s in samples if "/no/" in s.path} == {0}
    assert any(" " in s.path for s in samples)
    for sample in samples:
        assert load_image(sample.path).shape[2] == 3


def test_several_brain_folders_combine(tmp_path):
    first = save_brain_layout(tmp_path / "a", per_class=2)
    second = save_brain_layout(tmp_path / "b", per_class=3)
    assert len(find_brain_images([first, second])) == 10


def test_brain_folder_without_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="yes/ and no/"):
        find_brain_images([tmp_path])


def test_patient_ids_from_file_names():
    assert patient_from_name("UID_11_10_1_all.webp") == "11"
    assert patient_from_name("/x/UID_H10_3_2_hem.bmp") == "H10"
    with pytest.raises(ValueError, match="UID_"):
        patient_from_name("cell.bmp")


def test_cnmc_flat_layout(tmp_path):
    root = save_cnmc_flat(tmp_path / "cnmc", {"3": 2, "H7": 3}, ext=".webp")
    samples = find_cnmc_images(root)
    assert sorted((s.patient, s.label) for s in samples) == [("3", 1)] * 2 + [("H7", 0)] * 3


def test_cnmc_official_layout_with_prelim_csv(tmp_path):
    samples = find_cnmc_images(save_cnmc_official(tmp_path))
    by_patient = {}
    for s in samples:
        by_patient.setdefault(s.patient, set()).add(s.label)
    assert by_patient == {"1": {1}, "H1": {0}, "2": {1}, "H2": {0}, "57": {1}, "H49": {0}}
    prelim = [s for s in samples if "prelim" in s.path]
    assert sorted((s.path.rsplit("/", 1)[1], s.label) for s in prelim) == [("1.bmp", 1), ("2.bmp", 0), ("3.bmp", 1)]
    assert len(samples) == 13


def test_cnmc_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no C-NMC images"):
        find_cnmc_images(tmp_path)
