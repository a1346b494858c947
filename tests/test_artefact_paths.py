"""Artefacts that travel: split and verification files name images relative to a data root resolved at
run time (--data, $EDGE_DATA, $EDGE_SHARED_DATA, shared/data beside the checkout); check_models fails
in one line when the images are not there; python -m train and python -m convert without the train extra say so."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_CNMC_PATIENTS, save_cnmc_flat, shared_data
from train.data_root import DEFAULT_ROOT, data_root, relative_to_root, resolve

ROOT = Path(__file__).resolve().parents[1]
# Training and conversion run from the checkout (the install carries edge/ only): from another folder,
# the checkout goes on the path.
CHECKOUT_ON_PATH = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGE_DATA", raising=False)
    monkeypatch.delenv("EDGE_SHARED_DATA", raising=False)
    assert data_root() == DEFAULT_ROOT == ROOT.parent / "shared" / "data"
    monkeypatch.setenv("EDGE_SHARED_DATA", str(tmp_path / "old"))
    assert data_root() == tmp_path / "old"
    monkeypatch.setenv("EDGE_DATA", str(tmp_path / "new"))
    assert data_root() == tmp_path / "new"
    assert data_root(tmp_path / "given") == tmp_path / "given"


def test_paths_relative_to_the_root_and_back(tmp_path):
    root = tmp_path / "data"
    image = root / "cnmc" / "all" / "UID_1_1_1_all.bmp"
    assert relative_to_root(image, root) == "cnmc/all/UID_1_1_1_all.bmp"
    assert resolve("cnmc/all/UID_1_1_1_all.bmp", tmp_path / "elsewhere") == str(tmp_path / "elsewhere" / "cnmc" / "all" / "UID_1_1_1_all.bmp")
    outside = tmp_path / "other" / "x.png"
    assert relative_to_root(outside, root) == outside.as_posix()  # outside the root: absolute
    assert resolve(str(outside), root) == str(outside)
    # files from before root-relative paths: relative to the run's working directory, as they were
    assert resolve("../shared/data/cnmc/all/x.webp", root) == "../shared/data/cnmc/all/x.webp"


def test_saved_split_names_images_relative_to_the_root_and_loads_against_another(tmp_path, monkeypatch):
    from dataclasses import asdict

    from train.crossval import group_folds
    from edge.datasets import find_cnmc_images
    from train.run_folder import cv_split
    from train.splits import load_split, save_split

    root = tmp_path / "data"
    save_cnmc_flat(root / "cnmc", TINY_CNMC_PATIENTS, ext=".png")
    samples = find_cnmc_images(root / "cnmc")
    groups = [s.patient for s in samples]
    split = cv_split("leukemia", 0, "patients", [asdict(s) for s in samples], groups,
                     group_folds([s.label for s in samples], groups, 3, seed=0))
    save_split(split, tmp_path / "split.json", root)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert {r["path"].split("/")[0] for r in saved["samples"]} == {"cnmc"}
    assert "data root" in saved["image_paths"]

    moved = tmp_path / "moved"
    shutil.move(root, moved)
    loaded = load_split(tmp_path / "split.json", moved)
    assert [r["path"] for r in loaded["samples"]] == [str(moved / r["path"]) for r in saved["samples"]]
    assert all(Path(r["path"]).is_file() for r in loaded["samples"])
    monkeypatch.setenv("EDGE_DATA", str(moved))
    assert load_split(tmp_path / "split.json") == loaded
    strip = lambda rows: [{k: v for k, v in r.items() if k != "path"} for r in rows]  # noqa: E731
    assert strip(loaded["samples"]) == strip(split["samples"])


def _models_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    copy.mkdir()
    for path in (ROOT / "models").glob("*"):
        if path.suffix in (".tflite", ".json"):
            shutil.copy(path, copy)
    return copy


@pytest.mark.parametrize("how", ["--data", "EDGE_DATA"])
def test_check_models_fails_in_one_line_when_the_images_are_missing(how, tmp_path, monkeypatch, capsys):
    from convert.check_models import main

    models, empty = _models_copy(tmp_path), tmp_path / "empty"
    empty.mkdir()
    if how == "--data":
        code = main([str(models), "--data", str(empty)])
    else:
        monkeypatch.setenv("EDGE_DATA", str(empty))
        code = main([str(models)])
    assert code == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert str(empty) in err and "not found" in err and "--data DIR" in err and "EDGE_DATA" in err


@pytest.mark.realdata
def test_check_models_passes_from_another_working_directory(tmp_path):
    data = shared_data("cnmc")
    _models_copy(tmp_path)
    done = subprocess.run([sys.executable, "-m", "convert.check_models", "models", "--data", str(data.parent)],
                          cwd=tmp_path, env=CHECKOUT_ON_PATH, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("OK, the same scores as at conversion") == 4, done.stdout


BLOCK_SCIPY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "scipy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from MODULE import main
sys.exit(main(ARGV))
"""


@pytest.mark.parametrize("prog, module, argv", [
    ("python -m train", "train.cli", ["leukemia", "--data", "x", "--out", "y"]),
    ("python -m convert", "convert.cli", ["runs/x"]),
])
def test_train_commands_without_the_train_extra_say_so_in_one_line(prog, module, argv, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCK_SCIPY.replace("MODULE", module).replace("ARGV", repr(argv))],
                          cwd=tmp_path, env=CHECKOUT_ON_PATH, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == f"{prog}: needs the training extra (no module 'scipy'): pip install 'edge-medical[train]'"
