"""python -m train: cross-validate a recipe for the brain MRI or C-NMC leukemia classifier, grouped by
patient or near-duplicate group, then train it on all of the data for the epoch the cross-validation
chose (train/cv_run.py); or average cross-validated runs into one model (--ensemble, train/ensemble.py).

    python -m train leukemia --cv 5 --data DIR --out runs/cv/leukemia [--cv-only]
    python -m train brain --cv 5 --data DIR --data DIR2 --out runs/cv/brain
"""
from __future__ import annotations

import argparse
import sys

from train.extra import missing_train_extra
from train.options import add_data_arguments, spec_of
from train.run_folder import Recipe


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="run folder for the models, split and cross-validation")
    parser.add_argument("--cv", type=int, nargs="?", const=5, default=5, metavar="K",
                        help="K-fold cross-validation grouped by patient or near-duplicate group (default K 5): epoch and "
                             "threshold chosen on pooled out-of-fold scores, then the model trained on all data")
    parser.add_argument("--cv-only", action="store_true", help="stop after the cross-validation")
    parser.add_argument("--epochs", type=int, default=60, help="the learning-rate schedule's horizon, and the most epochs scored")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="filters of the first layer; later layers scale with it")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--backbone", choices=["small", "lite0"], default="small",
                        help="small: compact CNN from scratch; lite0: ImageNet-pretrained EfficientNet-Lite0, fine-tuned")
    parser.add_argument("--frozen-epochs", type=int, default=5,
                        help="lite0: epochs training only the head before the whole network is fine-tuned")
    parser.add_argument("--augment", choices=["light", "basic", "stain", "stain_blur"], default="basic",
                        help="light (flip, small shift), basic (geometry, brightness, contrast, hue), stain (+ HED stain, gamma jitter), stain_blur (+ Gaussian blur)")
    parser.add_argument("--group-balance", action="store_true",
                        help="weight each image by 1/sqrt(images of its patient or group), classes kept balanced")
    parser.add_argument("--ema", type=float, metavar="MOMENTUM",
                        help="score and ship an exponential moving average of the weights (e.g. 0.995)")
    parser.add_argument("--tta", action="store_true",
                        help="brain: choose on mirror test-time-augmented scores and ship the mirror inside the model")
    parser.add_argument("--ensemble", nargs="+", metavar="RUN",
                        help="average the models of these --cv runs (same preprocessing and folds) into one model")
    return parser.parse_args(argv)


def recipe_of(args: argparse.Namespace) -> Recipe:
    return Recipe(preprocessing=spec_of(args), backbone=args.backbone, width=args.width, learning_rate=args.learning_rate,
                  horizon=args.epochs, batch_size=args.batch_size, augment=args.augment, seed=args.seed,
                  frozen_epochs=args.frozen_epochs if args.backbone == "lite0" else None,
                  group_balance=args.group_balance, ema=args.ema or None)


def main(argv=None) -> int:
    missing = missing_train_extra("python -m train")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    args = parse_args(argv)
    if args.tta and args.task != "brain":
        print("train: --tta is for --cv brain runs (cells gained nothing from it; see the README)", file=sys.stderr)
        return 2
    try:
        if args.ensemble:
            from train.ensemble import train_ensemble

            train_ensemble(args.task, args.ensemble, args.data, args.out, args.cache)
        else:
            from train.cv_run import train_with_cv

            train_with_cv(args.task, args.data, args.out, recipe_of(args), args.cv, args.cv_only, args.tta, args.cache)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
