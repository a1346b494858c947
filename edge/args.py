"""Command-line argument types and output checks shared by edge-classify, edge-live and benchmark:
a bad value is refused by argparse in one line (exit 2), before any work."""
from __future__ import annotations

import argparse
import math
import os

MAX_THREADS = 64


def thread_count(text: str) -> int:
    """1..MAX_THREADS interpreter threads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_THREADS}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def frame_rate(text: str) -> float:
    """A finite number >= 0 frames per second; 0 replays as fast as possible."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, 0 or more")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _cannot_create_in(folder: str) -> str | None:
    """Why new files cannot be created in an existing folder (os.access ignores read-only mounts)."""
    if not os.path.isdir(folder):
        return f"{folder} is not a directory"
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return f"{folder} is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create files in {folder}"
    return None


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def unwritable_file(path: str) -> str | None:
    """Why a file cannot be written at path (None when it can), checked without writing it."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
        return None if os.access(path, os.W_OK) else "permission denied"
    return _cannot_create_in(_nearest_existing(os.path.dirname(path)))


def unwritable_folder(path: str) -> str | None:
    """Why files cannot be created in the folder path, made if needed (None when they can)."""
    return _cannot_create_in(_nearest_existing(os.path.abspath(path)))
