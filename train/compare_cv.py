"""Compare cross-validation runs of python -m train --cv on their pooled out-of-fold scores, and measure
the ensemble of every pair (the two runs' fold models averaged on the same held-out patients).

    python -m train.compare_cv runs/cv/fixed_basic runs/cv/tight_basic ... --out COMPARISON.md
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from train.crossval import per_group_calls
from edge.metrics import THRESHOLD_POLICY, choose_threshold, evaluate
from train.run_folder import read_cv, read_oof_scores, read_split


def load_run(folder: Path) -> dict:
    cv = read_cv(folder)
    stored = read_oof_scores(folder)
    split = read_split(folder)
    groups = np.array([row["group"] for row in split["samples"]])
    return {"name": folder.name, "task": split["task"], "cv": cv, "y": stored["y"], "fold_of": stored["fold_of"], "groups": groups,
            "scores": stored["scores"][cv["epoch"] - 1], "tta": stored["tta"].get(cv["epoch"])}


def row(name: str, y, scores, groups, task: str) -> dict:
    labels = labels_for(task)
    threshold = choose_threshold(task, y, scores)
    metrics = evaluate(y, scores, threshold, labels)
    calls = per_group_calls(y, scores, groups, threshold, labels)
    return {"name": name, "weighted_f1": metrics["weighted_f1"], "accuracy": metrics["accuracy"],
            "roc_auc": metrics["roc_auc"], "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"],
            "threshold": threshold, "patients_right": sum(c["majority_right"] for c in calls), "patients": len(calls)}


def compare(folders: list[Path]) -> list[dict]:
    runs = [load_run(f) for f in folders]
    first = runs[0]
    for run in runs[1:]:
        if not (np.array_equal(run["fold_of"], first["fold_of"]) and np.array_equal(run["y"], first["y"])
                and run["task"] == first["task"]):
            raise ValueError(f"{run['name']} has other folds than {first['name']}: not comparable")
    rows = []
    for run in runs:
        rows.append({**row(run["name"], run["y"], run["scores"], run["groups"], run["task"]), "epoch": run["cv"]["epoch"],
                     "fold_f1_sd": run["cv"]["fold_mean_sd"]["weighted_f1"]["sd"]})
        if run["tta"] is not None:
            rows.append({**row(run["name"] + " + TTA", run["y"], run["tta"], run["groups"], run["task"]),
                         "epoch": run["cv"]["epoch"]})
    for a, b in itertools.combinations(runs, 2):
        rows.append(row(f"ensemble {a['name']} + {b['name']}", a["y"], (a["scores"] + b["scores"]) / 2, a["groups"],
                        a["task"]))
    return rows


def markdown(rows: list[dict], images: int, groups: int, task: str) -> str:
    policy = THRESHOLD_POLICY[task].replace("validation", "pooled")
    lines = [f"Pooled out-of-fold scores of {images} images in {groups} groups, the same folds for every run; each row "
             f"at its own epoch and its own threshold ({policy}).", "",
             "| run | epoch | weighted F1 | accuracy | sensitivity | specificity | ROC AUC | fold F1 sd | groups right |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = f"{r['fold_f1_sd']:.3f}" if "fold_f1_sd" in r else ""
        lines.append(f"| {r['name']} | {r.get('epoch', '')} | {r['weighted_f1']:.4f} | {r['accuracy']:.4f} | "
                     f"{r['sensitivity']:.4f} | {r['specificity']:.4f} | {r['roc_auc']:.4f} | {sd} | "
                     f"{r['patients_right']}/{r['patients']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="compare_cv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.runs)
    except (OSError, KeyError, ValueError) as error:
        print(f"compare_cv: {error}", file=sys.stderr)
        return 2
    first = load_run(args.runs[0])
    text = markdown(rows, len(first["y"]), len(set(first["groups"])), first["task"])
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
