"""Choose the session rule (edge/summary.py SessionRule) on out-of-fold groups (patients for cells,
near-duplicate groups for MRI): each group is one session, summarised by its number of inputs and
their mean calibrated probability.

The rule's levels come from what varies between patients: the positive level lies k standard
deviations of the negative groups' means above their mean, the negative level k standard deviations
of the positive groups' means below theirs (groups with at least the minimum number of inputs, each
group counted once). The minimum and k are chosen by the calls they make on groups they were not set
on (levels set on four folds' groups, applied to the fifth's): no wrong call is the hard constraint,
then the most right calls, then the larger k. The whole choice is then judged once more on groups it
did not see (chosen on four folds' groups alone, applied to the fifth's).
The older rule (a Wilson 95% interval of the share of inputs called positive, which treats a
patient's cells as independent draws) is measured beside it the same way, for the comparison."""
from __future__ import annotations

import numpy as np

from edge.summary import SessionRule, wilson_interval

MIN_INPUTS = (1, 3, 5, 10, 20, 30, 50, 100)
SPREADS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)  # k: how many between-patient standard deviations the levels keep
LABELS01 = (0, 1)
NEVER_CALLS = SessionRule(max(MIN_INPUTS), 0.0, 1.0)
WILSON_FRACTIONS = np.round(np.arange(0.05, 0.96, 0.01), 2)


def group_table(y, probabilities, groups, threshold: float) -> dict:
    """-> {group: (true class 0/1 by majority, inputs, mean calibrated probability, inputs called positive)}."""
    table = {}
    for group in dict.fromkeys(groups):
        members = groups == group
        table[group] = (int(round(float(np.mean(y[members])))), int(members.sum()),
                        float(np.mean(probabilities[members])), int(np.sum(probabilities[members] >= threshold)))
    return table


def recorded_group_table(per_group: list[dict], labels) -> dict:
    """The same table from a verification record's per-group rows (per_group_int8)."""
    labels = list(labels)
    return {row["group"]: (labels.index(row["label"]), row["images"], row["mean_score"],
                           round(row["positive_share"] * row["images"]))
            for row in per_group}


def rule_calls(table: dict, rule: SessionRule, labels: tuple[str, str]) -> dict:
    """-> {group: (true label, call)}."""
    return {group: (labels[truth], rule.call(n, mean, labels)[0]) for group, (truth, n, mean, _) in table.items()}


def count_calls(calls: dict, labels: tuple[str, str]) -> dict:
    return {"right": sum(t == c for t, c in calls.values()), "uncertain": sum(c == "uncertain" for _, c in calls.values()),
            "wrong": sum(c in labels and c != t for t, c in calls.values())}


def rule_from_spread(table: dict, minimum: int, k: float) -> SessionRule | None:
    """Levels set k between-patient standard deviations beyond the other class's mean of group means
    (groups with at least `minimum` inputs, each group once) -> the rule, or None without both classes."""
    means = {truth: np.array([mean for t, n, mean, _ in table.values() if t == truth and n >= minimum])
             for truth in (0, 1)}
    if min(len(means[0]), len(means[1])) < 2:
        return None
    positive_from = min(1.0, float(means[0].mean() + k * means[0].std(ddof=1)))
    negative_to = max(0.0, float(means[1].mean() - k * means[1].std(ddof=1)))
    if negative_to >= positive_from:
        return None
    return SessionRule(minimum, round(negative_to, 4), round(positive_from, 4))


def best_rule(table: dict, fold_of_group: dict) -> tuple[SessionRule, dict]:
    """The minimum and k whose rules, set on the other folds' groups, call each fold's groups with no
    wrong call and the most right ones (then the larger k and minimum); the rule is then set on all the
    groups. -> (rule, {"k": k, inner held-out counts})."""
    ranked = []
    for minimum in MIN_INPUTS:
        for k in SPREADS:
            calls = held_out(table, fold_of_group, lambda seen: rule_from_spread(seen, minimum, k),
                             lambda unseen, rule: rule_calls(unseen, rule, LABELS01))
            final = rule_from_spread(table, minimum, k)
            if calls is not None and final is not None:
                counts = count_calls(calls, LABELS01)
                ranked.append(((-counts["wrong"], counts["right"], k, minimum), final, {"k": k, **counts}))
    # No wrong call is the hard constraint: when every rule calls some held-out group wrong (or there are
    # too few groups of a class), the rule that never calls wins.
    ranked.append(((0, 0, -1.0, 0), NEVER_CALLS, {"k": None, "right": 0, "uncertain": len(table), "wrong": 0}))
    _, rule, record = max(ranked, key=lambda r: r[0])
    return rule, record


def wilson_calls(table: dict, labels: tuple[str, str], fraction: float) -> dict:
    calls = {}
    for group, (truth, n, _, positives) in table.items():
        low, high = wilson_interval(positives, n)
        calls[group] = (labels[truth], labels[1] if low > fraction else labels[0] if high < fraction else "uncertain")
    return calls


def best_wilson_fraction(table: dict, labels: tuple[str, str]) -> float:
    ranked = [(count_calls(wilson_calls(table, labels, f), labels), f) for f in WILSON_FRACTIONS]
    best = min((c["wrong"], -c["right"]) for c, _ in ranked)
    return float(np.median([f for c, f in ranked if (c["wrong"], -c["right"]) == best]))


def held_out(table: dict, fold_of_group: dict, choose, calls_of) -> dict | None:
    """A rule chosen on the other folds' groups calls each fold's groups -> {group: (truth, call)}, or
    None when choose finds no rule for some fold."""
    calls = {}
    for fold in sorted(set(fold_of_group[g] for g in table)):
        rule = choose({g: row for g, row in table.items() if fold_of_group[g] != fold})
        if rule is None:
            return None
        calls.update(calls_of({g: row for g, row in table.items() if fold_of_group[g] == fold}, rule))
    return calls


def choose_session_rule(table: dict, fold_of_group: dict, labels: tuple[str, str]) -> dict:
    """-> the rule chosen on all groups, with its calls there, and both rules judged on groups they were
    not chosen on (each fold's groups called by the rule chosen on the other folds')."""
    rule, inner = best_rule(table, fold_of_group)
    calls = rule_calls(table, rule, labels)

    def chosen_elsewhere(seen: dict) -> SessionRule:
        folds = {g: fold_of_group[g] for g in seen}
        return best_rule(seen, folds)[0]

    new_held = held_out(table, fold_of_group, chosen_elsewhere, lambda t, r: rule_calls(t, r, labels))
    old_held = held_out(table, fold_of_group, lambda t: best_wilson_fraction(t, labels),
                        lambda t, f: wilson_calls(t, labels, f))
    k = "no" if inner["k"] is None else f"{inner['k']:g}"
    return {"rule": rule.as_metadata(), "spread_k": inner["k"],
            "chosen_on": (f"out-of-fold sessions, one per group ({len(table)}): levels {k} between-group "
                          "standard deviations beyond the other class's mean, the minimum and k chosen by the calls "
                          "they make on held-out folds, no wrong call first, then the most right"),
            **count_calls(calls, labels),
            "held_out": {"mean_probability_rule": count_calls(new_held, labels),
                         "wilson95_share_rule": count_calls(old_held, labels)},
            "held_out_calls": {str(g): c for g, (_, c) in new_held.items()},
            "calls": {str(g): c for g, (_, c) in calls.items()}}
