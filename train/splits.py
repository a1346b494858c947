"""Leak-free train/validation/test splits, saved with each run so every later step reuses them.

C-NMC is split by patient. Brain MRI is split by near-duplicate group: images whose 16x16
difference hashes are within a Hamming distance of 24 are the same scan (re-encoded,
re-contrasted, or shared between Br35H and the Kaggle set) and always land on the same side.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from train.data_root import PATHS_NOTE, relative_to_root, resolve
from train.datasets import Sample

HASH_SIZE = 16
DUPLICATE_DISTANCE = 24
SUBSETS = ("train", "val", "test")


def difference_hash(rgb: np.ndarray, size: int = HASH_SIZE) -> np.ndarray:
    """size*size-bit dHash: sign of the horizontal gradient of a (size+1) x size thumbnail."""
    gray = Image.fromarray(rgb).convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.int16)
    return np.packbits(pixels[:, 1:] > pixels[:, :-1])


def near_duplicate_groups(hashes: np.ndarray, max_distance: int = DUPLICATE_DISTANCE) -> np.ndarray:
    """Connected components of the graph linking hashes within max_distance bits."""
    count = len(hashes)
    rows, cols = [], []
    for i in range(count - 1):
        distances = np.bitwise_count(np.bitwise_xor(hashes[i + 1 :], hashes[i])).sum(axis=1)
        near = np.flatnonzero(distances <= max_distance) + i + 1
        rows += [i] * len(near)
        cols += near.tolist()
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    return component


def brain_groups(hashes: np.ndarray) -> list[str]:
    return [f"dup{c}" for c in near_duplicate_groups(hashes)]


MIN_GROUPS_PER_CLASS = 3


def _best_fold(labels: np.ndarray, groups: np.ndarray, seed: int, folds: int, tries: int) -> np.ndarray:
    """Indices of the fold, among `tries` seeded StratifiedGroupKFold shuffles, whose share of every
    class is closest to 1/folds, with at least MIN_GROUPS_PER_CLASS groups of each class where
    possible. A few patients hold most C-NMC cells, so one shuffle can put a 757-cell patient and
    almost no normal cells in test, or make a validation set of two patients; the search avoids both."""
    totals = np.bincount(labels, minlength=2)
    best, best_cost = None, np.inf
    for attempt in range(tries):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed * 1000 + attempt)
        for _, fold in splitter.split(np.zeros(len(labels)), labels, groups):
            cost = np.abs(np.bincount(labels[fold], minlength=2) / totals - 1 / folds).sum()
            for label in (0, 1):
                cost += 0.02 * max(0, MIN_GROUPS_PER_CLASS - len(set(groups[fold][labels[fold] == label])))
            if cost < best_cost:
                best, best_cost = fold, cost
    return best


def split_groups(labels: list[int], groups: list[str], seed: int, folds: int = 5, tries: int = 20) -> list[str]:
    """Stratified by label, grouped: about 1/folds of the images to test, then 1/(folds-1) of the rest
    to val, so val and test are about the same size."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    subset = np.full(len(labels), "train", dtype=object)
    test = _best_fold(labels, groups, seed, folds, tries)
    subset[test] = "test"
    rest = np.flatnonzero(subset == "train")
    subset[rest[_best_fold(labels[rest], groups[rest], seed, folds - 1, tries)]] = "val"
    return subset.tolist()


def make_split(task: str, samples: list[Sample], seed: int, hashes: np.ndarray | None = None) -> dict:
    """Brain samples need their difference hashes; C-NMC samples carry their patient."""
    if task == "brain":
        groups = brain_groups(hashes)
        method = f"near-duplicate groups (16x16 dHash, Hamming <= {DUPLICATE_DISTANCE})"
    else:
        groups = [s.patient for s in samples]
        method = "patients"
    labels = [s.label for s in samples]
    subsets = split_groups(labels, groups, seed)
    rows = [dict(asdict(s), group=g, subset=t) for s, g, t in zip(samples, groups, subsets)]
    return {"task": task, "seed": seed, "grouped_by": method, "summary": summarize(rows), "samples": rows}


def summarize(rows: list[dict]) -> dict:
    summary = {}
    for name in SUBSETS:
        part = [r for r in rows if r["subset"] == name]
        summary[name] = {
            "images": len(part),
            "groups": len({r["group"] for r in part}),
            "per_label": dict(sorted(Counter(r["label"] for r in part).items())),
        }
    return summary


def subset_samples(split: dict, name: str) -> list[Sample]:
    return [Sample(r["path"], r["label"], r.get("patient")) for r in split["samples"] if r["subset"] == name]


def save_split(split: dict, path: str | Path, root: str | Path | None = None) -> None:
    """Writes the split with its image paths relative to the data root (see train/data_root.py)."""
    rows = [{**r, "path": relative_to_root(r["path"], root)} for r in split["samples"]]
    saved = {**{k: v for k, v in split.items() if k != "samples"}, "image_paths": PATHS_NOTE, "samples": rows}
    Path(path).write_text(json.dumps(saved, indent=1))


def load_split(path: str | Path, root: str | Path | None = None) -> dict:
    """The split with its image paths resolved against the data root."""
    split = json.loads(Path(path).read_text())
    split["samples"] = [{**r, "path": resolve(r["path"], root)} for r in split["samples"]]
    return split
