"""The model's raw output -> a probability of the positive class that means what it says.

A converted model outputs the logit of its positive class (``output_kind: "logit"``; older models
output the sigmoid probability itself). The sidecar's ``calibration`` maps it, fitted at conversion on
the pooled out-of-fold scores (convert/calibration.py):

- ``platt``: p = sigmoid(slope * logit + intercept), scikit-learn's logistic regression on the logit;
- ``temperature``: the same with no intercept;
- ``none``: p = sigmoid(logit), the network's own (uncalibrated) probability.

Both maps are strictly increasing, so a threshold on the raw output is the same decision as the
threshold on the calibrated probability that the sidecar states.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHODS = ("platt", "temperature", "none")
OUTPUT_KINDS = ("logit", "probability")
_EDGE = 1e-7  # a probability output of exactly 0 or 1 (a saturated sigmoid) is read as this far inside


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), _EDGE, 1 - _EDGE)
    return np.log(p) - np.log1p(-p)


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class Calibration:
    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    output_kind: str = "probability"  # what the model's score output holds

    def logits(self, raw) -> np.ndarray:
        """The model's raw outputs -> their logits."""
        return np.asarray(raw, dtype=np.float64) if self.output_kind == "logit" else logit(raw)

    def probabilities(self, raw) -> np.ndarray:
        """The model's raw outputs -> calibrated probabilities of the positive class."""
        return sigmoid(self.slope * self.logits(raw) + self.intercept)

    def probability(self, raw: float) -> float:
        return float(self.probabilities(np.array([raw]))[0])

    def as_metadata(self) -> dict:
        return {"method": self.method, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_metadata(cls, record, output_kind: str) -> "Calibration":
        """ValueError (one line) for anything malformed."""
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}")
        if record is None:
            return cls(output_kind=output_kind)
        if not isinstance(record, dict) or record.get("method") not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        slope, intercept = record.get("slope", 1.0), record.get("intercept", 0.0)
        for name, value in (("slope", slope), ("intercept", intercept)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number")
        if slope <= 0:
            raise ValueError("slope must be positive (the map must keep the order of scores)")
        if record["method"] == "none" and (slope, intercept) != (1.0, 0.0):
            raise ValueError("method none takes slope 1 and intercept 0")
        return cls(record["method"], float(slope), float(intercept), output_kind)
