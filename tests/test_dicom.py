"""edge/dicom.py and edge/dicom_series.py: real MR slices written as DICOM read back to the PNG route's
pixels and scores; pydicom's own test files; series grouping and the slices left out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data, synthetic_mri
from dicom_helpers import SAGITTAL, write_mr

pydicom = pytest.importorskip("pydicom")

from edge.dicom import DicomError, DicomSkip, iter_frames, load_dicom_image  # noqa: E402
from edge.dicom_series import classify_series, left_out_reason, scan  # noqa: E402
from edge.images import ImageError, load_image  # noqa: E402

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"


def real_slices(count: int = 3) -> list[tuple[str, np.ndarray]]:
    """(name, HxW uint8 gray) of the first few real scans of each class."""
    root = shared_data("brain_mri", "brain_tumor_dataset")
    picked = []
    for label in ("yes", "no"):
        for path in sorted((root / label).iterdir())[:count]:
            rgb = load_image(path)
            picked.append((f"{label}_{path.stem.replace(' ', '_')}", rgb.mean(axis=2).round().astype(np.uint8)))
    return picked


@pytest.mark.realdata
def test_real_scans_as_dicom_match_the_png_route(tmp_path):
    from edge.classifier import Classifier

    with Classifier("brain") as classifier:
        for i, (name, gray) in enumerate(real_slices()):
            png = tmp_path / f"{name}.png"
            Image.fromarray(gray).save(png)
            expected = classifier.classify(png)
            variants = {
                "8bit.dcm": dict(bits=8),
                "16bit": dict(bits=16),  # no extension: recognised by content
                "mono1_8bit.dcm": dict(bits=8, monochrome1=True),
                "mono1_16bit.dcm": dict(bits=16, monochrome1=True),
            }
            for suffix, options in variants.items():
                path = write_mr(tmp_path / f"{name}_{suffix}", gray, study=STUDY, series=SERIES, instance=i + 1, **options)
                assert np.array_equal(load_image(path), np.repeat(gray[:, :, None], 3, axis=2)), suffix
                got = classifier.classify(path)
                assert got.label == expected.label, (name, suffix)
                assert got.probabilities == expected.probabilities, (name, suffix)
        # multi-frame: every frame is one slice, read back to its pixels
        grays = [gray for _, gray in real_slices(1)]
        height, width = min(g.shape[0] for g in grays), min(g.shape[1] for g in grays)
        stack = np.stack([g[:height, :width] for g in grays])
        path = write_mr(tmp_path / "multiframe.dcm", None, frames=stack, study=STUDY, series=SERIES, instance=9, bits=16)
        frames = list(iter_frames(path))
        assert [info.instance for info, _ in frames] == ["9:1", "9:2"]
        for (info, rgb), gray in zip(frames, stack):
            assert np.array_equal(rgb[:, :, 0], gray)
            png = tmp_path / f"frame{info.frame}.png"
            Image.fromarray(gray).save(png)
            assert classifier.classify(rgb).probabilities == classifier.classify(png).probabilities
        with pytest.raises(ImageError, match="multi-frame DICOM \\(2 frames\\)"):
            load_image(path)


def get_testdata_file(name: str) -> str:
    """One of the test files in pydicom's wheel (never downloaded)."""
    from pydicom.data import get_testdata_file as bundled

    path = bundled(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom {pydicom.__version__}"
    return path


def test_pydicom_test_files_read_or_fail_with_one_line():
    mr = get_testdata_file("MR_small.dcm")
    reference = load_dicom_image(mr)
    assert reference.shape == (64, 64, 3) and reference.dtype == np.uint8
    # the same slice in other transfer syntaxes: big endian, implicit VR, RLE (pydicom's own decoder),
    # and JPEG 2000 lossless through Pillow's OpenJPEG
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        assert np.array_equal(load_dicom_image(get_testdata_file(name)), reference), name
    # colour, palette and multi-frame objects become RGB frames
    assert load_dicom_image(get_testdata_file("SC_rgb_rle.dcm")).shape == (100, 100, 3)
    assert load_dicom_image(get_testdata_file("examples_palette.dcm")).shape == (350, 800, 3)
    assert len(list(iter_frames(get_testdata_file("SC_rgb_rle_2frame.dcm")))) == 2
    with pytest.raises(DicomError, match=r"^.*MR_truncated.dcm: pixel data is 8130 bytes, shorter than the 8192"):
        load_dicom_image(get_testdata_file("MR_truncated.dcm"))
    with pytest.raises(DicomSkip, match="not an image \\(Comprehensive SR Storage; no Pixel Data\\)"):
        load_dicom_image(get_testdata_file("test-SR.dcm"))
    with pytest.raises(DicomSkip, match="not an image \\(RT Plan Storage"):
        load_dicom_image(get_testdata_file("rtplan.dcm"))
    with pytest.raises(DicomError, match="JPEG Lossless, Non-Hierarchical.*1.2.840.10008.1.2.4.70.*which no installed "
                                         "pixel-data plugin decodes"):
        load_dicom_image(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
    for name in ("JPEG-lossy.dcm", "SC_rgb_jpeg.dcm", "badVR.dcm", "liver_1frame.dcm", "no_meta.dcm", "rtstruct.dcm"):
        with pytest.raises(DicomError) as caught:
            load_dicom_image(get_testdata_file(name))
        assert "\n" not in str(caught.value) and str(caught.value).startswith(get_testdata_file(name))


def test_window_and_modality_lut_follow_the_standard(tmp_path):
    gray = synthetic_mri(1, True)
    for options in (dict(bits=8), dict(bits=16), dict(bits=8, monochrome1=True), dict(bits=16, monochrome1=True)):
        path = write_mr(tmp_path / "slice.dcm", gray, study=STUDY, series=SERIES, instance=1, **options)
        assert np.array_equal(load_image(path)[:, :, 1], gray), options
    # no window in a 16-bit file: the stated 0.5-99.5 percentile window
    path = write_mr(tmp_path / "nowindow.dcm", gray, study=STUDY, series=SERIES, instance=1, bits=16)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(path)
    shown = load_image(path)[:, :, 0]
    values = gray.astype(float) * 4 - 24
    low, high = np.percentile(values, (0.5, 99.5))
    assert np.array_equal(shown, np.clip(np.rint((values - low) / (high - low) * 255), 0, 255).astype(np.uint8))


def test_series_grouping_order_and_slices_left_out(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    gray = synthetic_mri(3, False)
    for instance in (3, 1, 2):
        write_mr(folder / f"IM{instance:04d}", gray, study=STUDY, series=SERIES, instance=instance)
    write_mr(folder / "LOC", gray, study=STUDY, series=SERIES + ".2", instance=1, series_number=2,
             image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), description="3-plane loc")
    write_mr(folder / "SAG", gray, study=STUDY, series=SERIES + ".3", instance=1, series_number=3, orientation=SAGITTAL)
    write_mr(folder / "CT", gray, study=STUDY, series=SERIES + ".4", instance=1, series_number=4, modality="CT")
    (folder / "notes.txt").write_text("not dicom")
    sr = folder / "REPORT"
    sr.write_bytes(Path(get_testdata_file("test-SR.dcm")).read_bytes())

    from edge.dicom_series import find_dicom_files
    files = find_dicom_files(folder, lambda name: name.endswith(".txt"))
    assert [Path(f).name for f in files] == ["CT", "IM0001", "IM0002", "IM0003", "LOC", "REPORT", "SAG"]
    result = scan(files, ("MR",))
    assert [(p.split("/")[-1], skipped) for p, _, skipped in result.problems] == [("REPORT", True)]
    series = {r.series_uid: r for r in result.series}
    axial = series[SERIES]
    assert [s.info.instance for s in axial.slices] == ["1", "2", "3"]
    assert all(s.left_out is None for s in axial.slices)
    assert series[SERIES + ".2"].slices[0].left_out == "localizer (ImageType LOCALIZER)"
    assert series[SERIES + ".3"].slices[0].left_out.startswith("not axial (sagittal, 90 degrees from axial")
    assert series[SERIES + ".4"].slices[0].left_out == "modality CT (this model reads MR)"

    calls = iter([0.2, 0.95, 0.4])

    class Result:
        def __init__(self, p):
            self.label, self.probability, self.out_of_domain = ("yes" if p > 0.5 else "no"), p, False

    seen = []
    classify_series(axial, lambda rgb: Result(next(calls)), on_slice=lambda s, r: seen.append(s.info.instance))
    assert seen == ["1", "2", "3"]
    summary = axial.summary(("no", "yes"))
    assert summary["classified"] == 3 and summary["called_yes"] == 1 and summary["yes_instances"] == ["2"]
    assert summary["highest_probability"] == 0.95 and summary["highest_probability_instance"] == "2"
    assert summary["call"] == "yes" and "was not measured" in summary["call_rule"]
    assert summary["study_instance_uid"] == STUDY and summary["series_instance_uid"] == SERIES
    left = classify_series(series[SERIES + ".3"], lambda rgb: 1 / 0).summary(("no", "yes"))
    assert left["classified"] == 0 and left["left_out"] == 1 and left["call"] == "none"


def test_left_out_reason_without_orientation(tmp_path):
    path = write_mr(tmp_path / "a.dcm", synthetic_mri(1, False), study=STUDY, series=SERIES, instance=1)
    ds = pydicom.dcmread(path)
    del ds.ImageOrientationPatient
    ds.save_as(path)
    info = scan([path], ("MR",)).series[0].slices[0].info
    assert left_out_reason(info, ("MR",)) == "orientation unknown (no ImageOrientationPatient)"
