"""A running summary of one session (a slide, a patient): counts over the in-domain results, the
share called positive with its Wilson 95% interval, and a call for the whole session.

The call is the positive label when the interval lies above the model's decision fraction, the
negative label when it lies below, `uncertain` when it straddles it, and `out_of_domain` when most
inputs were flagged as unlike the training data. A diagnosis is about a patient, not a cell."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(positives: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good at small counts and near 0 or 1)."""
    if total == 0:
        return 0.0, 1.0
    share = positives / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class SessionSummary:
    labels: tuple[str, str]  # (negative, positive)
    decision_fraction: float  # a session whose positive share is clearly above this is called positive
    confidence: float = 0.95  # of the Wilson interval that must clear the decision fraction
    images: int = 0
    errors: int = 0
    out_of_domain: int = 0
    abstained: int = 0  # answered "uncertain" (near the threshold) and in domain
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, label: str | None = None, out_of_domain: bool = False, error: bool = False) -> None:
        """One input: its label (None with error=True), and whether it was flagged out of domain."""
        self.images += 1
        if error:
            self.errors += 1
        elif out_of_domain:
            self.out_of_domain += 1
        elif label in self.labels:
            self.counts[label] = self.counts.get(label, 0) + 1
        else:
            self.abstained += 1

    def as_dict(self) -> dict:
        negatives, positives = (self.counts.get(label, 0) for label in self.labels)
        classified = negatives + positives
        share = positives / classified if classified else None
        low, high = wilson_interval(positives, classified, NormalDist().inv_cdf(0.5 + self.confidence / 2))
        if self.out_of_domain > (self.images - self.errors) / 2:
            call = "out_of_domain"
        elif classified and low > self.decision_fraction:
            call = self.labels[1]
        elif classified and high < self.decision_fraction:
            call = self.labels[0]
        else:
            call = "uncertain"
        return {"images": self.images, "classified": classified, "errors": self.errors,
                "out_of_domain": self.out_of_domain, "uncertain": self.abstained,
                "counts": {label: self.counts.get(label, 0) for label in self.labels},
                "positive_fraction": None if share is None else round(share, 4),
                "positive_fraction_ci95": [round(low, 4), round(high, 4)],
                "decision_fraction": self.decision_fraction, "call": call}
