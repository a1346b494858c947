"""Fit the calibration the device applies (edge/calibration.py) on pooled out-of-fold logits, and
measure it: expected calibration error (ECE), Brier score and the reliability diagram's bins.

The method is chosen by cross-validation over the same folds (each fold's calibration fitted on the
other folds' out-of-fold logits and scored on its own), lowest ECE among the maps that keep the
order of scores (temperature, Platt); the chosen map is then fitted on all of them."""
from __future__ import annotations

import numpy as np

from edge.calibration import Calibration, sigmoid
from edge.metrics import brier, calibration_scores as scores, expected_calibration_error

CANDIDATES = ("none", "temperature", "platt")


def fit(method: str, logits: np.ndarray, y: np.ndarray) -> Calibration:
    logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if method == "none":
        return Calibration("none", output_kind="logit")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000).fit(logits[:, None], y.astype(int))
        return Calibration("platt", float(model.coef_[0, 0]), float(model.intercept_[0]), "logit")
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        def loss(log_slope):
            p = np.clip(sigmoid(np.exp(log_slope) * logits), 1e-12, 1 - 1e-12)
            return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

        return Calibration("temperature", float(np.exp(minimize_scalar(loss, bounds=(-5, 5), method="bounded").x)),
                           0.0, "logit")
    raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CANDIDATES)}")


def cross_validated(method: str, logits: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Each fold's images calibrated by the map fitted on the other folds' images."""
    probabilities = np.empty(len(y))
    for fold in np.unique(fold_of):
        held = fold_of == fold
        probabilities[held] = fit(method, logits[~held], y[~held]).probabilities(logits[held])
    return probabilities


def choose(logits: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> tuple[Calibration, dict]:
    """-> (the map fitted on all out-of-fold logits with the method of lowest cross-validated ECE,
    a record: each candidate's cross-validated ECE and Brier, the chosen one's in-sample figures)."""
    compared = {}
    for method in CANDIDATES:
        held_out = cross_validated(method, logits, y, fold_of)
        compared[method] = {"ece": expected_calibration_error(held_out, y), "brier": brier(held_out, y)}
    chosen = min(("temperature", "platt"), key=lambda m: (compared[m]["ece"], compared[m]["brier"]))
    calibration = fit(chosen, logits, y)
    record = {**calibration.as_metadata(),
              "chosen_by": "lowest ECE of the order-keeping maps, each fold calibrated by the map fitted on the other "
                           "folds' out-of-fold logits",
              "compared": compared,
              "uncalibrated": scores(sigmoid(logits), y),
              "calibrated": scores(cross_validated(chosen, logits, y, fold_of), y),
              "fitted_on_all": scores(calibration.probabilities(logits), y)}
    return calibration, record
