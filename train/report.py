"""Write a run's evaluation: JSON, Markdown, training curves and confusion matrix PNGs."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def metrics_table(named_metrics: dict[str, dict]) -> str:
    """Markdown table, one column per evaluated thing (e.g. keras / float32 / int8)."""
    rows = [("images", "images", "{:d}"), ("accuracy", "accuracy", "{:.4f}"), ("weighted F1", "weighted_f1", "{:.4f}"),
            ("sensitivity", "sensitivity", "{:.4f}"), ("specificity", "specificity", "{:.4f}"),
            ("ROC AUC", "roc_auc", "{:.4f}"), ("threshold", "threshold", "{:.4f}")]
    lines = ["| metric | " + " | ".join(named_metrics) + " |", "|---|" + "---|" * len(named_metrics)]
    for title, key, fmt in rows:
        lines.append(f"| {title} | " + " | ".join(fmt.format(m[key]) for m in named_metrics.values()) + " |")
    return "\n".join(lines)


def _per_class_table(metrics: dict) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, m in metrics["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1-score']:.4f} | {int(m['support'])} |")
    return "\n".join(lines)


def _confusion_table(metrics: dict) -> str:
    names = metrics["confusion_matrix"]["labels"]
    matrix = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(names, matrix)]
    return "\n".join(lines)


def _per_patient_table(metrics: dict) -> list[str]:
    if "per_patient" not in metrics:
        return []
    lines = ["## Test, per patient", "", "| patient | label | cells | mean positive score | accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['label']} | {r['images']} | {r['mean_score']:.3f} | {r['accuracy']:.3f} |"
              for r in metrics["per_patient"]]
    return lines + [""]


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    keys = [k for k in ("loss", "auc", "accuracy") if k in history]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5))
    for axis, key in zip(np.atleast_1d(axes), keys):
        axis.plot(history[key], label="train")
        if f"val_{key}" in history:
            axis.plot(history[f"val_{key}"], label="validation")
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(metrics: dict, path: Path, title: str) -> None:
    matrix = np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"])
    display = ConfusionMatrixDisplay(matrix, display_labels=metrics["confusion_matrix"]["labels"])
    display.plot(cmap="Blues", colorbar=False)
    display.ax_.set_title(title)
    display.figure_.tight_layout()
    display.figure_.savefig(path, dpi=100)
    plt.close(display.figure_)


def write_report(out: Path, task: str, config: dict, split_summary: dict, test: dict, val: dict,
                 history: dict[str, list[float]]) -> None:
    out = Path(out)
    report = {"task": task, "test": test, "validation": val, "split": split_summary, "config": config}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_history(history, out / "curves.png")
    plot_confusion(test, out / "confusion.png", f"{task}: held-out test split")
    split_lines = [f"| {name} | {s['images']} | {s['groups']} | " + " / ".join(
        f"{config['labels'][int(k)]} {v}" for k, v in s["per_label"].items()) + " |" for name, s in split_summary.items()]
    text = [
        f"# {task}: evaluation on the held-out test split",
        "",
        f"Split by {config['grouped_by']}, seed {config['seed']}; no test image or group was seen in training, "
        "early stopping or threshold choice.",
        "",
        "| subset | images | groups | per label |",
        "|---|---|---|---|",
        *split_lines,
        "",
        f"Decision threshold {test['threshold']:.4f}: {config['threshold_policy']}.",
        "",
        metrics_table({"validation": val, "test": test}),
        "",
        "## Test, per class",
        "",
        _per_class_table(test),
        "",
        "## Test confusion matrix",
        "",
        _confusion_table(test),
        "",
        *_per_patient_table(test),
        "![training curves](curves.png) ![confusion matrix](confusion.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
