"""The cross-validation's report: the epoch and threshold chosen on pooled out-of-fold scores, the
pooled, per-fold and per-group figures (cv.json) and their Markdown (cv.md). Shared by python -m train --cv,
python -m train --ensemble and `python -m train.torch_cv report`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from train.crossval import choose_epoch, summarize
from edge.metrics import THRESHOLD_POLICY, choose_threshold, evaluate
from train.run_folder import Recipe, write_cv


def oof_report(task: str, labels, y, groups, fold_of, oof: dict, recipe: Recipe, tta_chosen: bool, grouped_by: str,
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
    cv = {"recipe": recipe.to_json(), "test_time_augmentation": "mirror" if tta_chosen else None,
          "folds": int(fold_of.max()) + 1, "cells": len(y), "patients": len(set(groups)), "epoch": epoch,
          "grouped_by": grouped_by, "threshold": threshold,
          "threshold_policy": THRESHOLD_POLICY[task].replace("validation", "pooled out-of-fold"),
          "epoch_curve": curve, "tta": tta, **result, **recorded}
    if fixed_epoch:
        cv["epoch_fixed"] = {"epoch": fixed_epoch, "this_run_would_choose": own_choice,
                             "why": "chosen by an earlier run of the same recipe; GPU training is not bit-for-bit repeatable"}
    write_cv(out, cv, cv_markdown(cv))
    pooled = result["pooled"]
    print(f"cv: epoch {epoch}, threshold {threshold:.4f}: pooled out-of-fold accuracy {pooled['accuracy']:.4f} "
          f"weighted F1 {pooled['weighted_f1']:.4f} sensitivity {pooled['sensitivity']:.4f} "
          f"AUC {pooled['roc_auc']:.4f}; groups with the right majority call "
          f"{result['groups_majority_right']}/{result['groups']} -> {out / 'cv.md'}", flush=True)
    return cv


def _at_own_threshold(task: str, y, scores, labels) -> dict:
    threshold = choose_threshold(task, y, scores)
    metrics = evaluate(y, scores, threshold, labels)
    return {k: metrics[k] for k in ("threshold", "weighted_f1", "accuracy", "roc_auc")}


def _network_and_schedule(recipe: Recipe) -> str:
    if recipe.backbone == "lite0":
        return (f"ImageNet EfficientNet-Lite0, its head alone for {recipe.frozen_epochs} epochs at "
                f"{recipe.learning_rate}, then every layer with cosine decay from {recipe.learning_rate / 20:g} "
                f"to epoch {recipe.horizon} (Adam)")
    return (f"{recipe.backbone} CNN width {recipe.width}, Adam with cosine decay from {recipe.learning_rate} "
            f"over {recipe.horizon} epochs")


def _weighting(recipe: Recipe) -> str:
    parts = []
    if recipe.group_balance:
        parts.append(", images weighted by 1/sqrt(images of their group)")
    if recipe.ema:
        parts.append(f", the weights' moving average (EMA momentum {recipe.ema}) scored and kept")
    return "".join(parts)


def cv_markdown(cv: dict) -> str:
    pooled, spread = cv["pooled"], cv["fold_mean_sd"]
    recipe = Recipe.from_json(cv["recipe"])
    lines = [
        f"# Cross-validation by {cv['grouped_by']}: {cv['cells']} images, {cv['patients']} groups, {cv['folds']} folds",
        "",
        f"Recipe: preprocessing `{json.dumps(recipe.preprocessing)}`, {_network_and_schedule(recipe)}, "
        f"augmentation `{recipe.augment}`, batch {recipe.batch_size}, balanced class weights{_weighting(recipe)}, "
        f"seed {recipe.seed}.",
        *([f"Ensemble, scores averaged: " + "; ".join(f"`{m['run']}` (epoch {m['epoch']})" for m in recipe.ensemble_of) + "."]
          if recipe.ensemble_of else []),
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
