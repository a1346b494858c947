"""The run folder: what a training run writes and conversion reads. Every trainer (python -m train --cv in
train/cv_run.py, python -m train --ensemble in train/ensemble.py, `python -m train.torch_cv assemble`)
writes it through this module, and python -m convert reads it through this module.

    config.json      RunConfig: what the shipped model is (task, labels, preprocessing, threshold),
                     its Recipe and a summary of its cross-validation (CvSummary, with the fold models)
    model.keras      the model trained on all of the data (absent after --cv-only)
    split.json       every image with its group and fold (subset "train"), paths relative to the data root
    cv.json, cv.md   the cross-validation: chosen epoch and threshold, pooled, per-fold and per-group figures
    oof_scores.npz   out-of-fold scores of every epoch (scores, fold_of, y, tta_epoch<e>)
    folds/           the fold models, named in config.json's cv.fold_models (relative to the run)

config.json has two layouts in the shipped records (models/training/<model>/config.json): python -m train's,
and train/torch_cv.py's (with trained_with, without train_seconds); both read and write back equal.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

CONFIG, CV, CV_MARKDOWN, SPLIT, OOF_SCORES, MODEL = "config.json", "cv.json", "cv.md", "split.json", "oof_scores.npz", "model.keras"


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: what cross-validation chooses between and the shipped model repeats.
    Optional fields are left out of the JSON when unset, so recipes of earlier runs stay equal to theirs."""
    preprocessing: dict
    backbone: str  # "small" (compact CNN), "lite0" (ImageNet EfficientNet-Lite0) or an ensemble's description
    learning_rate: float
    horizon: int  # epochs of the cosine schedule
    batch_size: int
    augment: str
    seed: int
    width: int | None = None  # compact CNN: filters of the first layer
    framework: str | None = None  # "pytorch": trained by train/torch_cv.py
    frozen_epochs: int | None = None  # lite0: epochs training the head alone
    group_balance: bool = False  # images weighted by 1/sqrt(images of their group)
    ema: float | None = None  # momentum of the weights' moving average, scored and shipped
    ensemble_of: list[dict] | None = None  # python -m train --ensemble: [{"run", "recipe", "epoch"}]

    _ORDER = ("ensemble_of", "preprocessing", "backbone", "width", "learning_rate", "horizon", "batch_size", "augment",
              "seed", "framework", "frozen_epochs", "group_balance", "ema")

    def to_json(self) -> dict:
        data = {}
        for key in self._ORDER:
            value = getattr(self, key)
            if value is not None and value is not False:
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: dict) -> Recipe:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"recipe: unknown fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class CvSummary:
    """config.json's "cv": the cross-validation that chose the shipped model's epoch and threshold,
    and the fold models python -m convert verifies on their held-out images."""
    folds: int
    cells: int
    patients: int
    epoch: int | str  # "9+9" for an ensemble: each member's epoch
    threshold: float
    pooled: dict
    fold_mean_sd: dict
    groups_majority_right: int
    groups: int
    fold_models: list[str]
    test_time_augmentation: str | None = None

    @classmethod
    def of(cls, cv: dict, fold_models: list[str]) -> CvSummary:
        """The summary of a cv.json (see train/cv_report.py) and the fold models' paths in the run."""
        return cls(**{f.name: cv.get(f.name) for f in fields(cls) if f.name != "fold_models"}, fold_models=list(fold_models))

    def to_json(self) -> dict:
        keys = ("folds", "cells", "patients", "epoch", "threshold", "pooled", "fold_mean_sd", "groups_majority_right",
                "groups", "test_time_augmentation", "fold_models")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class RunConfig:
    """config.json: the model a run ships and how it was made."""
    task: str
    labels: list[str]
    preprocessing: dict
    threshold: float
    threshold_policy: str
    grouped_by: str
    seed: int
    data: list[str]
    epochs_run: int | str
    params: int
    recipe: Recipe
    cv: CvSummary
    trained_with: str | None = None  # set when another framework trained the weights (train/torch_cv.py)
    train_seconds: float | None = None

    def to_json(self) -> dict:
        data = {"task": self.task, "labels": list(self.labels), "preprocessing": self.preprocessing,
                "threshold": self.threshold, "threshold_policy": self.threshold_policy, "grouped_by": self.grouped_by,
                "seed": self.seed, "data": self.data, "epochs_run": self.epochs_run, "params": self.params,
                "recipe": self.recipe.to_json()}
        if self.trained_with is not None:
            data["trained_with"] = self.trained_with
        data["cv"] = self.cv.to_json()
        if self.train_seconds is not None:
            data["train_seconds"] = self.train_seconds
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        if "cv" not in data:
            raise ValueError("not a cross-validated run (python -m train --cv): the single-split trainer that wrote it is gone")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        cv = {"test_time_augmentation": None, **data["cv"]}
        return cls(**{**data, "recipe": Recipe.from_json(data["recipe"]), "cv": CvSummary(**cv)})


