"""Choose the session call's decision fraction on the out-of-fold groups (patients for cells): the
share of a session's images called positive above which the session is called positive. Each group
is one session; its call uses the Wilson 95% interval of edge/summary.py. The fraction chosen makes
the fewest wrong calls, then the most right ones, then sits mid-way in the best range."""
from __future__ import annotations

import numpy as np

from edge.summary import SessionSummary

CANDIDATES = np.round(np.arange(0.05, 0.96, 0.01), 2)


def session_calls(y, scores, groups, threshold: float, labels: tuple[str, str], fraction: float) -> dict:
    """-> {group: (true label, call)} with every group's images as one session."""
    calls = {}
    for group in dict.fromkeys(groups):
        members = groups == group
        summary = SessionSummary(labels, float(fraction))
        for score in scores[members]:
            summary.add(labels[1] if score >= threshold else labels[0])
        calls[group] = (labels[int(round(float(np.mean(y[members]))))], summary.as_dict()["call"])
    return calls


def choose_decision_fraction(y, scores, groups, threshold: float, labels: tuple[str, str]) -> dict:
    tallies = []
    for fraction in CANDIDATES:
        calls = session_calls(y, scores, groups, threshold, labels, fraction).values()
        right = sum(truth == call for truth, call in calls)
        wrong = sum(call in labels and call != truth for truth, call in calls)
        tallies.append((wrong, -right, fraction))
    best_wrong, best_right = min(tallies)[:2]
    best = [fraction for wrong, right, fraction in tallies if (wrong, right) == (best_wrong, best_right)]
    fraction = float(np.median(best))
    calls = session_calls(y, scores, groups, threshold, labels, fraction)
    return {"decision_fraction": fraction, "interval": "wilson95",
            "chosen_on": f"out-of-fold sessions, one per group ({len(calls)})",
            "right": sum(t == c for t, c in calls.values()), "uncertain": sum(c == "uncertain" for _, c in calls.values()),
            "wrong": sum(c in labels and c != t for t, c in calls.values()),
            "calls": {str(group): call for group, (_, call) in calls.items()}}
