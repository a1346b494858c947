"""Cross-validation grouped by patient (leukemia) or near-duplicate group (brain): every group is held
out exactly once, each fold's model scores its held-out groups after every epoch, and the epoch and
threshold are chosen on the pooled out-of-fold scores. Fold models are kept for int8 verification."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from edge.metrics import choose_threshold, evaluate
from train.run_folder import Recipe, fold_model_path, write_oof_scores


def grouped_images(task: str, data: list[str], spec: dict, cache: str | None):
    """Every image of the task's data folders, preprocessed (cached) -> (samples kept, x, y, the group of
    each image, what the groups are): patients for cells, near-duplicate groups for MRI slices."""
    from train.arrays import cached_arrays
    from edge.datasets import find_brain_images, find_cnmc_images
    from train.splits import DUPLICATE_DISTANCE, brain_groups

    if task == "leukemia":
        samples = [s for root in data for s in find_cnmc_images(root)]
        kept, x, y, _ = cached_arrays(samples, spec, cache)
        return kept, x, y, np.array([s.patient for s in kept]), "patients"
    kept, x, y, hashes = cached_arrays(find_brain_images(data), spec, cache, with_hash=True)
    return kept, x, y, np.array(brain_groups(hashes)), f"near-duplicate groups (16x16 dHash, Hamming <= {DUPLICATE_DISTANCE})"


def group_folds(labels, groups, folds: int, seed: int) -> np.ndarray:
    """Fold number of every sample; stratified by label, no group in two folds."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(set(groups)) < folds:
        raise ValueError(f"{len(set(groups))} groups cannot make {folds} folds")
    fold_of = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold_of[held] = fold
    return fold_of


def run_folds(x, y, fold_of, task: str, recipe: Recipe, out: Path, tta_every: int = 4, groups=None) -> dict:
    """Train one model per fold for recipe.horizon epochs -> {"scores": (epochs, n) out-of-fold
    scores, "tta": {epoch: (n,) scores averaged over flips and quarter turns}, every tta_every-th epoch
    and the last}; every fold's model of every epoch is saved as out/folds/fold<k>/epoch<e>.keras."""
    from train.fitting import fit, predict

    epochs = recipe.horizon
    scores = np.full((epochs, len(y)), np.nan, dtype=np.float32)
    tta_epochs = sorted({*range(tta_every, epochs + 1, tta_every), epochs})  # the last epoch always: --tta --epochs 2 has one
    tta = {e: np.full(len(y), np.nan, dtype=np.float32) for e in tta_epochs}
    for fold in range(int(fold_of.max()) + 1):
        held = fold_of == fold
        (out / fold_model_path(fold, 1)).parent.mkdir(parents=True, exist_ok=True)

        def on_epoch(epoch, model):
            scores[epoch - 1, held] = predict(model, x[held])
            if epoch in tta:
                tta[epoch][held] = predict(model, x[held], task)
            model.save(out / fold_model_path(fold, epoch))

        fit(x[~held], y[~held], task, replace(recipe, seed=recipe.seed + fold), epochs, on_epoch,
            groups=None if groups is None else groups[~held])
        print(f"fold {fold}: {int(held.sum())} held out, epoch-{epochs} AUC "
              f"{roc_auc_score(y[held], scores[-1, held]) if len(set(y[held])) == 2 else float('nan'):.4f}", flush=True)
    write_oof_scores(out, scores, fold_of, y, tta)
    return {"scores": scores, "tta": tta}


# What the epoch is chosen by: the C-NMC metric for cells; accuracy at the sensitivity-first threshold for MRI.
SELECTION_METRIC = {"leukemia": "weighted_f1", "brain": "accuracy"}


def choose_epoch(task: str, y, scores: np.ndarray, labels) -> tuple[int, list[dict]]:
    """-> (the epoch whose pooled out-of-fold selection metric, each epoch at its own pooled threshold,
    averaged with its neighbours' is best; the curve)."""
    curve = []
    for epoch, epoch_scores in enumerate(scores, start=1):
        threshold = choose_threshold(task, y, epoch_scores)
        metrics = evaluate(y, epoch_scores, threshold, labels)
        curve.append({"epoch": epoch, "threshold": threshold, "weighted_f1": metrics["weighted_f1"],
                      "accuracy": metrics["accuracy"], "roc_auc": metrics["roc_auc"]})
    metric = np.array([row[SELECTION_METRIC[task]] for row in curve])
    for row in curve:  # one epoch's pooled score swings by several points: choose on a 3-epoch mean
        row["smoothed"] = float(metric[max(0, row["epoch"] - 2):row["epoch"] + 1].mean())
    inner = curve[1:-1] or curve  # the first and last epochs have no full window
    best = max(inner, key=lambda row: (round(row["smoothed"], 4), -row["epoch"]))
    return best["epoch"], curve


def per_group_calls(y, scores, groups, threshold: float, labels) -> list[dict]:
    """Per patient or group: cells, mean score, share called positive and whether the majority call is right."""
    rows = []
    for group in sorted(set(groups), key=lambda g: (-int(np.sum(groups == g)), str(g))):
        mask = groups == group
        positive = float(np.mean(scores[mask] >= threshold))
        label = int(y[mask][0])
        rows.append({"group": str(group), "label": labels[label], "images": int(mask.sum()),
                     "mean_score": float(scores[mask].mean()), "positive_share": positive,
                     "accuracy": float(np.mean((scores[mask] >= threshold) == y[mask])),
                     "majority_right": bool((positive > 0.5) == bool(label))})
    return rows


def summarize(task: str, y, groups, fold_of, scores: np.ndarray, threshold: float, labels) -> dict:
    """Pooled, per-fold (mean and spread) and per-group figures of one set of out-of-fold scores."""
    pooled = evaluate(y, scores, threshold, labels)
    per_fold = []
    for fold in range(int(fold_of.max()) + 1):
        held = fold_of == fold
        per_fold.append({"fold": fold, "groups": len(set(groups[held])),
                         **{k: v for k, v in evaluate(y[held], scores[held], threshold, labels).items()
                            if k in ("images", "accuracy", "weighted_f1", "sensitivity", "specificity", "roc_auc")}})
    spread = {key: {"mean": float(np.nanmean([f[key] for f in per_fold])), "sd": float(np.nanstd([f[key] for f in per_fold]))}
              for key in ("accuracy", "weighted_f1", "sensitivity", "specificity", "roc_auc")}
    calls = per_group_calls(y, scores, groups, threshold, labels)
    return {"pooled": pooled, "per_fold": per_fold, "fold_mean_sd": spread, "per_group": calls,
            "groups_majority_right": sum(r["majority_right"] for r in calls), "groups": len(calls)}
