"""Find a model by path or by shipped name, and the device's default model.

Shipped names: ``brain``, ``leukemia`` (their int8 models), ``brain_float32``, ``leukemia_int8``...
They are looked up in ``$EDGE_MODELS_DIR`` if set, then in the ``edge.models`` package (the
checkout's models/, which the wheel ships as edge.models, so a plain ``pip install`` of the wheel
finds them; a checkout that is only on the path reads its models/). The default model, when none
is named, is ``$EDGE_MODEL``, else ``default_model`` in the config file (``$EDGE_CONFIG``, else
``~/.config/edge-medical/config.json``, else ``/etc/edge-medical/config.json``), else
``leukemia_int8``.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from edge.metadata import ModelError

FALLBACK_DEFAULT = "leukemia_int8"
CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"
CONFIG_FILES = ("~/.config/edge-medical/config.json", "/etc/edge-medical/config.json")


def model_folders() -> list[Path]:
    folders = [Path(os.environ["EDGE_MODELS_DIR"])] if os.environ.get("EDGE_MODELS_DIR") else []
    try:
        folders.append(Path(str(resources.files("edge.models"))))
    except ModuleNotFoundError:  # a checkout on the path, not installed: its models/ beside edge/
        folders.append(CHECKOUT_MODELS)
    return folders


def shipped_names() -> list[str]:
    return sorted({p.stem for folder in model_folders() if folder.is_dir() for p in folder.glob("*.tflite")})


def default_model() -> str:
    if os.environ.get("EDGE_MODEL"):
        return os.environ["EDGE_MODEL"]
    if os.environ.get("EDGE_CONFIG"):
        path = Path(os.environ["EDGE_CONFIG"]).expanduser()
        if not path.is_file():
            raise ModelError(f"EDGE_CONFIG={path}: no such file")
        return _configured_model(path)
    for candidate in CONFIG_FILES:
        path = Path(candidate).expanduser()
        if path.is_file():
            return _configured_model(path)
    return FALLBACK_DEFAULT


def _configured_model(path: Path) -> str:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelError(f"{path}: unreadable config ({' '.join(str(error).split())[:100]})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: the config must be a JSON object, not {type(config).__name__}")
    model = config.get("default_model")
    if not isinstance(model, str) or not model.strip():
        raise ModelError(f"{path}: default_model must be a model name or path")
    return model


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """A .tflite path from a path, a shipped name, or the default."""
    model = os.fspath(model) if model is not None else default_model()
    if model.endswith(".tflite") or os.sep in model:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{model}: model file not found")
        return path
    name = model if "_" in model else f"{model}_int8"
    for folder in model_folders():
        if (folder / f"{name}.tflite").is_file():
            return folder / f"{name}.tflite"
    raise ModelError(f"unknown model {model!r}; shipped models: {', '.join(shipped_names()) or 'none found'}")
