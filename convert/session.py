"""Choose the session call's decision fraction on the out-of-fold groups (patients for cells): the
share of a session's images called positive above which the session is called positive. Each group
is one session; its call uses the Wilson interval of edge/summary.py. The fraction chosen makes
the fewest wrong calls, then the most right ones, then sits mid-way in the best range."""
from __future__ import annotations

import numpy as np

from edge.summary import SessionSummary

CANDIDATES = np.round(np.arange(0.05, 0.96, 0.01), 2)


def group_tallies(y, scores, groups, threshold: float) -> dict:
    """-> {group: (true class 0/1 by majority, images called positive, images)}."""
    tallies = {}
    for group in dict.fromkeys(groups):
        members = groups == group
        tallies[group] = (int(round(float(np.mean(y[members])))), int(np.sum(scores[members] >= threshold)),
                          int(members.sum()))
    return tallies


def session_calls(tallies: dict, labels: tuple[str, str], fraction: float, confidence: float = 0.95) -> dict:
    """-> {group: (true label, call)} with every group's images as one session."""
    calls = {}
    for group, (truth, positives, images) in tallies.items():
        summary = SessionSummary(labels, float(fraction), confidence, images=images,
                                 counts={labels[0]: images - positives, labels[1]: positives})
        calls[group] = (labels[truth], summary.as_dict()["call"])
    return calls


def count_calls(calls: dict, labels: tuple[str, str]) -> dict:
    return {"right": sum(t == c for t, c in calls.values()), "uncertain": sum(c == "uncertain" for _, c in calls.values()),
            "wrong": sum(c in labels and c != t for t, c in calls.values())}


def best_fraction(tallies: dict, labels: tuple[str, str], confidence: float = 0.95) -> float:
    ranked = []
    for fraction in CANDIDATES:
        counts = count_calls(session_calls(tallies, labels, fraction, confidence), labels)
        ranked.append((counts["wrong"], -counts["right"], fraction))
    best_wrong, best_right = min(ranked)[:2]
    return float(np.median([fraction for wrong, right, fraction in ranked if (wrong, right) == (best_wrong, best_right)]))


def held_out_counts(tallies: dict, fold_of_group: dict, labels: tuple[str, str], confidence: float = 0.95) -> dict:
    """The choice judged on groups it did not see: for each fold, the fraction chosen on the other folds'
    groups calls this fold's groups -> right, uncertain and wrong summed over the folds."""
    calls = {}
    for fold in sorted(set(fold_of_group.values())):
        seen = {g: t for g, t in tallies.items() if fold_of_group[g] != fold}
        unseen = {g: t for g, t in tallies.items() if fold_of_group[g] == fold}
        calls.update(session_calls(unseen, labels, best_fraction(seen, labels, confidence), confidence))
    return count_calls(calls, labels)


def choose_decision_fraction(y, scores, groups, threshold: float, labels: tuple[str, str]) -> dict:
    tallies = group_tallies(y, scores, groups, threshold)
    fraction = best_fraction(tallies, labels)
    calls = session_calls(tallies, labels, fraction)
    return {"decision_fraction": fraction, "interval": "wilson95",
            "chosen_on": f"out-of-fold sessions, one per group ({len(calls)})", **count_calls(calls, labels),
            "calls": {str(group): call for group, (_, call) in calls.items()}}
