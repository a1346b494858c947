"""python -m train and python -m convert need the `train` extra; on a device installed without it they say so in one
line instead of failing on an import deep inside."""
from __future__ import annotations

import importlib.util

TRAIN_MODULES = ("tensorflow", "sklearn", "scipy", "skimage", "matplotlib")


def _absent(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent package missing, or a module loaded without a spec
        return True


def missing_train_extra(prog: str, modules: tuple[str, ...] = TRAIN_MODULES) -> str | None:
    """None when every module is importable, else the one-line message naming the first missing one."""
    missing = next((name for name in modules if _absent(name)), None)
    if missing is None:
        return None
    return f"{prog}: needs the training extra (no module {missing!r}): pip install 'edge-medical[train]'"
