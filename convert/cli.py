"""python -m convert: a cross-validated run of python -m train -> float32 and full-integer int8 TFLite models with
their sidecar metadata, verified on the fold models' held-out images (convert/pipeline.py).

    python -m convert runs/cv/leukemia --out models/ --name leukemia   # leukemia_float32.tflite, leukemia_int8.tflite
    python -m convert runs/cv/brain/model.keras --out models/ --float16 --dynamic

Exit status: 0 when int8 is within --tolerance of float32, 1 when it is not, 2 for bad input.
"""
from __future__ import annotations

import argparse
import sys

from train.extra import missing_train_extra


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder of python -m train --cv, or its model.keras")
    parser.add_argument("--out", default="models", help="folder for the .tflite files, metadata and reports")
    parser.add_argument("--name", help="model name (default: the task, e.g. leukemia)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images for int8 calibration")
    parser.add_argument("--float16", action="store_true", help="also write <name>_float16.tflite")
    parser.add_argument("--dynamic", action="store_true", help="also write <name>_dynamic.tflite (dynamic range)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="largest allowed drop of int8 accuracy below float32, in percentage points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/cache", help="folder for preprocessed arrays (one .npz per spec)")
    parser.add_argument("--data", metavar="DIR",
                        help="data root the run's split paths are relative to (default: $EDGE_DATA, else shared/data beside the checkout)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    missing = missing_train_extra("python -m convert")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    args = parse_args(argv)
    from convert.pipeline import convert_run
    from convert.tflite import ConversionError
    from train.report import metrics_table

    precisions = ["float32", "int8"] + ["float16"] * args.float16 + ["dynamic"] * args.dynamic
    try:
        verification = convert_run(args.run, args.out, args.name, precisions, args.calibration, args.tolerance,
                                   args.seed, args.cache, args.data)
    except (FileNotFoundError, ValueError, ConversionError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    print(metrics_table(verification["metrics"]))
    print(f"float32/int8 agreement {verification['agreement']:.4f}; int8 size {verification['int8_size_ratio']:.1%} of "
          f"float32; int8 accuracy drop {verification['int8_accuracy_drop_pp']:.2f} pp (tolerance {args.tolerance} pp): "
          f"{'PASS' if verification['passed'] else 'FAIL'}")
    return 0 if verification["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
