"""Fit the device's out-of-domain check (edge/domain.py) on a model's own pooled features: class
means and one shared covariance (Ledoit-Wolf shrinkage, scikit-learn: 128 features from a few
thousand images), and the flag threshold from distances of images the fitted model never saw."""
from __future__ import annotations

import numpy as np

from edge.domain import DomainCheck

IN_DOMAIN_FLAG_RATE = 0.05  # at most this share of unseen in-domain images is flagged


def fit_statistics(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (class means (2, f), precision matrix (f, f)) of the training features."""
    from sklearn.covariance import LedoitWolf

    means = np.stack([features[y == label].mean(axis=0) for label in (0, 1)])
    covariance = LedoitWolf(assume_centered=True).fit(features - means[y])
    return means, covariance.precision_


def fitted_check(features: np.ndarray, y: np.ndarray, threshold: float = 1.0) -> DomainCheck:
    means, precision = fit_statistics(features.astype(np.float64), y)
    return DomainCheck(means, precision, threshold)


def flag_threshold(unseen_distances: np.ndarray) -> float:
    """The distance that flags IN_DOMAIN_FLAG_RATE of unseen in-domain images."""
    return float(np.quantile(unseen_distances, 1 - IN_DOMAIN_FLAG_RATE))
