"""Which model, baseline and labelled images a benchmark measures, shared by `benchmark`
(benchmarks/cli.py) and `python -m benchmarks.studies.peers`; a bad choice is one UsageError line."""
from __future__ import annotations

import os
from pathlib import Path

from edge.metadata import ModelError
from edge.model_store import resolve_model

from . import accuracy

PRECISION_SUFFIXES = ("_int8", "_float16", "_dynamic")


class UsageError(ValueError):
    """A bad combination of arguments or an unusable data folder; the message is one line."""


def find_model(name: str | None) -> Path:
    """resolve_model, also taking a shipped model's file name (``leukemia_int8.tflite``) from any folder."""
    try:
        return resolve_model(name)
    except ModelError:
        if name and name.endswith(".tflite") and os.sep not in name:
            try:
                return resolve_model(name.removesuffix(".tflite"))
            except ModelError:
                pass
        raise


def find_baseline(model_path: Path, model_metadata: dict, baseline: str | None) -> Path | None:
    if baseline:
        return find_model(baseline)
    if model_metadata.get("precision") == "float32":
        return None
    stem = model_path.stem
    suffix = next((s for s in PRECISION_SUFFIXES if stem.endswith(s)), None)
    if suffix is None:
        raise UsageError(f"{model_path}: cannot tell its float sibling from the name; pass --baseline PATH")
    sibling = model_path.with_name(stem.removesuffix(suffix) + "_float32.tflite")
    if not sibling.is_file():
        raise UsageError(f"{model_path}: float baseline {sibling.name} not found beside it (the device install carries "
                         f"the int8 models only: copy it from the checkout's models/); pass --baseline PATH")
    return sibling


def load_samples(args, task: str, model_path: Path, model_metadata: dict) -> list:
    try:
        samples = accuracy.find_labelled_images(args.data, task)
        if args.split:
            split_name = model_metadata.get("training", {}).get("split_file", f"{task}_split.json")
            samples = accuracy.keep_split(samples, model_path.with_name(split_name), args.split)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    return accuracy.every_nth(samples, args.limit)