def write_config(run: Path, config: RunConfig) -> None:
    _write_json(Path(run) / CONFIG, config.to_json())


def read_config(run: Path) -> RunConfig:
    path = Path(run) / CONFIG
    try:
        return RunConfig.from_json(json.loads(path.read_text()))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def write_cv(run: Path, cv: dict, markdown: str) -> None:
    """cv.json (train/cv_report.py makes it) and cv.md."""
    _write_json(Path(run) / CV, cv)
    (Path(run) / CV_MARKDOWN).write_text(markdown)


def read_cv(run: Path) -> dict:
    return json.loads((Path(run) / CV).read_text())


def read_cv_recipe(run: Path) -> Recipe:
    return Recipe.from_json(read_cv(run)["recipe"])


def write_oof_scores(run: Path, scores: np.ndarray, fold_of: np.ndarray, y: np.ndarray,
                     tta: dict[int, np.ndarray] | None = None) -> None:
    """Out-of-fold scores of every epoch ((epochs, n)), the fold and label of every image, and the
    test-time-augmented scores of some epochs."""
    np.savez(Path(run) / OOF_SCORES, scores=scores, fold_of=fold_of, y=y,
             **{f"tta_epoch{epoch}": values for epoch, values in (tta or {}).items()})


def read_oof_scores(run: Path) -> dict:
    """-> {"scores": (epochs, n), "fold_of", "y", "tta": {epoch: (n,)}}."""
    stored = np.load(Path(run) / OOF_SCORES)
    return {"scores": stored["scores"], "fold_of": stored["fold_of"], "y": stored["y"],
            "tta": {int(k.removeprefix("tta_epoch")): stored[k] for k in stored.files if k.startswith("tta_epoch")}}


def cv_split(task: str, seed: int, grouped_by: str, samples: list[dict], groups, fold_of) -> dict:
    """split.json's content for a cross-validated run: each image (its Sample fields) with its group and
    fold, all of them in the subset "train"."""
    from train.splits import summarize

    rows = [dict(sample, group=str(group), subset="train", fold=int(fold)) for sample, group, fold
            in zip(samples, groups, fold_of)]
    return {"task": task, "seed": seed, "grouped_by": grouped_by, "folds": int(max(fold_of)) + 1,
            "summary": summarize(rows), "samples": rows}


def write_split(run: Path, split: dict, root: str | Path | None = None) -> None:
    """split.json, its image paths relative to the data root (train/splits.py save_split)."""
    from train.splits import save_split

    save_split(split, Path(run) / SPLIT, root)


def write_index_split(run: Path, task: str, grouped_by: str, arrays: str, groups, fold_of) -> None:
    """split.json of a `python -m train.torch_cv` run: its images by their index in the exported arrays."""
    samples = [{"index": i, "group": str(g), "fold": int(f)} for i, (g, f) in enumerate(zip(groups, fold_of))]
    (Path(run) / SPLIT).write_text(json.dumps({"task": task, "grouped_by": grouped_by, "arrays": str(arrays),
                                               "samples": samples}) + "\n")


def read_split(run: Path, root: str | Path | None = None) -> dict:
    """split.json with its image paths resolved against the data root (an index split as it is)."""
    from train.splits import load_split

    path = Path(run) / SPLIT
    split = json.loads(path.read_text())
    if any("path" not in row for row in split["samples"]):
        return split
    return load_split(path, root)


def fold_model_path(fold: int, epoch: int) -> str:
    """Where python -m train --cv keeps fold `fold`'s model of epoch `epoch`, relative to the run."""
    return f"folds/fold{fold}/epoch{epoch:02d}.keras"


@dataclass(frozen=True)
class RunFolder:
    """A run folder as python -m convert reads it: its model, config and split (paths resolved against the data root)."""
    path: Path
    model_path: Path
    config: RunConfig
    split: dict = field(repr=False)

    @classmethod
    def read(cls, run: str | Path, root: str | Path | None = None) -> RunFolder:
        """run: the folder or its model.keras."""
        run = Path(run)
        model_path = run if run.suffix == ".keras" else run / MODEL
        run = model_path.parent
        for needed in (model_path, run / CONFIG, run / SPLIT):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed}: not found (expected a `python -m train` run folder)")
        return cls(run, model_path, read_config(run), read_split(run, root))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
