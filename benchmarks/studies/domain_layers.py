"""Which layers the out-of-domain check should look at, measured on a cross-validation run's fold
models (Keras, at the run's chosen epoch; compact CNN or Lite0): for each fold, every ReLU layer's pooled outputs on its
training folds give class means and a shared covariance; its held-out images give the in-domain
scores (pooled over the folds, threshold at 5% flagged); the other sets are scored by every fold
model and the flag rates averaged. Ways compared: one Mahalanobis on the last layer, or on several
layers side by side, or the largest of per-layer distances each scaled by its training 95%.

    python -m benchmarks.studies.domain_layers runs/cv/fixed_stain_blur runs/cv/brain_192_e32 [--data DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.studies.domain import corruptions, field_cells, sample_paths
from convert.domain import IN_DOMAIN_FLAG_RATE, fitted_check
from edge.images import load_image
from edge.preprocess import preprocess
from train.arrays import cached_arrays
from train.data_root import data_root
from edge.datasets import find_brain_images, find_cnmc_images


def way_layers(count: int) -> dict[str, tuple[str, list[int]]]:
    """name -> (how the layers are combined, which ReLU layers)."""
    last = count - 1
    return {"last layer": ("joint", [last]),
            "all layers side by side": ("joint", list(range(count))),
            "first and last side by side": ("joint", [0, last]),
            "largest scaled: all layers": ("largest", list(range(count))),
            "largest scaled: first and last": ("largest", [0, last]),
            "largest scaled: first, second, last (shipped)": ("largest", [0, 1, last]),
            "largest scaled: first, middle, last": ("largest", [0, count // 2, last]),
            "largest scaled: first three, last": ("largest", [0, 1, 2, last])}


def lite0_way_layers(count: int) -> dict[str, tuple[str, list[int]]]:
    """Lite0: its ReLU6 layers 0..count-3 (the early ones have 32-144 channels), then its 1,280 pooled
    features whole (count - 2) and as 128 group means (count - 1), as the device takes them."""
    whole, grouped = count - 2, count - 1
    return {"last layer, 1,280 features": ("joint", [whole]),
            "last layer, 128 group means": ("joint", [grouped]),
            "largest scaled: stem, block0, grouped last": ("largest", [0, 1, grouped]),
            "largest scaled: stem, block0, whole last": ("largest", [0, 1, whole]),
            "largest scaled: first four, grouped last": ("largest", [0, 1, 2, 3, grouped]),
            "largest scaled: first six (up to 144 channels), grouped last (shipped)": ("largest", [0, 1, 2, 3, 4, 5, grouped]),
            "largest scaled: blocks 1-2 (96-144 channels), grouped last": ("largest", [2, 3, 4, 5, grouped]),
            "largest scaled: first six only": ("largest", [0, 1, 2, 3, 4, 5])}


def _extractor(model):
    """-> (a model giving every ReLU layer's pooled output, the ways to compare). Lite0: the ReLU6
    layers inside its backbone up to 144 channels, then its last features whole and as 128 group means."""
    import keras
    from keras import layers

    from train.model import lite0_grouped_features

    if model.name != "lite0_classifier":
        relus = [layer.output for layer in model.layers if isinstance(layer, layers.ReLU)]
        return keras.Model(model.input, [layers.GlobalAveragePooling2D()(r) for r in relus]), way_layers(len(relus))
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    early = [layer.output for layer in backbone.layers if isinstance(layer, layers.ReLU)][:6]
    pooled = [layers.GlobalAveragePooling2D()(r) for r in [*early, backbone.output]]
    return (keras.Model(backbone.input, [*pooled, lite0_grouped_features(pooled[-1])]),
            lite0_way_layers(len(pooled) + 1))


def other_sets(task: str, root: Path, samples, spec: dict, limit: int) -> dict[str, np.ndarray]:
    if task == "leukemia":
        images = {"MRI slices": [load_image(p) for p in sample_paths(root / "brain_mri", limit)],
                  "smear-field cells": field_cells(root, limit)}
    else:
        images = {"C-NMC cells": [load_image(p) for p in sample_paths(root / "cnmc", limit)]}
    picked = np.random.default_rng(0).choice(len(samples), min(limit, len(samples)), replace=False)
    originals = [load_image(samples[i].path) for i in picked]
    for name, corrupt in corruptions(task).items():
        images[name] = [corrupt(rgb) for rgb in originals]
    return {name: np.stack([preprocess(rgb, spec) for rgb in found]) for name, found in images.items()}


def measure(run: Path, root: Path, limit: int) -> tuple[str, dict[str, dict[str, float]]]:
    import keras

    import train.model  # noqa: F401  (registers the Mirror layer)

    cv = json.loads((run / "cv.json").read_text())
    spec, epoch = cv["recipe"]["preprocessing"], cv["epoch"]
    config = run / "config.json"
    fold_models = (json.loads(config.read_text())["cv"]["fold_models"] if config.is_file() else
                   [f"folds/fold{fold}/epoch{epoch:02d}.keras" for fold in range(cv["folds"])])
    task = "leukemia" if spec["name"] == "cnmc_cell" else "brain"
    stored = np.load(run / "oof_scores.npz")
    fold_of, y = stored["fold_of"], stored["y"]
    if task == "leukemia":
        samples, x, y_found, _ = cached_arrays(find_cnmc_images(root / "cnmc"), spec, "runs/cache")
    else:
        samples, x, y_found, _ = cached_arrays(
            find_brain_images([str(root / "brain_mri" / "brain_tumor_dataset"), str(root / "brain_mri" / "br35h")]),
            spec, "runs/cache", with_hash=True)
    if not np.array_equal(y, y_found):
        raise ValueError(f"the data under {root} is not the data of {run}")
    others = other_sets(task, root, samples, spec, limit)
    in_domain: dict[str, np.ndarray] = {}
    per_fold_others: dict[str, dict[str, list]] = {}
    for fold in range(int(fold_of.max()) + 1):
        held = fold_of == fold
        model = keras.models.load_model(run / fold_models[fold])
        extractor, ways = _extractor(model)

        def pooled(images):
            return [f.astype(np.float64) for f in extractor.predict(images, batch_size=256, verbose=0)]

        train, unseen, other = pooled(x[~held]), pooled(x[held]), {k: pooled(v) for k, v in others.items()}
        for name, (combine, chosen) in ways.items():
            if combine == "joint":
                check = fitted_check(np.hstack([train[i] for i in chosen]), y[~held], [sum(train[i].shape[1] for i in chosen)])

                def score(features, check=check, chosen=chosen):
                    return check.distances(np.hstack([features[i] for i in chosen]))
            else:
                checks = {i: fitted_check(train[i], y[~held], [train[i].shape[1]]) for i in chosen}

                def score(features, checks=checks):
                    return np.max([c.distances(features[i]) for i, c in checks.items()], axis=0)
            in_domain.setdefault(name, np.full(len(y), np.nan))[held] = score(unseen)
            for other_name, features in other.items():
                per_fold_others.setdefault(name, {}).setdefault(other_name, []).append(score(features))
        print(f"fold {fold} done", flush=True)
    table = {}
    for name, scores in in_domain.items():
        threshold = np.quantile(scores, 1 - IN_DOMAIN_FLAG_RATE, method="higher")
        table[name] = {other: float(np.mean([np.mean(s > threshold) for s in fold_scores]))
                       for other, fold_scores in per_fold_others[name].items()}
    return task, table


def markdown(run: Path, task: str, table: dict) -> list[str]:
    columns = list(next(iter(table.values())))
    lines = [f"## {task}: fold models of `{run}`", "",
             "| layers | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.1%}" for c in columns) + " |" for name, row in table.items()]
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.domain_layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="python -m train --cv run folders (their folds/ and oof_scores.npz)")
    parser.add_argument("--data", help="data root (default: $EDGE_DATA, else shared/data beside the checkout)")
    parser.add_argument("--limit", type=int, default=300, help="images per set")
    parser.add_argument("--out", help="write the markdown table here too")
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.studies.domain_layers", *(sys.argv[1:] if argv is None else argv)])
    lines = ["# Out-of-domain check: which layers", "", f"`{command}`", "",
             "Share flagged at the threshold that flags 5% of the out-of-fold in-domain images.", ""]
    for run in args.runs:
        lines += markdown(Path(run), *measure(Path(run), data_root(args.data), args.limit))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
