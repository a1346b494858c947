"""The metrics table of evaluated models, side by side (conversion's verification report, model cards)."""
from __future__ import annotations


def metrics_table(named_metrics: dict[str, dict]) -> str:
    """Markdown table, one column per evaluated thing (e.g. keras / float32 / int8)."""
    rows = [("images", "images", "{:d}"), ("accuracy", "accuracy", "{:.4f}"), ("weighted F1", "weighted_f1", "{:.4f}"),
            ("sensitivity", "sensitivity", "{:.4f}"), ("specificity", "specificity", "{:.4f}"),
            ("ROC AUC", "roc_auc", "{:.4f}"), ("threshold", "threshold", "{:.4f}")]
    lines = ["| metric | " + " | ".join(named_metrics) + " |", "|---|" + "---|" * len(named_metrics)]
    for title, key, fmt in rows:
        lines.append(f"| {title} | " + " | ".join(fmt.format(m[key]) for m in named_metrics.values()) + " |")
    return "\n".join(lines)
