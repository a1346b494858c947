"""Measure the quality-gate figures (edge/quality.py) over the real data, and over blurred,
blank and saturated versions of it, to set and check the thresholds.

    python -m benchmarks.studies.quality_thresholds --data ../shared/data
"""
from __future__ import annotations

import argparse
import glob
import random

import numpy as np
from PIL import ImageFilter

from edge.images import load_image
from edge.quality import analysis_copy, measure


def _summary(values: list[float]) -> str:
    p = np.percentile(values, [0, 0.1, 1, 50, 99, 100])
    return "min {:.1f}  p0.1 {:.1f}  p1 {:.1f}  median {:.1f}  p99 {:.2f}  max {:.2f}".format(*p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--per-set", type=int, default=600, help="images sampled per dataset")
    args = parser.parse_args(argv)
    rng = random.Random(0)
    sets = {
        "brain": glob.glob(f"{args.data}/brain_mri/*/*/*"),
        "cells": glob.glob(f"{args.data}/cnmc/*/*"),
        "smear fields": glob.glob(f"{args.data}/blood_smear_fields/*/*"),
    }
    for name, paths in sets.items():
        paths = rng.sample(paths, min(args.per_set, len(paths)))
        figures = [measure(load_image(p)) for p in paths]
        blurred = [measure(np.asarray(analysis_copy(load_image(p)).filter(ImageFilter.GaussianBlur(2))))
                   for p in paths[:100]]
        print(f"## {name} ({len(paths)} images)")
        for key in figures[0]:
            print(f"  {key:10s} {_summary([f[key] for f in figures])}")
        print(f"  sharpness after a radius-2 Gaussian blur at analysis size: {_summary([f['sharpness'] for f in blurred])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
