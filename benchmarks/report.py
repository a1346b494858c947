"""Render a benchmark result (the dict written by `benchmark --json`) as strict JSON, a text table, Markdown, or
a PNG of latency distributions and accuracy against latency (matplotlib, imported only here)."""
from __future__ import annotations

import math

import numpy as np

from .machine import one_line


def _number(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def rows(result: dict) -> list[tuple[str, list[str]]]:
    """(row label, one cell per model) in display order."""
    models = result["models"]
    table = [
        ("precision", [m["precision"] for m in models]),
        ("file size (MB)", [_number(m["size_bytes"] / 1e6) for m in models]),
        ("MACs per inference (M)", [_number(m["macs"] / 1e6, 1) for m in models]),
        ("peak RSS, load + run (MB)", [_number(m["peak_rss_mb"], 1) for m in models]),
    ]
    for index, threads in enumerate(result["threads"]):
        runs = [m["by_threads"][index] for m in models]
        tag = f"{threads} thread{'s' if threads > 1 else ''}"
        table += [
            (f"init / first invoke (ms), {tag}", [f"{_number(r['init_ms'], 1)} / {_number(r['first_ms'], 1)}" for r in runs]),
            (f"invoke mean ± std (ms), {tag}", [f"{_number(r['latency_ms']['mean'])} ± {_number(r['latency_ms']['std'])}"
                                                for r in runs]),
            (f"invoke min/p50/p90/p99/max, {tag}",
             ["/".join(_number(r["latency_ms"][k]) for k in ("min", "p50", "p90", "p99", "max")) for r in runs]),
            (f"throughput (images/s), {tag}", [_number(r["throughput_ips"], 1) for r in runs]),
            (f"GMAC/s (% of estimated peak), {tag}",
             [f"{_number(r['gmacs_per_s'], 1)} ({_number(100 * r['peak_fraction'] if r['peak_fraction'] else None, 0)}%)"
              for r in runs]),
        ]
    if models[0]["end_to_end_ms"]:
        tag = f"{result['threads'][0]} thread{'s' if result['threads'][0] > 1 else ''}"
        table += [
            (f"end to end p50 (ms), {tag}", [_number(m["end_to_end_ms"]["p50"]) for m in models]),
            ("  " + " / ".join(models[0]["end_to_end_parts_ms"]) + " p50", [
                " / ".join(_number(v) for v in m["end_to_end_parts_ms"].values()) for m in models]),
        ]
    if models[0].get("selective"):
        table += [(f"accuracy at {share}% coverage (selective)", [_number(m["selective"][f"accuracy_at_{share}"], 4)
                                                                  for m in models]) for share in (90, 80)]
        table.append(("flagged out of domain", [str(m["selective"]["flagged_out_of_domain"]) for m in models]))
    if models[0].get("calibration"):
        table += [("ECE, 10 bins (calibration)", [_number(m["calibration"]["ece"], 4) for m in models]),
                  ("Brier score", [_number(m["calibration"]["brier"], 4) for m in models])]
    if models[0]["metrics"]:
        for key, name in (("accuracy", "accuracy"), ("weighted_f1", "weighted F1"), ("sensitivity", "sensitivity"),
                          ("specificity", "specificity"), ("roc_auc", "ROC AUC")):
            table.append((name, [_number(m["metrics"][key], 4) for m in models]))
    return table


def summary_lines(result: dict) -> list[str]:
    lines = []
    if result["agreement"] is not None:
        lines.append(f"float/int8 label agreement: {result['agreement']:.4f} on {result['data']['images']} images")
    comparison = result["comparison"]
    if comparison:
        first, second = (m["name"] for m in result["models"])
        for entry in comparison["latency_p50_ratio"]:
            lines.append(f"{first} / {second} invoke p50 at {entry['threads']} thread(s): {entry['ratio']:.2f}x")
        if comparison["accuracy_delta_points"] is not None:
            lines.append(f"{first} accuracy minus {second}: {comparison['accuracy_delta_points']:+.2f} points")
        lines.append(f"{first} file size: {100 * comparison['size_ratio']:.1f}% of {second}")
    if result["footprint"]["baseline_rss_mb"] is not None:
        lines.append(f"peak RSS of a process that imports the runtime and loads no model: "
                     f"{result['footprint']['baseline_rss_mb']:.1f} MB")
    return lines


def _header(result: dict) -> str:
    data = result["data"]
    where = (f"{data['images']} images of {data['path']}" + (f" ({data['split']} split)" if data["split"] else "")
             if data else "random inputs (no --data)")
    return (f"{result['runtime']} {result['runtime_version'] or ''}, {result['runs']} timed invokes per model after "
            f"{result['warmup']} warm-up, interleaved; {where}")


def cpu_line(result: dict) -> str:
    return f"CPU: {one_line(result['machine']['cpu'])}"


def peak_line(result: dict) -> str:
    peak = result["machine"]["peak_estimate"]
    return (f"estimated peak {_number(peak['peak_fp32_gmacs'], 1)} GMAC/s fp32, {_number(peak['peak_int8_gmacs'], 1)} "
            f"int8 ({peak['what']}; {peak['how']})")


def text_table(result: dict) -> str:
    table = rows(result)
    names = [m["name"] for m in result["models"]]
    width = max(len(label) for label, _ in table)
    cells = [max(len(name), *(len(values[i]) for _, values in table)) for i, name in enumerate(names)]
    lines = [_header(result), cpu_line(result), "", " " * width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, cells))]
    lines += [label.ljust(width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, cells)) for label, values in table]
    return "\n".join(lines + [""] + summary_lines(result))


