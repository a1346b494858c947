"""Every real image through the device pipeline and through the code it replaced (commit 418648e,
kept verbatim in tests/reference/): the preprocessed model input must be identical (np.array_equal)
and the quality gates must decide alike, on the image, on its analysis copy blurred with radius 2
(benchmarks/studies/quality_thresholds.py's blurred set) and on its grey version.

    python -m benchmarks.studies.pipeline_exact [--data ../shared/data] [--step 1]     # about 6 minutes

tests/test_pipeline_exact.py runs the same comparison on every 40th image.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
SETS = {
    "cnmc": ("cnmc/*/*", [{"name": "cnmc_cell", "size": 96, "crop": "fixed"},
                          {"name": "cnmc_cell", "size": 96, "crop": "tight"}]),
    "brain_mri": ("brain_mri/*/*/*", [{"name": "brain_mri", "size": 128}, {"name": "brain_mri", "size": 128, "crop": "none"}]),
    "blood_smear_fields": ("blood_smear_fields/*/*", [{"name": "cnmc_cell", "size": 96, "crop": "fixed"},
                                                      {"name": "brain_mri", "size": 128}]),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--step", type=int, default=1, help="every step-th image")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from reference import preprocess_418648e as old_preprocess
    from reference import quality_418648e as old_quality

    from edge import preprocess, quality
    from edge.images import load_image
    started, failed = time.time(), 0
    for name, (pattern, specs) in SETS.items():
        paths = sorted(glob.glob(str(args.data / pattern)))[::args.step]
        inputs = inputs_differing = gates = gates_differing = 0
        for path in paths:
            rgb = load_image(path)
            for spec in specs:
                inputs += 1
                if not np.array_equal(preprocess.preprocess(rgb, spec), old_preprocess.preprocess(rgb, spec)):
                    inputs_differing += 1
                    print(f"  input differs: {path} {spec}")
            small = np.asarray(old_quality.analysis_copy(rgb))
            for variant in (rgb, np.asarray(Image.fromarray(small).filter(ImageFilter.GaussianBlur(2))),
                            np.repeat(rgb.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)):
                for task in ("brain_mri", "cnmc_cell"):
                    gates += 1
                    if quality.quality_issues(variant, task) != old_quality.quality_issues(variant, task):
                        gates_differing += 1
                        print(f"  gate differs: {path} {task}")
        failed += inputs_differing + gates_differing
        print(f"{name}: {len(paths)} images; model inputs compared {inputs}, differing {inputs_differing}; gate "
              f"decisions compared {gates}, differing {gates_differing} ({time.time() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
