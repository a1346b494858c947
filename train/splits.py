"""The groups that keep splits leak-free, and the split file (split.json) saved with each run so every
later step reuses it: every image with its group and fold (train/run_folder.py cv_split).

C-NMC is grouped by patient. Brain MRI is grouped by near-duplicate group: images whose 16x16
difference hashes are within a Hamming distance of 24 are the same scan (re-encoded,
re-contrasted, or shared between Br35H and the Kaggle set) and always land on the same side.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from train.data_root import PATHS_NOTE, relative_to_root, resolve

HASH_SIZE = 16
DUPLICATE_DISTANCE = 24
SUBSETS = ("train", "val", "test")  # a cross-validated run has every image in "train"


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