def markdown(result: dict) -> str:
    names = [m["name"] for m in result["models"]]
    lines = [f"# Benchmark: {' vs '.join(names)}", "",
             f"`{result['command']}`", "",
             f"{_header(result)}.", "",
             f"{cpu_line(result)}; {result['machine']['platform']}, Python {result['machine']['python']}. "
             f"Load average (1 min) before / after: "
             f"{result['machine']['load_average_before'][0]:.2f} / {result['machine']['load_average_after'][0]:.2f}.", "",
             f"\"% of estimated peak\" is against the {peak_line(result)}.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows(result)]
    lines += [""] + [f"- {line}" for line in summary_lines(result)]
    return "\n".join(lines) + "\n"


def plot(result: dict, samples: dict, path: str) -> None:
    """samples[(model index, threads)] -> the timed invoke samples in ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right, coverage, reliability) = plt.subplots(1, 4, figsize=(22, 5))
    keys = sorted(samples, key=lambda key: (key[1], key[0]))
    names = [m["name"] for m in result["models"]]
    left.boxplot([samples[key] for key in keys], showfliers=True)
    left.set_xticks(range(1, len(keys) + 1), [f"{names[m]}\n{t} thr" for m, t in keys], fontsize=8)
    highest_p99 = max(run["latency_ms"]["p99"] for model in result["models"] for run in model["by_threads"])
    left.set_ylim(0, 1.15 * highest_p99)
    left.set_ylabel("invoke latency (ms; axis cut above the highest p99)")
    left.set_title(f"{result['runs']} timed invokes per model, interleaved")
    if result["models"][0]["metrics"]:
        for model in result["models"]:
            latencies = [run["latency_ms"]["p50"] for run in model["by_threads"]]
            right.plot(latencies, [model["metrics"]["accuracy"]] * len(latencies), "o-", label=model["name"])
            for run in model["by_threads"]:
                right.annotate(f"{run['threads']} thr", (run["latency_ms"]["p50"], model["metrics"]["accuracy"]),
                               textcoords="offset points", xytext=(4, 4), fontsize=8)
        right.set_xlabel("invoke latency p50 (ms)")
        right.set_ylabel("accuracy")
        right.set_title(f"accuracy on {result['data']['images']} images against latency")
        right.legend()
        for model in result["models"]:
            selective = model["selective"]
            coverage.plot(selective["coverage"], selective["accuracy"], label=model["name"])
        coverage.set_xlabel("share of images answered (most confident first; out of domain last)")
        coverage.set_ylabel("accuracy of the answered images")
        coverage.set_title("risk-coverage")
        coverage.invert_xaxis()
        coverage.legend()
        reliability.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
        for model in result["models"]:
            bins = [b for b in model["calibration"]["reliability"] if b["count"]]
            reliability.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-",
                             label=f"{model['name']} (ECE {model['calibration']['ece']:.3f})")
        reliability.set_xlabel("predicted probability of the positive class (bin mean)")
        reliability.set_ylabel("observed share positive")
        reliability.set_title("reliability diagram")
        reliability.legend()
    else:
        for axis in (right, coverage, reliability):
            axis.text(0.5, 0.5, "no --data: accuracy not measured", ha="center", va="center")
            axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def json_ready(value):
    """NaN -> None (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
