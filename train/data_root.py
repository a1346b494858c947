"""Image paths in saved artefacts (split files, verification files) are relative to a data root, so
they mean the same on any machine and from any working directory:
``cnmc/all/UID_11_10_1_all.webp``, ``brain_mri/br35h/yes/y0.jpg``.

The root is, in order: ``--data DIR`` of the command reading the artefact, ``$EDGE_DATA``,
``$EDGE_SHARED_DATA`` (its older name), else ``shared/data`` beside the checkout. An image outside
the root is saved with its absolute path. Files written before this convention hold paths relative to
the working directory of the run (``../shared/data/cnmc/...``); those start with ``..`` and still
resolve from the working directory.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "EDGE_DATA"
OLD_ENV = "EDGE_SHARED_DATA"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
PATHS_NOTE = "relative to the data root (--data DIR or $EDGE_DATA); absolute when outside it"


def data_root(given: str | os.PathLike | None = None) -> Path:
    """The data root: `given` (a --data option), else $EDGE_DATA, else $EDGE_SHARED_DATA, else shared/data
    beside the checkout."""
    for value in (given, os.environ.get(ENV), os.environ.get(OLD_ENV)):
        if value:
            return Path(value)
    return DEFAULT_ROOT


def relative_to_root(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """`path` as saved in an artefact: relative to the root (forward slashes), or absolute when outside it."""
    root = data_root(root)
    for normalise in (os.path.abspath, os.path.realpath):
        full, base = Path(normalise(path)), Path(normalise(root))
        if full.is_relative_to(base):
            return full.relative_to(base).as_posix()
    return Path(os.path.abspath(path)).as_posix()


def resolve(path: str, root: str | os.PathLike | None = None) -> str:
    """A saved path as a path to open: root-relative paths joined to the root; absolute paths, and the
    working-directory-relative ``../`` paths of older files, as they are."""
    if os.path.isabs(path) or Path(path).parts[:1] == ("..",):
        return path
    return str(data_root(root) / path)
