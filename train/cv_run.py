"""python -m train --cv: choose the epoch and threshold by cross-validation grouped by patient (leukemia) or
near-duplicate group (brain), then train the shipped model on all of the data with that recipe."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from train.crossval import group_folds, grouped_images, run_folds
from train.cv_report import oof_report
from train.run_folder import (MODEL, CvSummary, Recipe, RunConfig, cv_split, fold_model_path, read_cv_recipe,
                              read_oof_scores, write_config, write_split)


def train_with_cv(task: str, data: list[str], out: str | Path, recipe: Recipe, folds: int = 5, cv_only: bool = False,
                  tta: bool = False, cache: str | None = None) -> dict:
    """Cross-validate the recipe (reusing the out-of-fold scores already in `out` for the same recipe and
    folds), then, unless cv_only, train it on all of the data for the chosen epoch -> the cv.json content.
    tta (brain): choose on mirror test-time-augmented scores and ship the mirror inside the model."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels_for(task)
    started = time.time()
    kept, x, y, groups, grouped_by = grouped_images(task, data, recipe.preprocessing, cache)
    fold_of = group_folds(y, groups, folds, recipe.seed)
    write_split(out, cv_split(task, recipe.seed, grouped_by, [asdict(s) for s in kept], groups, fold_of))
    print(f"{len(kept)} images of {len(set(groups))} {grouped_by.split(' (')[0]} in {folds} folds", flush=True)

    oof = earlier_folds(out, recipe, fold_of, y)
    if oof is None:
        oof = run_folds(x, y, fold_of, task, recipe, out, groups=groups)
    else:
        print(f"reusing the out-of-fold scores of the same recipe and folds in {out}", flush=True)
    cv = oof_report(task, labels, y, groups, fold_of, oof, recipe, tta, grouped_by, out,
                    cv_seconds=round(time.time() - started, 1))
    epoch, threshold = cv["epoch"], cv["threshold"]
    if cv_only:
        return cv

    from train.fitting import fit

    model = fit(x, y, task, recipe, epoch, verbose=2, groups=groups)
    fold_models = [fold_model_path(k, epoch) for k in range(folds)]
    if tta:
        import keras

        from train.model import with_mirror_tta

        model = with_mirror_tta(model)
        for index, path in enumerate(fold_models):
            fold_models[index] = path.replace(".keras", "_mirror_tta.keras")
            with_mirror_tta(keras.models.load_model(out / path)).save(out / fold_models[index])
    model.save(out / MODEL)
    write_config(out, RunConfig(
        task=task, labels=list(labels), preprocessing=recipe.preprocessing, threshold=threshold,
        threshold_policy=cv["threshold_policy"], grouped_by=grouped_by, seed=recipe.seed, data=data, epochs_run=epoch,
        params=int(model.count_params()), recipe=recipe, cv=CvSummary.of(cv, fold_models),
        train_seconds=round(time.time() - started, 1)))
    print(f"trained on all {len(y)} images for {epoch} epochs -> {out / MODEL}")
    return cv


def earlier_folds(out: Path, recipe: Recipe, fold_of: np.ndarray, y: np.ndarray) -> dict | None:
    """The out-of-fold scores already in `out` when they come from this recipe on these folds (e.g. a
    --cv-only experiment now trained for shipping), else None."""
    try:
        same_recipe = read_cv_recipe(out) == recipe
        stored = read_oof_scores(out)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if not (same_recipe and np.array_equal(stored["fold_of"], fold_of) and np.array_equal(stored["y"], y)):
        return None
    return {"scores": stored["scores"], "tta": stored["tta"]}
