"""Session calls of the shipped int8 models on their out-of-fold groups (patients for cells, near-duplicate
groups for MRI): the shipped rule (mean calibrated probability, levels from the spread between groups,
convert/session.py) against the older Wilson 95% rule on the share of inputs called positive, each
chosen on all groups and judged on groups it was not chosen on (chosen on four folds' groups, applied
to the fifth's). Reads the per-group figures in models/<task>_verification.json and the folds in
models/<task>_split.json.

    python -m benchmarks.studies.sessions [--models models] [--out benchmarks/SESSIONS.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from convert.session import choose_session_rule, recorded_group_table


def shipped_table(models: Path, task: str) -> tuple[dict, dict, tuple[str, str]]:
    verification = json.loads((models / f"{task}_verification.json").read_text())
    split = json.loads((models / f"{task}_split.json").read_text())
    labels = tuple(json.loads((models / f"{task}_int8.json").read_text())["labels"])
    table = recorded_group_table(verification["per_group_int8"], labels)
    fold_of_group = {sample["group"]: sample["fold"] for sample in split["samples"]}
    return table, fold_of_group, labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.sessions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", help="write the markdown here too")
    args = parser.parse_args(argv)
    lines = ["| model | groups | rule | right / uncertain / wrong (held-out folds) | wrong calls (held out) |",
             "|---|---|---|---|---|"]
    for task in ("leukemia", "brain"):
        table, fold_of_group, labels = shipped_table(Path(args.models), task)
        choice = choose_session_rule(table, fold_of_group, labels)
        rule = choice["rule"]
        wrong = sorted(g for g, call in choice["held_out_calls"].items()
                       if call in labels and call != labels[table[g][0]])
        shipped = (f"mean probability: >= {rule['min_inputs']} inputs, {labels[1]} from {rule['positive_from']:.3f}, "
                   f"{labels[0]} to {rule['negative_to']:.3f}")
        for name, counts in choice["held_out"].items():
            text = shipped if name == "mean_probability_rule" else "Wilson 95% on the share called positive"
            listed = ", ".join(wrong) if name == "mean_probability_rule" else ""
            lines.append(f"| {task} int8 | {len(table)} | {text} | {counts['right']} / {counts['uncertain']} / "
                         f"{counts['wrong']} | {listed} |")
    table_text = "\n".join(lines)
    print(table_text)
    if args.out:
        Path(args.out).write_text(f"# Session calls, `python -m benchmarks.studies.sessions`\n\n{__doc__.split(chr(10) + chr(10))[0]}"
                                  f"\n\n{table_text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
