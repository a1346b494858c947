"""Decode and preprocess a list of samples into arrays, with the edge preprocessing."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edge.images import ImageError, load_image
from edge.preprocess import preprocess
from edge.datasets import Sample
from train.splits import difference_hash


def _prepare(sample: Sample, spec: dict, with_hash: bool):
    try:
        rgb = load_image(sample.path)
    except ImageError as error:
        return error
    return preprocess(rgb, spec), (difference_hash(rgb) if with_hash else None)


def load_arrays(samples: list[Sample], spec: dict, with_hash: bool = False, workers: int = 4):
    """-> (kept samples, x float32 [n, s, s, c], y int [n], hashes or None); unreadable files are
    reported on stderr and left out, so one bad file does not stop a run."""
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda s: _prepare(s, spec, with_hash), samples))
    kept, arrays, hashes = [], [], []
    for sample, result in zip(samples, results):
        if isinstance(result, ImageError):
            print(f"skipped: {result}", file=sys.stderr)
            continue
        kept.append(sample)
        arrays.append(result[0])
        hashes.append(result[1])
    x = np.stack(arrays).astype(np.float32)
    y = np.array([s.label for s in kept], dtype=np.int32)
    return kept, x, y, (np.stack(hashes) if with_hash else None)


def cached_arrays(samples: list[Sample], spec: dict, cache_dir: str | os.PathLike | None, with_hash: bool = False):
    """load_arrays -> (kept, x, y, hashes or None), remembered in one .npz per preprocessing spec and
    file list (path, size, mtime), so a cross-validation decodes every image once, not once per fold."""
    if cache_dir is None:
        return load_arrays(samples, spec, with_hash)
    key = json.dumps([spec, with_hash, [(s.path, s.label, s.patient, *_stat(s.path)) for s in samples]], sort_keys=True)
    path = Path(cache_dir) / f"{spec['name']}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            kept = [samples[i] for i in stored["kept"]]
            return kept, stored["x"], stored["y"], (stored["hashes"] if with_hash else None)
    kept, x, y, hashes = load_arrays(samples, spec, with_hash)
    index = {id(s): i for i, s in enumerate(samples)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # a file of its own for each writer: two runs may fill one cache at once
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".partial.npz")
    extra = {"hashes": hashes} if with_hash else {}
    with os.fdopen(handle, "wb") as out:
        np.savez(out, x=x, y=y, kept=np.array([index[id(s)] for s in kept]), **extra)
    os.replace(partial, path)
    return kept, x, y, hashes


def _stat(path: str) -> tuple[int, int]:
    try:
        status = os.stat(path)
    except OSError:
        return (-1, -1)
    return (status.st_size, status.st_mtime_ns)
