"""Binary classification metrics (scikit-learn) and the decision threshold chosen on validation.

Shared by `benchmark --data` on a device (with the benchmark extra), training and conversion; the
runtime (classify, live, DICOM) never imports it, so a device without scikit-learn still classifies.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, roc_auc_score

# How each task's threshold is chosen on the validation split (never on test):
# brain screening should miss few tumours: the threshold of best balanced accuracy, lowered where
# needed until sensitivity >= 0.95; leukemia is scored by weighted F1 (the C-NMC metric).
THRESHOLD_POLICY = {
    "brain": "best validation balanced accuracy, lowered if needed to validation sensitivity >= 0.95",
    "leukemia": "threshold maximising validation weighted F1",
}


def evaluate(y_true, scores, threshold: float, labels: tuple[str, str]) -> dict:
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    y_pred = (scores >= threshold).astype(int)
    matrix = confusion_matrix(y_true, y_pred, labels=[0, 1])
    tn, fp, fn, tp = matrix.ravel()
    report = classification_report(y_true, y_pred, labels=[0, 1], target_names=list(labels),
                                   output_dict=True, zero_division=0)
    return {
        "images": int(len(y_true)),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "roc_auc": float(roc_auc_score(y_true, scores)) if len(set(y_true)) == 2 else float("nan"),
        "per_class": {name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
                      for name in labels},
        "confusion_matrix": {"labels": list(labels), "rows_true_cols_predicted": matrix.tolist()},
    }


MAX_CANDIDATES = 513


def choose_threshold(task: str, y_true, scores) -> float:
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    # every observed score is a candidate up to MAX_CANDIDATES; beyond, evenly spaced quantiles of them
    # (a few thousand pooled out-of-fold scores times 24 epochs would be millions of F1 evaluations)
    candidates = scores if len(scores) <= MAX_CANDIDATES else np.quantile(scores, np.linspace(0, 1, MAX_CANDIDATES))
    candidates = np.unique(np.concatenate([candidates, [0.5]]))
    if task == "brain":
        positives, negatives = scores[y_true == 1], scores[y_true == 0]
        sensitivity = np.array([np.mean(positives >= t) for t in candidates])
        specificity = np.array([np.mean(negatives < t) for t in candidates])
        best = int(np.argmax(sensitivity + specificity))
        if sensitivity[best] < 0.95:
            best = int(np.flatnonzero(sensitivity >= 0.95).max())
        return float(candidates[best])
    f1 = [f1_score(y_true, (scores >= t).astype(int), average="weighted", zero_division=0) for t in candidates]
    return float(candidates[int(np.argmax(f1))])


# -- calibration: do the probabilities mean what they say ------------------------------------------
CALIBRATION_BINS = 10


def reliability(probabilities: np.ndarray, y: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean predicted, observed positive share."""
    probabilities, y = np.asarray(probabilities, dtype=np.float64), np.asarray(y, dtype=np.float64)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append({"bin": [b / bins, (b + 1) / bins], "count": count,
                     "predicted": float(probabilities[members].mean()) if count else None,
                     "observed": float(y[members].mean()) if count else None})
    return rows


def expected_calibration_error(probabilities, y, bins: int = CALIBRATION_BINS) -> float:
    rows = reliability(probabilities, y, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows if r["count"]) / total)


def brier(probabilities, y) -> float:
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def calibration_scores(probabilities, y) -> dict:
    return {"ece": expected_calibration_error(probabilities, y), "brier": brier(probabilities, y),
            "reliability": reliability(probabilities, y)}
