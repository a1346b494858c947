"""edge-train: train the brain MRI or C-NMC leukemia classifier and evaluate it on a held-out split.

    edge-train brain --data DIR [--data DIR2] --out runs/brain
    edge-train leukemia --data DIR --out runs/leukemia
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from edge.preprocess import default_spec
from train.datasets import find_brain_images, find_cnmc_images
from train.extra import missing_train_extra


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["brain", "leukemia"])
    parser.add_argument("--data", action="append", required=True,
                        help="dataset folder (brain: has yes/ and no/, repeatable; leukemia: C-NMC, either layout)")
    parser.add_argument("--out", required=True, help="run folder for the model, split and report")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--size", type=int, help="input side in pixels (default: brain 128, leukemia 96)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="filters of the first layer; later layers scale with it")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=12, help="epochs without validation AUC gain before stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", help="reuse a saved split.json instead of making a new one")
    parser.add_argument("--backbone", choices=["small", "lite0"], default="small",
                        help="small: compact CNN from scratch; lite0: ImageNet-pretrained EfficientNet-Lite0, fine-tuned")
    parser.add_argument("--frozen-epochs", type=int, default=5,
                        help="lite0: epochs training only the head before the whole network is fine-tuned")
    parser.add_argument("--cell-crop", choices=["tight", "fixed"], default="tight", help="leukemia crop (see edge/preprocess.py)")
    parser.add_argument("--brain-crop", choices=["head", "none"], default="head",
                        help="brain: head (crop to the head, default) or none (the whole slice)")
    parser.add_argument("--stain-norm", action="store_true", help="leukemia: normalise each cell's channel means")
    parser.add_argument("--cv", type=int, nargs="?", const=5, metavar="K",
                        help="K-fold cross-validation grouped by patient or near-duplicate group (default K 5): epoch and threshold chosen on "
                             "pooled out-of-fold scores, then the model trained on all data")
    parser.add_argument("--cv-only", action="store_true", help="with --cv: stop after the cross-validation")
    parser.add_argument("--augment", choices=["light", "basic", "stain", "stain_blur"], default="basic",
                        help="with --cv: light (flip, small shift), basic (geometry, brightness, contrast, hue), stain (+ HED stain, gamma jitter), stain_blur (+ Gaussian blur)")
    parser.add_argument("--group-balance", action="store_true",
                        help="with --cv: weight each image by 1/sqrt(images of its patient or group), classes kept balanced")
    parser.add_argument("--ema", type=float, metavar="MOMENTUM",
                        help="with --cv: score and ship an exponential moving average of the weights (e.g. 0.995)")
    parser.add_argument("--tta", action="store_true",
                        help="with --cv, brain: choose on mirror test-time-augmented scores and ship the mirror inside the model")
    parser.add_argument("--ensemble", nargs="+", metavar="RUN",
                        help="average the models of these --cv runs (same preprocessing and folds) into one model")
    parser.add_argument("--cache", default="runs/cache", help="folder for preprocessed arrays (one .npz per spec)")
    return parser.parse_args(argv)


def apply_crop_options(spec: dict, args: argparse.Namespace) -> None:
    """The crop and stain options in the preprocessing spec (a brain spec names its crop only when it
    is not the default head crop, so earlier specs and caches stay valid)."""
    if args.task == "leukemia":
        spec["crop"] = args.cell_crop
        if args.stain_norm:
            spec["stain"] = "channel-mean"
    elif args.brain_crop != "head":
        spec["crop"] = args.brain_crop


def prepare_data(args: argparse.Namespace, spec: dict):
    """-> split dict and {subset: (x, y)} of preprocessed arrays."""
    from train.arrays import load_arrays
    from train.splits import load_split, make_split, subset_samples

    if args.split:
        split = load_split(args.split)
        samples = [s for name in ("train", "val", "test") for s in subset_samples(split, name)]
        kept, x, y, _ = load_arrays(samples, spec)
        kept_paths = {s.path for s in kept}
        split["samples"] = [r for r in split["samples"] if r["path"] in kept_paths]
    else:
        if args.task == "brain":
            samples = find_brain_images(args.data)
        else:
            samples = [s for root in args.data for s in find_cnmc_images(root)]
        print(f"found {len(samples)} images; preprocessing", flush=True)
        kept, x, y, hashes = load_arrays(samples, spec, with_hash=args.task == "brain")
        split = make_split(args.task, kept, args.seed, hashes)
    row_of = {r["path"]: r for r in split["samples"]}
    subsets = np.array([row_of[s.path]["subset"] for s in kept])
    groups = np.array([row_of[s.path]["group"] for s in kept])
    arrays = {name: (x[subsets == name], y[subsets == name], groups[subsets == name]) for name in ("train", "val", "test")}
    return split, arrays


def per_group(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, labels) -> list[dict]:
    """Accuracy per patient or duplicate group: how evenly the model does across them."""
    rows = []
    for group in sorted(set(groups), key=lambda g: -np.sum(groups == g)):
        mask = groups == group
        rows.append({"group": str(group), "label": labels[int(y[mask][0])], "images": int(mask.sum()),
                     "mean_score": float(scores[mask].mean()),
                     "accuracy": float(np.mean((scores[mask] >= threshold) == y[mask]))})
    return rows


def train(args: argparse.Namespace) -> dict:
    from train.metrics import THRESHOLD_POLICY, choose_threshold, evaluate
    from train.report import write_report
    from train.splits import save_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels_for(args.task)
    spec = default_spec(args.task, args.size)
    apply_crop_options(spec, args)
    started = time.time()
    split, arrays = prepare_data(args, spec)
    save_split(split, out / "split.json")
    for name, s in split["summary"].items():
        print(f"{name}: {s['images']} images, {s['groups']} groups, per label {s['per_label']}", flush=True)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sklearn.utils.class_weight import compute_class_weight

    from train.model import augmentation, build_model, build_pretrained_model

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train, _), (x_val, y_val, _), (x_test, y_test, test_groups) = arrays["train"], arrays["val"], arrays["test"]
    augment = augmentation(args.task)
    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train.astype("float32")))
                .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
                .batch(args.batch_size)
                .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val.astype("float32"))).batch(128)

    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y_train)

    def fit(model, learning_rate, epochs, initial_epoch=0, best_so_far=None):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])
        callbacks = [
            keras.callbacks.ModelCheckpoint(out / "model.keras", monitor="val_auc", mode="max", save_best_only=True,
                                            initial_value_threshold=best_so_far),
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=args.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4, min_lr=1e-6),
            keras.callbacks.CSVLogger(out / "history.csv", append=initial_epoch > 0),
        ]
        return model.fit(train_ds, validation_data=val_ds, shuffle=False, epochs=epochs, initial_epoch=initial_epoch,
                         callbacks=callbacks, class_weight={0: float(weights[0]), 1: float(weights[1])},
                         verbose=1 if sys.stdout.isatty() else 2).history

    if args.backbone == "small":
        model = build_model(x_train.shape[1:], width=args.width)
        history = fit(model, args.learning_rate, args.epochs)
    else:
        model, backbone = build_pretrained_model(x_train.shape[1:])
        backbone.trainable = False
        history = fit(model, args.learning_rate, args.frozen_epochs)
        backbone.trainable = True
        fine_tuned = fit(model, args.learning_rate / 20, args.epochs, initial_epoch=len(history["loss"]),
                         best_so_far=max(history["val_auc"]))
        history = {key: history[key] + fine_tuned.get(key, []) for key in history}
    model = keras.models.load_model(out / "model.keras")

    val_scores = model.predict(x_val, batch_size=128, verbose=0).ravel()
    threshold = choose_threshold(args.task, y_val, val_scores)
    test_scores = model.predict(x_test, batch_size=128, verbose=0).ravel()
    val_metrics = evaluate(y_val, val_scores, threshold, labels)
    test_metrics = evaluate(y_test, test_scores, threshold, labels)
    if args.task == "leukemia":
        test_metrics["per_patient"] = per_group(y_test, test_scores, test_groups, threshold, labels)
    config = {
        "task": args.task, "labels": list(labels), "preprocessing": spec, "threshold": threshold,
        "threshold_policy": THRESHOLD_POLICY[args.task], "grouped_by": split["grouped_by"], "seed": args.seed,
        "data": args.data, "epochs_run": len(history["loss"]), "params": int(model.count_params()),
        "train_seconds": round(time.time() - started, 1),
        "args": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    write_report(out, args.task, config, split["summary"], test_metrics, val_metrics,
                 {k: [float(v) for v in vals] for k, vals in history.items()})
    print(f"test: accuracy {test_metrics['accuracy']:.4f}  weighted F1 {test_metrics['weighted_f1']:.4f}  "
          f"sensitivity {test_metrics['sensitivity']:.4f}  specificity {test_metrics['specificity']:.4f}  "
          f"AUC {test_metrics['roc_auc']:.4f}  -> {out / 'report.md'}")
    return test_metrics


def main(argv=None) -> int:
    missing = missing_train_extra("edge-train")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    args = parse_args(argv)
    if args.tta and (args.cv is None or args.task != "brain"):
        print("edge-train: --tta is for --cv brain runs (cells gained nothing from it; see the README)", file=sys.stderr)
        return 2
    if args.cv is not None and args.split:
        print("edge-train: --cv makes its own folds (no --split)", file=sys.stderr)
        return 2
    try:
        if args.ensemble:
            from train.ensemble import train_ensemble

            train_ensemble(args)
        elif args.cv is not None:
            from train.cv_run import train_with_cv

            train_with_cv(args)
        else:
            train(args)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"edge-train: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
