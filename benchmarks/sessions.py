"""Session calls of the shipped int8 models on their out-of-fold groups (patients for cells, near-duplicate
groups for MRI), at three levels of the Wilson interval: the decision fraction chosen on all the groups
(as edge-convert does, at 95%), and the same choice judged on groups it did not see (chosen on four
folds' groups, applied to the fifth's). Reads the per-group tallies in models/<task>_verification.json
and the folds in models/<task>_split.json.

    python -m benchmarks.sessions [--models models] [--out benchmarks/SESSIONS.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from convert.session import best_fraction, count_calls, held_out_counts, session_calls

LEVELS = (0.90, 0.95, 0.99)


def shipped_tallies(models: Path, task: str) -> tuple[dict, dict, tuple[str, str]]:
    verification = json.loads((models / f"{task}_verification.json").read_text())
    split = json.loads((models / f"{task}_split.json").read_text())
    labels = tuple(json.loads((models / f"{task}_int8.json").read_text())["labels"])
    tallies = {row["group"]: (labels.index(row["label"]), round(row["positive_share"] * row["images"]), row["images"])
               for row in verification["per_group_int8"]}
    fold_of_group = {sample["group"]: sample["fold"] for sample in split["samples"]}
    return tallies, fold_of_group, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sessions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", help="write the markdown here too")
    args = parser.parse_args(argv)
    lines = ["| model | interval | groups | fraction chosen on all | right / uncertain / wrong (all) "
             "| right / uncertain / wrong (held-out folds) |", "|---|---|---|---|---|---|"]
    for task in ("leukemia", "brain"):
        tallies, fold_of_group, labels = shipped_tallies(Path(args.models), task)
        for level in LEVELS:
            fraction = best_fraction(tallies, labels, level)
            seen = count_calls(session_calls(tallies, labels, fraction, level), labels)
            unseen = held_out_counts(tallies, fold_of_group, labels, level)
            lines.append(f"| {task} int8 | Wilson {level:.0%} | {len(tallies)} | {fraction:.2f} "
                         f"| {seen['right']} / {seen['uncertain']} / {seen['wrong']} "
                         f"| {unseen['right']} / {unseen['uncertain']} / {unseen['wrong']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(f"Session calls, `python -m benchmarks.sessions`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
