"""Decode and preprocess a list of samples into arrays, with the edge preprocessing."""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge.images import ImageError, load_image
from edge.preprocess import preprocess
from train.datasets import Sample
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
