"""python -m train --ensemble: average the models of several cross-validated recipes that share their
preprocessing and folds. The ensemble's out-of-fold score is the mean of the members' (each at its
own chosen epoch), its threshold comes from those pooled scores, and it ships as one model: one
input, the members side by side, their scores averaged (one .tflite, one invoke)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from train.arrays import cached_arrays
from train.crossval import summarize
from train.cv_report import cv_markdown
from train.data_root import relative_to_root
from edge.datasets import Sample
from edge.metrics import THRESHOLD_POLICY, choose_threshold
from train.run_folder import (MODEL, CvSummary, Recipe, RunConfig, fold_model_path, read_cv, read_oof_scores, read_split,
                              write_config, write_cv, write_oof_scores, write_split)


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
        stored = read_oof_scores(run)
        cv = read_cv(run)
        members.append({"run": run, "cv": cv, "recipe": Recipe.from_json(cv["recipe"]), "y": stored["y"],
                        "fold_of": stored["fold_of"], "scores": stored["scores"][cv["epoch"] - 1],
                        "paths": [relative_to_root(r["path"]) for r in read_split(run)["samples"]]})
    first = members[0]
    for member in members[1:]:
        if member["recipe"].preprocessing != first["recipe"].preprocessing:
            raise ValueError(f"{member['run']}: other preprocessing than {first['run']}; one model has one input")
        if member["paths"] != first["paths"] or not np.array_equal(member["fold_of"], first["fold_of"]):
            raise ValueError(f"{member['run']}: other images or folds than {first['run']}")
    return members


def train_ensemble(task: str, runs: list[str], data: list[str], out: str | Path, cache: str | None = None) -> dict:
    """The members' fold models averaged fold by fold, their recipes each trained on all of the data and
    averaged -> out, a run folder that python -m convert converts; -> the cv.json content."""
    import keras

    from train.fitting import fit

    started = time.time()
    out = Path(out)
    (out / "folds").mkdir(parents=True, exist_ok=True)
    members = load_members([Path(run) for run in runs])
    first = members[0]
    labels = labels_for(task)
    split = read_split(first["run"])
    write_split(out, split)
    y, fold_of = first["y"], first["fold_of"]
    groups = np.array([r["group"] for r in split["samples"]])
    scores = np.mean([m["scores"] for m in members], axis=0)
    threshold = choose_threshold(task, y, scores)
    result = summarize(task, y, groups, fold_of, scores, threshold, labels)
    spec = first["recipe"].preprocessing
    write_oof_scores(out, scores[None], fold_of, y)

    fold_models = []
    for fold in range(int(fold_of.max()) + 1):
        models = [keras.models.load_model(m["run"] / fold_model_path(fold, m["cv"]["epoch"])) for m in members]
        path = Path("folds") / f"fold{fold}" / "ensemble.keras"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        average_models(models, models[0].input_shape[1:]).save(out / path)
        fold_models.append(str(path))

    rows = split["samples"]
    _, x, y_all, _ = cached_arrays([Sample(r["path"], r["label"], r.get("patient")) for r in rows], spec, cache)
    if not np.array_equal(y_all, y):
        raise ValueError("the data changed since the cross-validation runs")
    trained = [fit(x, y, task, m["recipe"], m["cv"]["epoch"], verbose=2) for m in members]
    model = average_models(trained, x.shape[1:])
    model.save(out / MODEL)

    recipe = Recipe(ensemble_of=[{"run": str(m["run"]), "recipe": m["cv"]["recipe"], "epoch": m["cv"]["epoch"]}
                                 for m in members],
                    preprocessing=spec, augment="+".join(m["recipe"].augment for m in members),
                    horizon=first["recipe"].horizon, backbone=f"{len(members)} small CNNs averaged",
                    width=first["recipe"].width, learning_rate=first["recipe"].learning_rate,
                    batch_size=first["recipe"].batch_size, seed=first["recipe"].seed)
    epochs = "+".join(str(m["cv"]["epoch"]) for m in members)
    cv = {"recipe": recipe.to_json(), "folds": first["cv"]["folds"], "cells": len(y), "patients": len(set(groups)),
          "epoch": epochs, "grouped_by": split["grouped_by"], "threshold": threshold,
          "threshold_policy": THRESHOLD_POLICY[task].replace("validation", "pooled out-of-fold"),
          "epoch_curve": [], "tta": [], **result, "fold_models": fold_models}
    write_cv(out, cv, cv_markdown(cv))
    write_config(out, RunConfig(
        task=task, labels=list(labels), preprocessing=spec, threshold=threshold, threshold_policy=cv["threshold_policy"],
        grouped_by=split["grouped_by"], seed=recipe.seed, data=data, epochs_run=epochs, params=int(model.count_params()),
        recipe=recipe, cv=CvSummary.of(cv, fold_models), train_seconds=round(time.time() - started, 1)))
    pooled = result["pooled"]
    print(f"ensemble of {len(members)}: pooled out-of-fold weighted F1 {pooled['weighted_f1']:.4f} AUC "
          f"{pooled['roc_auc']:.4f}, threshold {threshold:.4f}; trained on all {len(y)} images -> {out / MODEL}")
    return cv
