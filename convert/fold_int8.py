"""int8 against float32 on the fold models of a `python -m train.torch_cv run --save-epoch E`: each
fold's weights moved into the Keras model, converted to float32 and int8 TFLite (calibrated on its own
training folds) and scored on its held-out fold, exactly as python -m convert verifies fold models
(convert/folds.py) -> RUN/int8.json: agreement and accuracy of int8 against float32 at the pooled
float32 threshold.

    python -m convert.fold_int8 runs/gpu/brain_128.npz runs/gpu/brain_lite0 --epoch 18
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def fold_int8(arrays: str | Path, run_dir: str | Path, epoch: int, calibration_images: int = 1000) -> dict:
    from convert.folds import fold_scores
    from edge.labels import labels_for
    from edge.metrics import choose_threshold, evaluate
    from train.torch_cv import keras_fold_models, task_of

    stored = np.load(arrays)
    x = stored["x"].astype(np.float32) / 255
    x = x[..., None] if x.ndim == 3 else x
    y, fold_of = stored["y"], stored["fold_of"]
    task = task_of(json.loads(str(stored["spec"])))
    out = Path(run_dir)
    fold_models = keras_fold_models(out, out, epoch, int(fold_of.max()) + 1, x.shape[1:])
    scores = fold_scores(out, fold_models, x, y, fold_of, ["float32", "int8"], calibration_images).probabilities
    threshold = choose_threshold(task, y, scores["float32"])
    metrics = {name: evaluate(y, s, threshold, labels_for(task)) for name, s in scores.items()}
    result = {"epoch": epoch, "threshold": threshold,
              "agreement": float(np.mean((scores["float32"] >= threshold) == (scores["int8"] >= threshold))),
              **{name: {k: m[k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc")} for name, m in metrics.items()}}
    (out / "int8.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.fold_int8", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arrays", help="the .npz of `python -m train.torch_cv export`")
    parser.add_argument("run_dir", help="a run of `python -m train.torch_cv run --save-epoch E`")
    parser.add_argument("--epoch", type=int, required=True, help="the --save-epoch of the run")
    parser.add_argument("--calibration", type=int, default=1000, help="training images for each fold's int8 calibration")
    args = parser.parse_args(argv)
    try:
        fold_int8(args.arrays, args.run_dir, args.epoch, args.calibration)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"fold_int8: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
