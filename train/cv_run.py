"""edge-train --cv: choose the epoch and threshold by cross-validation grouped by patient (leukemia) or
near-duplicate group (brain), then train the shipped model on all of the data with that recipe."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from edge.preprocess import default_spec
from train.arrays import cached_arrays
from train.cli import apply_crop_options
from train.crossval import choose_epoch, group_folds, run_folds, save_json, summarize
from train.datasets import find_brain_images, find_cnmc_images
from train.metrics import THRESHOLD_POLICY, choose_threshold, evaluate
from train.splits import DUPLICATE_DISTANCE, brain_groups, save_split
from train.splits import summarize as summarize_split


def recipe_from(args: argparse.Namespace, spec: dict) -> dict:
    recipe = {"preprocessing": spec, "backbone": args.backbone, "width": args.width, "learning_rate": args.learning_rate,
              "horizon": args.epochs, "batch_size": args.batch_size, "augment": args.augment, "seed": args.seed}
    if args.backbone == "lite0":
        recipe["frozen_epochs"] = args.frozen_epochs
    if args.group_balance:  # only when set, so the recipes of earlier runs stay equal to theirs
        recipe["group_balance"] = True
    if args.ema:
        recipe["ema"] = args.ema
    return recipe


def train_with_cv(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels_for(args.task)
    spec = default_spec(args.task, args.size)
    started = time.time()
    apply_crop_options(spec, args)
    if args.task == "leukemia":
        samples = [s for root in args.data for s in find_cnmc_images(root)]
        kept, x, y, _ = cached_arrays(samples, spec, args.cache)
        groups = np.array([s.patient for s in kept])
        grouped_by = "patients"
    else:
        kept, x, y, hashes = cached_arrays(find_brain_images(args.data), spec, args.cache, with_hash=True)
        groups = np.array(brain_groups(hashes))
        grouped_by = f"near-duplicate groups (16x16 dHash, Hamming <= {DUPLICATE_DISTANCE})"
    fold_of = group_folds(y, groups, args.cv, args.seed)
    rows = [dict(asdict(s), group=str(g), subset="train", fold=int(f)) for s, g, f in zip(kept, groups, fold_of)]
    split = {"task": args.task, "seed": args.seed, "grouped_by": grouped_by, "folds": args.cv,
             "summary": summarize_split(rows), "samples": rows}
    save_split(split, out / "split.json")
    print(f"{len(kept)} images of {len(set(groups))} {grouped_by.split(' (')[0]} in {args.cv} folds", flush=True)

    recipe = recipe_from(args, spec)
    oof = earlier_folds(out, recipe, fold_of, y)
    if oof is None:
        oof = run_folds(x, y, fold_of, args.task, recipe, out, groups=groups)
    else:
        print(f"reusing the out-of-fold scores of the same recipe and folds in {out}", flush=True)
    cv = oof_report(args.task, labels, y, groups, fold_of, oof, recipe, args.tta, grouped_by, out,
                    cv_seconds=round(time.time() - started, 1))
    epoch, threshold = cv["epoch"], cv["threshold"]
    if args.cv_only:
        return cv

    from train.fitting import fit

    model = fit(x, y, args.task, recipe, epoch, verbose=2, groups=groups)
    fold_models = [f"folds/fold{k}/epoch{epoch:02d}.keras" for k in range(args.cv)]
    if args.tta:
        import keras

        from train.model import with_mirror_tta

        model = with_mirror_tta(model)
        for index, path in enumerate(fold_models):
            fold_models[index] = path.replace(".keras", "_mirror_tta.keras")
            with_mirror_tta(keras.models.load_model(out / path)).save(out / fold_models[index])
    model.save(out / "model.keras")
    config = {"task": args.task, "labels": list(labels), "preprocessing": spec, "threshold": threshold,
              "threshold_policy": cv["threshold_policy"], "grouped_by": grouped_by, "seed": args.seed,
              "data": args.data, "epochs_run": epoch, "params": int(model.count_params()), "recipe": recipe,
              "cv": {**{k: cv[k] for k in ("folds", "cells", "patients", "epoch", "threshold", "pooled", "fold_mean_sd",
                                            "groups_majority_right", "groups")},
                     "test_time_augmentation": cv["test_time_augmentation"], "fold_models": fold_models},
              "train_seconds": round(time.time() - started, 1)}
    save_json(out / "config.json", config)
    print(f"trained on all {len(y)} images for {epoch} epochs -> {out / 'model.keras'}")
    return cv


def oof_report(task: str, labels, y, groups, fold_of, oof: dict, recipe: dict, tta_chosen: bool, grouped_by: str,
               out: Path, fixed_epoch: int | None = None, **recorded) -> dict:
    """Choose the epoch and threshold on pooled out-of-fold scores ({"scores": (epochs, n), "tta": {epoch:
    (n,)}}; with tta_chosen among the epochs with mirror-TTA scores; fixed_epoch: that epoch, the curve
    still recorded), summarise -> out/cv.json (with the `recorded` fields too), cv.md."""
    if tta_chosen:
        tta_epochs = sorted(oof["tta"])
        position, curve = choose_epoch(task, y, np.stack([oof["tta"][e] for e in tta_epochs]), labels)
        for row in curve:
            row["epoch"] = tta_epochs[row["epoch"] - 1]
        epoch = tta_epochs[position - 1]
        scores = oof["tta"][epoch]
    else:
        own_choice, curve = choose_epoch(task, y, oof["scores"], labels)
        epoch = fixed_epoch or own_choice
        scores = oof["scores"][epoch - 1]
    threshold = choose_threshold(task, y, scores)
    result = summarize(task, y, groups, fold_of, scores, threshold, labels)
    tta = []
    for tta_epoch, tta_scores in oof["tta"].items():
        plain = oof["scores"][tta_epoch - 1]
        tta.append({"epoch": tta_epoch,
                    "plain": _at_own_threshold(task, y, plain, labels),
                    "tta": _at_own_threshold(task, y, tta_scores, labels)})
    cv = {"recipe": recipe, "test_time_augmentation": "mirror" if tta_chosen else None,
          "folds": int(fold_of.max()) + 1, "cells": len(y), "patients": len(set(groups)), "epoch": epoch,
          "grouped_by": grouped_by, "threshold": threshold,
          "threshold_policy": THRESHOLD_POLICY[task].replace("validation", "pooled out-of-fold"),
          "epoch_curve": curve, "tta": tta, **result, **recorded}
    if fixed_epoch:
        cv["epoch_fixed"] = {"epoch": fixed_epoch, "this_run_would_choose": own_choice,
                             "why": "chosen by an earlier run of the same recipe; GPU training is not bit-for-bit repeatable"}
    save_json(out / "cv.json", cv)
    (out / "cv.md").write_text(cv_markdown(cv))
    pooled = result["pooled"]
    print(f"cv: epoch {epoch}, threshold {threshold:.4f}: pooled out-of-fold accuracy {pooled['accuracy']:.4f} "
          f"weighted F1 {pooled['weighted_f1']:.4f} sensitivity {pooled['sensitivity']:.4f} "
          f"AUC {pooled['roc_auc']:.4f}; groups with the right majority call "
          f"{result['groups_majority_right']}/{result['groups']} -> {out / 'cv.md'}", flush=True)
    return cv


def earlier_folds(out: Path, recipe: dict, fold_of: np.ndarray, y: np.ndarray) -> dict | None:
    """The out-of-fold scores already in `out` when they come from this recipe on these folds (e.g. a
    --cv-only experiment now trained for shipping), else None."""
    try:
        same_recipe = json.loads((out / "cv.json").read_text())["recipe"] == recipe
        stored = np.load(out / "oof_scores.npz")
    except (OSError, KeyError, ValueError):
        return None
    if not (same_recipe and np.array_equal(stored["fold_of"], fold_of) and np.array_equal(stored["y"], y)):
        return None
    return {"scores": stored["scores"],
            "tta": {int(k.removeprefix("tta_epoch")): stored[k] for k in stored.files if k.startswith("tta_epoch")}}


def _at_own_threshold(task: str, y, scores, labels) -> dict:
    threshold = choose_threshold(task, y, scores)
    metrics = evaluate(y, scores, threshold, labels)
    return {k: metrics[k] for k in ("threshold", "weighted_f1", "accuracy", "roc_auc")}


def _network_and_schedule(recipe: dict) -> str:
    if recipe["backbone"] == "lite0":
        return (f"ImageNet EfficientNet-Lite0, its head alone for {recipe['frozen_epochs']} epochs at "
                f"{recipe['learning_rate']}, then every layer with cosine decay from {recipe['learning_rate'] / 20:g} "
                f"to epoch {recipe['horizon']} (Adam)")
    return (f"{recipe['backbone']} CNN width {recipe['width']}, Adam with cosine decay from {recipe['learning_rate']} "
            f"over {recipe['horizon']} epochs")


def _weighting(recipe: dict) -> str:
    parts = []
    if recipe.get("group_balance"):
        parts.append(", images weighted by 1/sqrt(images of their group)")
    if recipe.get("ema"):
        parts.append(f", the weights' moving average (EMA momentum {recipe['ema']}) scored and kept")
    return "".join(parts)


def cv_markdown(cv: dict) -> str:
    pooled, spread = cv["pooled"], cv["fold_mean_sd"]
    recipe = cv["recipe"]
    lines = [
        f"# Cross-validation by {cv['grouped_by']}: {cv['cells']} images, {cv['patients']} groups, {cv['folds']} folds",
        "",
        f"Recipe: preprocessing `{json.dumps(recipe['preprocessing'])}`, {_network_and_schedule(recipe)}, "
        f"augmentation `{recipe['augment']}`, batch {recipe['batch_size']}, balanced class weights{_weighting(recipe)}, "
        f"seed {recipe['seed']}.",
        *([f"Ensemble, scores averaged: " + "; ".join(f"`{m['run']}` (epoch {m['epoch']})" for m in recipe["ensemble_of"]) + "."]
          if "ensemble_of" in recipe else []),
        *([f"Scored with test-time augmentation ({cv['test_time_augmentation']}), inside the shipped model; "
           "the epoch is chosen among the epochs with TTA scores."] if cv.get("test_time_augmentation") else []),
        f"Chosen on pooled out-of-fold scores: epoch **{cv['epoch']}**, threshold **{cv['threshold']:.4f}** "
        f"({cv['threshold_policy']}).",
        *([f"The epoch was {cv['epoch_fixed']['why']} (this run alone would choose {cv['epoch_fixed']['this_run_would_choose']})."]
          if "epoch_fixed" in cv else []),
        "",
        "| pooled out-of-fold | value | fold mean | fold sd |",
        "|---|---|---|---|",
    ]
    for title, key in (("accuracy", "accuracy"), ("weighted F1", "weighted_f1"), ("sensitivity", "sensitivity"),
                       ("specificity", "specificity"), ("ROC AUC", "roc_auc")):
        lines.append(f"| {title} | {pooled[key]:.4f} | {spread[key]['mean']:.4f} | {spread[key]['sd']:.4f} |")
    lines += ["", f"Groups whose majority call is right: **{cv['groups_majority_right']} of {cv['groups']}**.", "",
              "| fold | groups | images | weighted F1 | sensitivity | specificity | ROC AUC |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['fold']} | {f['groups']} | {f['images']} | {f['weighted_f1']:.4f} | {f['sensitivity']:.4f} | "
              f"{f['specificity']:.4f} | {f['roc_auc']:.4f} |" for f in cv["per_fold"]]
    shown = cv["per_group"] if len(cv["per_group"]) <= 60 else [r for r in cv["per_group"] if not r["majority_right"]]
    title = "Per patient" if len(shown) == len(cv["per_group"]) else "Groups whose majority call is wrong"
    lines += ["", f"## {title} (out-of-fold)", "", "| group | label | images | mean score | called positive | majority right |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['label']} | {r['images']} | {r['mean_score']:.3f} | {r['positive_share']:.1%} | "
              f"{'yes' if r['majority_right'] else '**no**'} |" for r in shown]
    lines += ["", "## Epochs (pooled out-of-fold, each at its own best threshold)", "",
              "| epoch | accuracy | weighted F1 | ROC AUC | selection metric, 3-epoch mean |", "|---|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['accuracy']:.4f} | {r['weighted_f1']:.4f} | {r['roc_auc']:.4f} | {r['smoothed']:.4f} |"
              for r in cv["epoch_curve"]]
    lines += ["", "## Test-time augmentation (flips; quarter turns for cells)", "",
              "| epoch | accuracy plain | accuracy TTA | weighted F1 plain | weighted F1 TTA | AUC plain | AUC TTA |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['plain']['accuracy']:.4f} | {r['tta']['accuracy']:.4f} | {r['plain']['weighted_f1']:.4f} | "
              f"{r['tta']['weighted_f1']:.4f} | {r['plain']['roc_auc']:.4f} | {r['tta']['roc_auc']:.4f} |" for r in cv["tta"]]
    return "\n".join(lines) + "\n"
