"""A running summary of one session (a slide, a patient): counts of every kind of answer, the share
called positive with its Wilson 95% interval, the mean calibrated probability, and a call for the
whole session. A diagnosis is about a patient, not a cell.

The call follows the model's `SessionRule`, chosen out of fold with no wrong call as the hard
constraint (convert/session.py). Cells of one patient are not independent draws (one stain, one
smear, one microscope), so an interval over cells is too sure of itself: the rule instead asks for
enough inputs and a mean calibrated probability beyond levels set by how far the means of whole
patients (groups) spread out of fold. Between the two levels, or with too few inputs, the call is
`uncertain`; most inputs unlike the training data make it `out_of_domain`. Every call states why."""
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


@dataclass(frozen=True)
class SessionRule:
    """Call a session positive when at least `min_inputs` inputs were judged and their mean calibrated
    probability is at least `positive_from`; negative when it is at most `negative_to`. A level of
    exactly 1 (positive) or 0 (negative) means that side is never called."""
    min_inputs: int
    negative_to: float
    positive_from: float

    def call(self, judged: int, mean_probability: float | None, labels: tuple[str, str]) -> tuple[str, str]:
        """-> (call, why)."""
        if judged < self.min_inputs or mean_probability is None:
            return "uncertain", f"{judged} inputs judged, the rule needs at least {self.min_inputs}"
        if self.positive_from < 1 and mean_probability >= self.positive_from:
            return labels[1], f"mean probability {mean_probability:.2f} >= {self.positive_from:.2f}"
        if self.negative_to > 0 and mean_probability <= self.negative_to:
            return labels[0], f"mean probability {mean_probability:.2f} <= {self.negative_to:.2f}"
        if self.positive_from >= 1 and self.negative_to <= 0:
            return "uncertain", ("this model makes no session call: out of fold, every rule called some patient "
                                 "(group) wrong")
        return "uncertain", (f"mean probability {mean_probability:.2f} is not "
                             + " nor ".join(([f"<= {self.negative_to:.2f}"] if self.negative_to > 0 else [])
                                            + ([f">= {self.positive_from:.2f}"] if self.positive_from < 1 else []))
                             + ", where patients of both kinds were seen out of fold")

    def as_metadata(self) -> dict:
        return {"min_inputs": self.min_inputs, "negative_to": self.negative_to, "positive_from": self.positive_from}

    @classmethod
    def from_metadata(cls, record) -> "SessionRule":
        """ValueError (one line) for anything malformed."""
        if not isinstance(record, dict):
            raise ValueError("must be an object")
        minimum, low, high = record.get("min_inputs"), record.get("negative_to"), record.get("positive_from")
        if not (isinstance(minimum, int) and not isinstance(minimum, bool) and minimum >= 1):
            raise ValueError("min_inputs must be a whole number >= 1")
        for name, value in (("negative_to", low), ("positive_from", high)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a probability from 0 to 1")
        if low >= high:
            raise ValueError("negative_to must lie below positive_from")
        return cls(minimum, float(low), float(high))


@dataclass
class SessionSummary:
    labels: tuple[str, str]  # (negative, positive)
    rule: SessionRule | None  # None: no session call (the model's metadata has no rule)
    images: int = 0
    errors: int = 0
    rejected: int = 0  # refused by a quality gate
    out_of_domain: int = 0
    uncertain: int = 0  # near the threshold (in domain)
    counts: dict[str, int] = field(default_factory=dict)  # class answers
    probability_sum: float = 0.0  # over the judged inputs: class answers and uncertain ones

    def add(self, label: str | None = None, probability: float | None = None, error: bool = False) -> None:
        """One input: its answer (a class code, "uncertain", "out_of_domain" or "rejected"; None with
        error=True) and its calibrated probability of the positive class."""
        self.images += 1
        if error:
            self.errors += 1
        elif label == "rejected":
            self.rejected += 1
        elif label == "out_of_domain":
            self.out_of_domain += 1
        else:
            if label in self.labels:
                self.counts[label] = self.counts.get(label, 0) + 1
            else:
                self.uncertain += 1
            self.probability_sum += float(probability)

    @property
    def judged(self) -> int:
        return sum(self.counts.values()) + self.uncertain

    def as_dict(self) -> dict:
        negatives, positives = (self.counts.get(label, 0) for label in self.labels)
        classified = negatives + positives
        share = positives / classified if classified else None
        low, high = wilson_interval(positives, classified, NormalDist().inv_cdf(0.975))
        mean = self.probability_sum / self.judged if self.judged else None
        answered = self.images - self.errors
        if answered and self.out_of_domain + self.rejected > answered / 2:
            call, why = "out_of_domain", (f"{self.out_of_domain + self.rejected} of {answered} inputs were out of "
                                          "domain or refused by a quality gate")
        elif self.rule is None:
            call, why = "uncertain", "the model has no session rule"
        else:
            call, why = self.rule.call(self.judged, mean, self.labels)
        return {"images": self.images, "classified": classified, "errors": self.errors, "rejected": self.rejected,
                "out_of_domain": self.out_of_domain, "uncertain": self.uncertain,
                "counts": {label: self.counts.get(label, 0) for label in self.labels},
                "positive_fraction": None if share is None else round(share, 4),
                "positive_fraction_ci95": [round(low, 4), round(high, 4)],
                "mean_probability": None if mean is None else round(mean, 4),
                "rule": None if self.rule is None else self.rule.as_metadata(),
                "call": call, "call_reason": why}


def summary_line(summary: dict, spec) -> str:
    """A session summary (SessionSummary.as_dict) in plain words, with the model spec's display names."""
    names = [spec.display_name(label) for label in spec.labels]
    counts = ", ".join(f"{n} {spec.display_name(label)}" for label, n in summary["counts"].items())
    share, mean = summary["positive_fraction"], summary["mean_probability"]
    low, high = summary["positive_fraction_ci95"]
    share_text = "n/a" if share is None else f"{share:.0%} (95% CI {low:.0%}-{high:.0%}, cells taken as independent)"
    return (f"{summary['images']} inputs: {counts}, {summary['uncertain']} uncertain, {summary['out_of_domain']} out of "
            f"domain, {summary['rejected']} rejected, {summary['errors']} failed; {names[1]} share of the classified "
            f"{share_text}; mean P({names[1]}) {'n/a' if mean is None else f'{mean:.2f}'}. "
            f"Session call: {spec.display_name(summary['call'])} ({summary['call_reason']})")
