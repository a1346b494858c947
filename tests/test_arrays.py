"""train.arrays: the decoded-array cache stays whole when two runs fill it at the same moment."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import save_brain_layout
from train.arrays import cached_arrays, load_arrays
from edge.datasets import find_brain_images


def test_two_writers_filling_one_cache_both_succeed(tmp_path, monkeypatch):
    both_written = threading.Barrier(2, timeout=30)
    real_savez = np.savez

    def savez_then_wait(*args, **kwargs):  # neither writer moves its file into place before both wrote
        real_savez(*args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(np, "savez", savez_then_wait)
    samples = find_brain_images([str(save_brain_layout(tmp_path / "mri", per_class=4))])
    spec = {"name": "brain_mri", "size": 32}
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: cached_arrays(samples, spec, cache), range(2)))
    _, expected_x, expected_y, _ = load_arrays(samples, spec)
    for _, x, y, _ in results:
        assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
    assert [p.name for p in cache.iterdir() if "partial" in p.name] == []
    assert len(list(cache.glob("*.npz"))) == 1
    _, cached_x, _, _ = cached_arrays(samples, spec, cache)  # read back from the file
    assert np.array_equal(cached_x, expected_x)
