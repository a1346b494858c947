"""Out-of-domain check from the model itself: the distance of an image's pooled features to the
training distribution (class-conditional Gaussians with one shared covariance, after Lee et al.
2018, "A simple unified framework for detecting out-of-distribution samples"). The means, the
precision matrix and the flag threshold are fitted at conversion and stored in the model's
metadata; on the device the check is one small matrix product per image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DomainCheck:
    means: np.ndarray  # (classes, features)
    precision: np.ndarray  # (features, features), inverse of the shared covariance
    threshold: float  # a distance above this is out of domain

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(n, features) -> (n,) Mahalanobis distance to the nearest class mean."""
        centred = features[:, None, :] - self.means[None, :, :]
        squared = np.einsum("nkf,fg,nkg->nk", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def as_metadata(self) -> dict:
        return {"method": "mahalanobis", "threshold": float(self.threshold),
                "means": np.round(self.means, 6).tolist(), "precision": np.round(self.precision, 6).tolist()}

    @classmethod
    def from_metadata(cls, record: dict, features: int) -> "DomainCheck":
        """ValueError (one line) unless record holds a well-formed check for `features` features."""
        if not isinstance(record, dict) or record.get("method") != "mahalanobis":
            raise ValueError("method must be mahalanobis")
        try:
            means = np.asarray(record["means"], dtype=np.float64)
            precision = np.asarray(record["precision"], dtype=np.float64)
            threshold = float(record["threshold"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"needs numeric means, precision and threshold ({error})") from None
        if means.ndim != 2 or means.shape[1] != features or precision.shape != (features, features):
            raise ValueError(f"means must be (classes, {features}) and precision ({features}, {features})")
        if not (np.isfinite(means).all() and np.isfinite(precision).all() and np.isfinite(threshold) and threshold >= 0):
            raise ValueError("means, precision and threshold must be finite, the threshold not negative")
        return cls(means, precision, threshold)
