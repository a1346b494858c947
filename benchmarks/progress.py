"""A progress bar on stderr for long benchmark loops: tqdm when it is installed, else a plain
counter; both stay silent when stderr is not a terminal (logs, pipes, tests)."""
from __future__ import annotations

import sys


def progress(iterable, total: int, description: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain(iterable, total, description)
    return tqdm(iterable, total=total, desc=description, file=sys.stderr, disable=None, leave=False)


def _plain(iterable, total: int, description: str):
    shown = sys.stderr.isatty()
    step = max(1, total // 100)
    for done, item in enumerate(iterable, 1):
        yield item
        if shown and (done % step == 0 or done == total):
            print(f"\r{description}: {done}/{total}", end="", file=sys.stderr, flush=True)
    if shown:
        print("\r" + " " * (len(description) + 24) + "\r", end="", file=sys.stderr, flush=True)
