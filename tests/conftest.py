"""Small generated fixtures in the public dataset layouts, and the marker for real-data tests."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data_root import data_root

SHARED_DATA = data_root()  # $EDGE_DATA, else $EDGE_SHARED_DATA (its older name), else shared/data beside the checkout


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; the calling test is skipped with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set EDGE_DATA or place shared/ beside the checkout)")
    return path


def synthetic_mri(seed: int, tumour: bool, size: int = 180, offset=(0, 0)) -> np.ndarray:
    """A grey 'head' (bright ellipse on black, off centre) with a brighter blob when tumour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + offset[0], size / 2 + offset[1]
    head = ((yy - cy) / (size * 0.35)) ** 2 + ((xx - cx) / (size * 0.3)) ** 2 < 1
    image = np.where(head, 110 + rng.normal(0, 12, (size, size)), 0)
    if tumour:
        ty, tx = cy + rng.integers(-20, 20), cx + rng.integers(-15, 15)
        image = np.where((yy - ty) ** 2 + (xx - tx) ** 2 < 15**2, 230, image)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_cell(seed: int, blast: bool, size: int = 120) -> np.ndarray:
    """A stained round cell on black: blasts larger and paler, like C-NMC's segmented cells."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    radius = (40 if blast else 26) + rng.integers(-3, 4)
    cy, cx = size / 2 + rng.integers(-8, 8), size / 2 + rng.integers(-8, 8)
    cell = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    colour = np.array([150, 110, 190] if blast else [110, 60, 160], dtype=float)
    image = np.where(cell[:, :, None], colour + rng.normal(0, 10, (size, size, 3)), 0)
    return np.clip(image, 0, 255).astype(np.uint8)


def save_brain_layout(root: Path, per_class: int = 6) -> Path:
    """yes/ and no/ with every format and mode of the real Kaggle set, names with spaces."""
    formats = [("JPEG", "L", ".jpg"), ("PNG", "RGB", ".png"), ("PNG", "RGBA", ".png"),
               ("PNG", "P", ".png"), ("JPEG", "RGB", ".jpeg"), ("PNG", "L", ".png")]
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            kind, mode, ext = formats[i % len(formats)]
            gray = synthetic_mri(i + (100 if label == "yes" else 0), label == "yes", offset=(i * 3 - 8, 5 - i * 2))
            image = Image.fromarray(gray).convert(mode if mode != "P" else "RGB")
            if mode == "P":
                image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            image.save(root / label / f"{i} {label}{ext}", kind)
    return root


def cnmc_name(patient: str, image: int, cell: int, label: str) -> str:
    return f"UID_{patient}_{image}_{cell}_{label}"


# 7 ALL patients and 5 normal subjects, 4 cells each: the smallest C-NMC that makes patient folds.
TINY_CNMC_PATIENTS = {**{str(p): 4 for p in range(1, 8)}, **{f"H{p}": 4 for p in range(1, 6)}}


def save_cnmc_flat(root: Path, patients: dict[str, int], ext: str = ".bmp") -> Path:
    """{all,hem}/UID_... files; patients maps id (H.. for healthy) to cell count."""
    for patient, count in patients.items():
        label = "hem" if patient.startswith("H") else "all"
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rgb = synthetic_cell(hash((patient, i)) % 10_000, label == "all")
            Image.fromarray(rgb).save(root / label / (cnmc_name(patient, i, 1, label) + ext))
    return root


def save_cnmc_official(root: Path) -> Path:
    """C-NMC_Leukemia/training_data/fold_*/{all,hem} and the prelim test set with its csv."""
    base = root / "C-NMC_Leukemia"
    save_cnmc_flat(base / "training_data" / "fold_0", {"1": 3, "H1": 3})
    save_cnmc_flat(base / "training_data" / "fold_1", {"2": 2, "H2": 2})
    prelim = base / "validation_data" / "C-NMC_test_prelim_phase_data"
    prelim.mkdir(parents=True)
    rows = [("UID_57_29_1_all.bmp", "1.bmp", 1), ("UID_H49_35_1_hem.bmp", "2.bmp", 0),
            ("UID_57_22_2_all.bmp", "3.bmp", 1)]
    for original, new, label in rows:
        Image.fromarray(synthetic_cell(len(new) + label, label == 1)).save(prelim / new)
    with open(base / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Patient_ID", "new_names", "labels"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_leukemia_run(tmp_path_factory) -> Path:
    """One 3-fold cross-validated run of the compact CNN on TINY_CNMC_PATIENTS (32 px, 2 epochs), trained
    once for every test that reads or converts a run, in graph mode as real runs train."""
    from train.cli import main

    root = tmp_path_factory.mktemp("tiny_leukemia")
    data = save_cnmc_flat(root / "cnmc", TINY_CNMC_PATIENTS, ext=".png")
    assert main(["leukemia", "--cv", "3", "--data", str(data), "--out", str(root / "run"), "--epochs", "2",
                 "--size", "32", "--width", "4", "--batch-size", "8", "--cell-crop", "fixed",
                 "--cache", str(root / "cache")]) == 0
    return root / "run"


@pytest.fixture(scope="session")
def tiny_leukemia_models(tiny_leukemia_run, tmp_path_factory) -> Path:
    """tiny_leukemia_run converted once, every precision, with its fold models verified."""
    from convert.cli import main

    out = tmp_path_factory.mktemp("tiny_leukemia_models")
    run = tiny_leukemia_run
    assert main([str(run), "--out", str(out), "--calibration", "10", "--float16", "--dynamic", "--tolerance", "100",
                 "--data", str(run.parent), "--cache", str(run.parent / "cache")]) == 0
    return out


@pytest.fixture
def keras_eager():
    """Keras' train and predict steps run eagerly for the test: on the tiny test runs, tracing them into
    graphs costs more than running them (a 3-fold run: 37 s traced, 18 s eager, on this 2-core machine).
    The shared tiny_leukemia_run, and every real run, train in graph mode."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


