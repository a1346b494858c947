"""Model metadata: a sidecar JSON beside each .tflite (``brain_int8.tflite`` -> ``brain_int8.json``)
holding everything the device needs: labels, input, preprocessing, threshold and the SHA-256."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class ModelError(ValueError):
    """A model that cannot be used; the message is one line."""


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(model_path: str | os.PathLike, metadata: dict) -> Path:
    path = sidecar_path(model_path)
    path.write_text(json.dumps({**metadata, "sha256": sha256_of(model_path)}, indent=2) + "\n")
    return path


def read_metadata(model_path: str | os.PathLike) -> dict:
    """The model's metadata; refuses a model whose SHA-256 differs from the record."""
    model_path = Path(model_path)
    path = sidecar_path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{model_path}: metadata {path.name} not found beside the model") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: unreadable metadata ({error})") from None
    if metadata.get("sha256") != sha256_of(model_path):
        raise ModelError(f"{model_path}: SHA-256 does not match its metadata (file changed or corrupt)")
    return metadata
