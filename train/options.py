"""The data and preprocessing options that python -m train and `python -m train.torch_cv export` share, and
the preprocessing spec they give."""
from __future__ import annotations

import argparse

from edge.preprocess import default_spec


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """task, --data, --size, the crops and stain normalisation, --seed, --cache."""
    parser.add_argument("task", choices=["brain", "leukemia"])
    parser.add_argument("--data", action="append", required=True,
                        help="dataset folder (brain: has yes/ and no/, repeatable; leukemia: C-NMC, either layout)")
    parser.add_argument("--size", type=int, help="input side in pixels (default: brain 128, leukemia 96)")
    parser.add_argument("--cell-crop", choices=["tight", "fixed"], default="tight", help="leukemia crop (see edge/preprocess.py)")
    parser.add_argument("--brain-crop", choices=["head", "none"], default="head",
                        help="brain: head (crop to the head, default) or none (the whole slice)")
    parser.add_argument("--stain-norm", action="store_true", help="leukemia: normalise each cell's channel means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/cache", help="folder for preprocessed arrays (one .npz per spec)")


def preprocessing_spec(task: str, size: int | None = None, cell_crop: str = "tight", brain_crop: str = "head",
                       stain_norm: bool = False) -> dict:
    """The preprocessing spec of these options (a brain spec names its crop only when it is not the
    default head crop, so earlier specs and caches stay valid)."""
    spec = default_spec(task, size)
    if task == "leukemia":
        spec["crop"] = cell_crop
        if stain_norm:
            spec["stain"] = "channel-mean"
    elif brain_crop != "head":
        spec["crop"] = brain_crop
    return spec


def spec_of(args: argparse.Namespace) -> dict:
    """preprocessing_spec of parsed add_data_arguments options."""
    return preprocessing_spec(args.task, args.size, args.cell_crop, args.brain_crop, args.stain_norm)