# Tests that take seconds to minutes on a 2-core machine (measured with `pytest --durations=60`): they
# train networks, convert models, build wheels and bundles, drive the browser or read the full data.
# `make test-fast` (`pytest -m "not slow"`) leaves them out; `make test` and CI run everything.
SLOW_MODULES = {"test_train_e2e.py", "test_torch_cv.py", "test_convert.py", "test_deploy.py", "test_wheel.py",
                "test_realdata.py", "test_pretrained.py", "test_dicom_node.py", "test_artefact_paths.py"}
SLOW_TESTS = {
    "test_crossval.py": ("test_tiny_cv_run_end_to_end", "test_cv_run_converts", "test_brain_cv_keeps",
                         "test_cv_scores_are_reused", "test_ensemble_of_cv_runs", "test_brain_cv_with_mirror_tta",
                         "test_lite0_cv", "test_compare_cv_tables", "test_ema_model"),
    "test_calibration.py": ("test_an_int8_model_outputs_a_logit",),
    "test_web.py": ("test_the_page_in_a_headless_browser", "test_the_page_says_when_the_source_ended"),
    "test_bench_web.py": ("test_capture_and_review_by_keyboard_in_a_browser", "test_three_fields_of_a_video"),
    "test_bench.py": ("test_exported_sessions_train_a_tiny_cross_validation",),
    "test_web_hardening.py": ("test_a_flood_is_refused",),
    "test_hostile_inputs.py": ("test_a_folder_of_hostile_images", "test_edge_live_replays_a_hostile_folder"),
    "test_pipeline_exact.py": ("test_real_",),
    "test_domain_and_summary.py": ("test_features_output_holds",),
}


def pytest_itemcollected(item):
    """Marked as each test is collected, before pytest-xdist reads the marks."""
    module = item.path.name
    if module in SLOW_MODULES or item.name.startswith(SLOW_TESTS.get(module, ())):
        item.add_marker(pytest.mark.slow)
    if "tiny_leukemia_run" in item.fixturenames:  # with pytest -n N --dist loadgroup: one worker trains it once
        item.add_marker(pytest.mark.xdist_group("tiny_leukemia_run"))
