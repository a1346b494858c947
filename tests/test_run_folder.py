"""train/run_folder.py owns the run folder: the shipped models' training records (both layouts, python -m train's
and train/torch_cv.py's) read into the typed config and write back unchanged, and nothing else in the
project writes a config.json."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from train.run_folder import (CvSummary, Recipe, RunConfig, RunFolder, cv_split, read_config, read_oof_scores,
                              read_split, write_config, write_index_split, write_oof_scores, write_split)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "models" / "training").glob("*/config.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_training_records_read_typed_and_write_back_unchanged(path, tmp_path):
    stored = json.loads(path.read_text())
    config = read_config(path.parent)
    assert isinstance(config.recipe, Recipe) and isinstance(config.cv, CvSummary)
    assert config.recipe.to_json() == stored["recipe"]
    assert list(config.recipe.to_json()) == list(stored["recipe"])  # the recipe's keys in their order
    assert list(config.cv.to_json()) == list(stored["cv"])
    write_config(tmp_path, config)
    assert json.loads((tmp_path / "config.json").read_text()) == stored


def test_both_layouts_are_among_the_shipped_records():
    configs = {p.parent.name: read_config(p.parent) for p in SHIPPED}
    assert configs["brain"].trained_with and configs["brain"].recipe.framework == "pytorch"
    assert configs["brain"].train_seconds is None and configs["brain"].recipe.frozen_epochs == 2
    assert configs["leukemia"].trained_with is None and configs["leukemia"].train_seconds is not None
    assert configs["leukemia"].recipe.backbone == "small" and configs["leukemia"].recipe.width == 16


def test_recipe_leaves_unset_options_out_and_refuses_unknown_ones():
    recipe = Recipe(preprocessing={"name": "brain_mri", "size": 32}, backbone="small", learning_rate=2e-3, horizon=4,
                    batch_size=8, augment="light", seed=0, width=4)
    assert set(recipe.to_json()) == {"preprocessing", "backbone", "width", "learning_rate", "horizon", "batch_size",
                                     "augment", "seed"}
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_json({**recipe.to_json(), "ema": 0.99, "group_balance": True}).to_json()["ema"] == 0.99
    with pytest.raises(ValueError, match="unknown fields"):
        Recipe.from_json({**recipe.to_json(), "momentum": 0.9})


def test_a_config_without_cross_validation_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": "leukemia", "labels": ["hem", "all"], "threshold": 0.5}))
    with pytest.raises(ValueError, match="not a cross-validated run"):
        read_config(tmp_path)


def test_run_folder_reads_a_written_run(tmp_path):
    samples = [{"path": str(tmp_path / f"img{i}.png"), "label": i % 2, "patient": f"p{i // 2}"} for i in range(8)]
    groups = [s["patient"] for s in samples]
    fold_of = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    split = cv_split("leukemia", 0, "patients", samples, groups, fold_of)
    assert split["folds"] == 2 and split["summary"]["train"]["images"] == 8
    assert [list(r) for r in split["samples"]][0] == ["path", "label", "patient", "group", "subset", "fold"]
    write_split(tmp_path, split, tmp_path)
    assert [r["path"] for r in read_split(tmp_path, tmp_path)["samples"]] == [s["path"] for s in samples]
    recipe = Recipe(preprocessing={"name": "cnmc_cell", "size": 32, "crop": "tight"}, backbone="small",
                    learning_rate=2e-3, horizon=2, batch_size=8, augment="basic", seed=0, width=4)
    cv = {"folds": 2, "cells": 8, "patients": 4, "epoch": 2, "threshold": 0.5, "pooled": {}, "fold_mean_sd": {},
          "groups_majority_right": 3, "groups": 4, "test_time_augmentation": None}
    write_config(tmp_path, RunConfig(
        task="leukemia", labels=["hem", "all"], preprocessing=recipe.preprocessing, threshold=0.5,
        threshold_policy="policy", grouped_by="patients", seed=0, data=["x"], epochs_run=2, params=10, recipe=recipe,
        cv=CvSummary.of(cv, ["folds/fold0/epoch02.keras", "folds/fold1/epoch02.keras"])))
    with pytest.raises(FileNotFoundError, match="expected a `python -m train` run folder"):
        RunFolder.read(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"")
    run = RunFolder.read(tmp_path / "model.keras", tmp_path)
    assert run.path == tmp_path and run.config.recipe == recipe and run.config.cv.fold_models[1].startswith("folds/fold1")
    write_oof_scores(tmp_path, np.zeros((2, 8)), fold_of, np.arange(8) % 2, {2: np.ones(8)})
    stored = read_oof_scores(tmp_path)
    assert stored["scores"].shape == (2, 8) and list(stored["tta"]) == [2]
    write_index_split(tmp_path, "leukemia", "patients", "arrays.npz", groups, fold_of)
    assert read_split(tmp_path)["samples"][3] == {"index": 3, "group": "p1", "fold": 1}


def test_one_writer_of_config_json():
    """git grep: among training and conversion, only the run folder's owner names a run's config.json
    (edge/'s config.json is the device's settings, another file)."""
    try:
        done = subprocess.run(["git", "grep", "--untracked", "-l", "config.json", "--", "train", "convert"],
                              cwd=ROOT, capture_output=True, text=True)
    except OSError:
        pytest.skip("no git")
    if done.returncode > 1:
        pytest.skip("not a git checkout")
    assert done.stdout.split() == ["train/run_folder.py"]
