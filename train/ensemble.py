"""edge-train --ensemble: average the models of several cross-validated recipes that share their
preprocessing and folds. The ensemble's out-of-fold score is the mean of the members' (each at its
own chosen epoch), its threshold comes from those pooled scores, and it ships as one model: one
input, the members side by side, their scores averaged (one .tflite, one invoke)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from train.arrays import cached_arrays
from train.crossval import save_json, summarize
from train.data_root import relative_to_root
from train.datasets import Sample
from train.metrics import THRESHOLD_POLICY, choose_threshold
from train.splits import load_split, save_split


def average_models(models: list, input_shape: tuple[int, ...]):
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    scores = []
    for index, model in enumerate(models):
        model.name = f"member{index}"
        scores.append(model(inputs))
    return keras.Model(inputs, keras.layers.Average(name="score")(scores), name="ensemble")


def load_members(runs: list[Path]) -> list[dict]:
    members = []
    for run in runs:
        stored = np.load(run / "oof_scores.npz")
        cv = json.loads((run / "cv.json").read_text())
        members.append({"run": run, "cv": cv, "y": stored["y"], "fold_of": stored["fold_of"],
                        "scores": stored["scores"][cv["epoch"] - 1],
                        "paths": [relative_to_root(r["path"]) for r in load_split(run / "split.json")["samples"]]})
    first = members[0]
    for member in members[1:]:
        if member["cv"]["recipe"]["preprocessing"] != first["cv"]["recipe"]["preprocessing"]:
            raise ValueError(f"{member['run']}: other preprocessing than {first['run']}; one model has one input")
        if member["paths"] != first["paths"] or not np.array_equal(member["fold_of"], first["fold_of"]):
            raise ValueError(f"{member['run']}: other images or folds than {first['run']}")
    return members


def train_ensemble(args: argparse.Namespace) -> dict:
    import keras

    from train.cv_run import cv_markdown
    from train.fitting import fit

    started = time.time()
    out = Path(args.out)
    (out / "folds").mkdir(parents=True, exist_ok=True)
    members = load_members([Path(run) for run in args.ensemble])
    first = members[0]
    labels = labels_for(args.task)
    split = load_split(first["run"] / "split.json")
    save_split(split, out / "split.json")
    y, fold_of = first["y"], first["fold_of"]
    groups = np.array([r["group"] for r in split["samples"]])
    scores = np.mean([m["scores"] for m in members], axis=0)
    threshold = choose_threshold(args.task, y, scores)
    result = summarize(args.task, y, groups, fold_of, scores, threshold, labels)
    spec = first["cv"]["recipe"]["preprocessing"]
    np.savez(out / "oof_scores.npz", scores=scores[None], fold_of=fold_of, y=y)

    fold_models = []
    for fold in range(int(fold_of.max()) + 1):
        models = [keras.models.load_model(m["run"] / "folds" / f"fold{fold}" / f"epoch{m['cv']['epoch']:02d}.keras")
                  for m in members]
        path = Path("folds") / f"fold{fold}" / "ensemble.keras"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        average_models(models, models[0].input_shape[1:]).save(out / path)
        fold_models.append(str(path))

    rows = split["samples"]
    _, x, y_all, _ = cached_arrays([Sample(r["path"], r["label"], r.get("patient")) for r in rows], spec, args.cache)
    if not np.array_equal(y_all, y):
        raise ValueError("the data changed since the cross-validation runs")
    trained = [fit(x, y, args.task, m["cv"]["recipe"], m["cv"]["epoch"], verbose=2) for m in members]
    model = average_models(trained, x.shape[1:])
    model.save(out / "model.keras")

    recipe = {"ensemble_of": [{"run": str(m["run"]), "recipe": m["cv"]["recipe"], "epoch": m["cv"]["epoch"]}
                              for m in members], "preprocessing": spec, "augment": "+".join(
                  m["cv"]["recipe"]["augment"] for m in members), "horizon": first["cv"]["recipe"]["horizon"],
              "backbone": f"{len(members)} small CNNs averaged", "width": first["cv"]["recipe"]["width"],
              "learning_rate": first["cv"]["recipe"]["learning_rate"], "batch_size": first["cv"]["recipe"]["batch_size"],
              "seed": first["cv"]["recipe"]["seed"]}
    epochs = "+".join(str(m["cv"]["epoch"]) for m in members)
    cv = {"recipe": recipe, "folds": first["cv"]["folds"], "cells": len(y), "patients": len(set(groups)),
          "epoch": epochs, "grouped_by": split["grouped_by"], "threshold": threshold,
          "threshold_policy": THRESHOLD_POLICY[args.task].replace("validation", "pooled out-of-fold"),
          "epoch_curve": [], "tta": [], **result, "fold_models": fold_models}
    save_json(out / "cv.json", cv)
    (out / "cv.md").write_text(cv_markdown(cv))
    config = {"task": args.task, "labels": list(labels), "preprocessing": spec, "threshold": threshold,
              "threshold_policy": cv["threshold_policy"], "grouped_by": split["grouped_by"], "seed": recipe["seed"],
              "data": args.data, "epochs_run": epochs, "params": int(model.count_params()), "recipe": recipe,
              "cv": {k: cv[k] for k in ("folds", "cells", "patients", "epoch", "threshold", "pooled", "fold_mean_sd",
                                         "groups_majority_right", "groups", "fold_models")},
              "train_seconds": round(time.time() - started, 1)}
    save_json(out / "config.json", config)
    pooled = result["pooled"]
    print(f"ensemble of {len(members)}: pooled out-of-fold weighted F1 {pooled['weighted_f1']:.4f} AUC "
          f"{pooled['roc_auc']:.4f}, threshold {threshold:.4f}; trained on all {len(y)} images -> {out / 'model.keras'}")
    return cv
