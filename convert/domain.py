"""Fit the device's out-of-domain check (edge/domain.py) on a model's own pooled features: per layer,
class means and one shared covariance (Ledoit-Wolf shrinkage, scikit-learn: up to 128 features from
a few thousand images) and the scale that 95% of the training images are within; the flag threshold
comes from domain scores of images the fitted model never saw."""
from __future__ import annotations

import numpy as np

from edge.domain import DomainCheck, LayerStatistics

IN_DOMAIN_FLAG_RATE = 0.05  # at most this share of unseen in-domain images is flagged
LAYER_SCALE_QUANTILE = 0.95  # each layer's distances are divided by this quantile on the training images


def fit_statistics(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (class means (2, f), precision matrix (f, f)) of the training features."""
    from sklearn.covariance import LedoitWolf

    means = np.stack([features[y == label].mean(axis=0) for label in (0, 1)])
    covariance = LedoitWolf(assume_centered=True).fit(features - means[y])
    return means, covariance.precision_


def fitted_check(features: np.ndarray, y: np.ndarray, layer_sizes: list[int], threshold: float = 1.0) -> DomainCheck:
    """features: (n, sum(layer_sizes)), the layers side by side in the model's features output."""
    if sum(layer_sizes) != features.shape[1]:
        raise ValueError(f"layer sizes {layer_sizes} do not add up to {features.shape[1]} features")
    features = features.astype(np.float64)
    layers, start = [], 0
    for size in layer_sizes:
        means, precision = fit_statistics(features[:, start:start + size], y)
        unscaled = LayerStatistics(start, start + size, means, precision, 1.0)
        scale = float(np.quantile(unscaled.distances(features), LAYER_SCALE_QUANTILE))
        layers.append(LayerStatistics(start, start + size, means, precision, max(scale, 1e-6)))
        start += size
    return DomainCheck(tuple(layers), threshold)


def flag_threshold(unseen_distances: np.ndarray) -> float:
    """The domain score that flags at most IN_DOMAIN_FLAG_RATE of unseen in-domain images (one of
    them, not an interpolation between two, so the share above it never exceeds the rate)."""
    return float(np.quantile(unseen_distances, 1 - IN_DOMAIN_FLAG_RATE, method="higher"))
