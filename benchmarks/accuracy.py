"""Labelled images for a model's task and the accuracy figures of its scores.

The folder may be in either public layout (edge/datasets.py, no TensorFlow): brain ``yes/`` and
``no/`` (or a folder of such folders, e.g. ``brain_mri/``), C-NMC ``all/`` and ``hem/`` flat or the
official ``training_data``/``validation_data`` layout. ``split`` keeps only the images of one subset
of the model's own split file (``<task>_split.json`` beside it), matched on the last three path
parts (dataset folder, label folder, file name), so ``--split test`` reproduces the held-out test
figures of the model's verification. Metrics come from scikit-learn via edge/metrics.py,
imported only when needed (a Pi without the benchmark extra can still time models).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.datasets import Sample, find_brain_images, find_cnmc_images


def _brain_roots(root: Path) -> list[Path]:
    if (root / "yes").is_dir() or (root / "no").is_dir():
        return [root]
    roots = [folder for folder in sorted(root.iterdir()) if (folder / "yes").is_dir() or (folder / "no").is_dir()]
    if not roots:
        raise FileNotFoundError(f"{root}: expected yes/ and no/ sub-folders (Kaggle layout), or folders of them")
    return roots


def find_labelled_images(root: str, task: str) -> list[Sample]:
    """Samples (path, label index into the model's labels) under root; raises FileNotFoundError."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    if task == "brain":
        return find_brain_images(_brain_roots(root))
    if task == "leukemia":
        return find_cnmc_images(root)
    raise ValueError(f"no labelled-folder reader for task {task!r}")


def _key(path: str) -> tuple[str, ...]:
    return Path(path).parts[-3:]


def keep_split(samples: list[Sample], split_file: Path, subset: str) -> list[Sample]:
    """The samples listed under `subset` in a split.json; raises ValueError when none match."""
    try:
        listed = json.loads(split_file.read_text())["samples"]
    except FileNotFoundError:
        raise ValueError(f"{split_file}: split file not found (needed by --split)") from None
    wanted = {_key(entry["path"]) for entry in listed if entry["subset"] == subset}
    kept = [sample for sample in samples if _key(sample.path) in wanted]
    if not kept:
        raise ValueError(f"no image of the {subset!r} split of {split_file.name} found in the data folder")
    return kept


def every_nth(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most `limit` samples spread evenly over the (label-sorted) list, so both labels stay."""
    if not limit or limit >= len(samples):
        return samples
    picks = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in picks]


def evaluate(labels, scores, threshold: float, names: tuple[str, str]) -> dict:
    """accuracy, weighted F1, sensitivity, specificity, ROC AUC, per-class figures, confusion matrix."""
    from edge.metrics import evaluate as sklearn_evaluate

    return sklearn_evaluate(labels, scores, threshold, names)


def calibration(labels, probabilities) -> dict:
    """Expected calibration error (10 bins), Brier score and the reliability diagram's bins of the
    model's (calibrated) probabilities against the labels."""
    from edge.metrics import calibration_scores

    return calibration_scores(probabilities, labels)


def agreement(scores_a, threshold_a: float, scores_b, threshold_b: float) -> float:
    """Share of images on which two models give the same label."""
    return float(np.mean((np.asarray(scores_a) >= threshold_a) == (np.asarray(scores_b) >= threshold_b)))


def risk_coverage(labels, scores, threshold: float, out_of_domain) -> dict:
    """Selective prediction: images answered in order of confidence (distance of the score from the
    threshold; an image flagged out of domain comes after every other) -> accuracy against the
    share answered, and the accuracy at 90% and 80% coverage."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    right = (scores >= threshold) == (labels == 1)
    confidence = np.abs(scores - threshold) - 2.0 * np.asarray(out_of_domain, dtype=float)
    ordered = right[np.argsort(-confidence, kind="stable")]
    answered = np.arange(1, len(ordered) + 1)
    accuracy = np.cumsum(ordered) / answered
    coverage = answered / len(ordered)

    def at(share: float) -> float:
        return float(accuracy[max(0, int(np.ceil(share * len(ordered))) - 1)])

    return {"coverage": coverage[::max(1, len(coverage) // 100)].round(4).tolist(),
            "accuracy": accuracy[::max(1, len(accuracy) // 100)].round(4).tolist(),
            "accuracy_at_100": at(1.0), "accuracy_at_90": at(0.9), "accuracy_at_80": at(0.8),
            "flagged_out_of_domain": int(np.sum(out_of_domain))}
