"""benchmark: an int8 TFLite model against its float32 sibling, in one run, on the same inputs.

    benchmark --model leukemia_int8.tflite --data ../shared/data/cnmc --split test --threads 1 2
    benchmark --model models/brain_int8.tflite --baseline other/brain_float32.tflite --json out.json

Measures interpreter init, first inference, then interleaved timed invokes (mean, std, min, p50,
p90, p99, max, throughput) for each thread count; the end-to-end time per image (decode,
preprocess, inference) and accuracy, weighted F1, sensitivity, specificity and float/int8
agreement on a labelled folder (--data); file size, MACs, achieved GMAC/s against an estimated
peak (benchmarks/macs.py: instruction-set arithmetic, not measured) and the peak memory of a
process that loads and runs each model. The JSON and both reports name the CPU (model and SIMD
extensions, benchmarks/machine.py). No TensorFlow: runs where edge-classify runs. Accuracy figures need
scikit-learn, --plot needs matplotlib. Exit status: 0, or 2 for a usage, model or data error.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import sys
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np

from edge.interpreter import RUNTIMES, RuntimeUnavailable, interpreter_class
from edge.args import positive_int, thread_count, unwritable_file
from edge.metadata import ModelError, read_metadata

from . import accuracy, footprint, latency, macs, report
from .report import json_ready
from .selection import UsageError, find_baseline, find_model, load_samples
from .machine import cpu_description

SCHEMA_VERSION = 2  # 2: machine.cpu is the CPU's model and SIMD; the estimated peak moved to machine.peak_estimate
RANDOM_INPUTS = 8  # inputs cycled through the timed runs when there is no --data
RUNTIME_PACKAGES = {"ai-edge-litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "tensorflow": "tensorflow"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .tflite path or a shipped name (default: the device default model)")
    parser.add_argument("--baseline", help="the float model to compare with (default: <name>_float32.tflite beside "
                                           "the model; none when the model is itself float32)")
    parser.add_argument("--data", help="labelled folder: brain yes/ and no/, or C-NMC all/ and hem/ (flat or official)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="only the images of this subset of the model's <task>_split.json (needs --data)")
    parser.add_argument("--limit", type=positive_int, help="at most this many images of --data, spread over the list")
    parser.add_argument("--runs", type=positive_int, default=200, help="timed invokes per model and thread count")
    parser.add_argument("--warmup", type=int, default=20, help="untimed invokes per model before the timed ones")
    parser.add_argument("--threads", type=thread_count, nargs="+",
                        help="thread counts to sweep (default: 1 and all cores); the first is used for --data")
    parser.add_argument("--runtime", choices=RUNTIMES, help="force a TFLite runtime (default: the first available)")
    parser.add_argument("--json", metavar="OUT", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the tables as Markdown")
    parser.add_argument("--plot", metavar="OUT", help="write a PNG: latency distributions, accuracy against latency")
    args = parser.parse_args(argv)
    args.command = shlex.join(["benchmark", *(sys.argv[1:] if argv is None else argv)])
    if args.split and not args.data:
        parser.error("--split needs --data")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


def require(module: str, needed_for: str) -> None:
    """Fail before measuring anything when an optional package is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{needed_for} needs {module} (pip install scikit-learn matplotlib, or the benchmark extra)") from None


def runtime_version(name: str) -> str | None:
    try:
        return package_metadata.version(RUNTIME_PACKAGES[name])
    except package_metadata.PackageNotFoundError:
        return None


def random_inputs(model_metadata: dict) -> np.ndarray:
    shape = model_metadata["input"]["shape"][1:]
    return np.random.default_rng(0).random((RANDOM_INPUTS, *shape), dtype=np.float32)


def check_arguments(args, metadatas: list[dict], paths: list[Path]) -> None:
    """Every usage problem found before anything is measured."""
    if len({tuple(m["labels"]) for m in metadatas}) > 1:
        raise UsageError(f"{paths[1]}: labels {metadatas[1]['labels']} differ from the model's {metadatas[0]['labels']}")
    if args.data and not os.path.isdir(args.data):
        raise UsageError(f"{args.data}: data folder not found")
    for option, out in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        problem = out and unwritable_file(out)
        if problem:
            raise UsageError(f"{option} {out}: {problem}")
    if args.data:
        require("sklearn", "--data (accuracy figures)")
    if args.plot:
        require("matplotlib", "--plot")


def measure_on_data(args, paths: list[Path], metadatas: list[dict], threads: int) -> dict:
    """Accuracy, agreement and end-to-end time over the labelled folder, with `threads` threads."""
    samples = load_samples(args, metadatas[0]["task"], paths[0], metadatas[0])
    images = latency.classify_images(paths, [s.path for s in samples], args.runtime, threads)
    if not images["used"]:
        raise UsageError(f"{args.data}: none of the {len(samples)} images could be read")
    labels = tuple(metadatas[0]["labels"])
    truth = np.array([samples[i].label for i in images["used"]])
    thresholds = [float(m["threshold"]) for m in metadatas]
    per_model = [{"metrics": accuracy.evaluate(truth, scores, threshold, labels),
                  "selective": accuracy.risk_coverage(truth, scores, threshold, flags),
                  "calibration": accuracy.calibration(truth, scores),
                  "end_to_end_ms": latency.summarize(timings["end_to_end"]),
                  "end_to_end_parts_ms": {k: float(np.median(v)) for k, v in timings.items() if k != "end_to_end"}}
                 for scores, flags, threshold, timings in zip(images["scores"], images["out_of_domain"], thresholds,
                                                              images["timings"])]
    agreement = None
    if len(paths) == 2:
        agreement = accuracy.agreement(images["scores"][0], thresholds[0], images["scores"][1], thresholds[1])
    data = {"path": str(args.data), "split": args.split, "limit": args.limit, "images": len(images["used"]),
            "per_label": {name: int(np.sum(truth == i)) for i, name in enumerate(labels)},
            "skipped": [{"path": p, "reason": r} for p, r in images["skipped"]]}
    return {"data": data, "per_model": per_model, "agreement": agreement, "inputs": images["inputs"]}


def measure_latency(args, paths: list[Path], metadatas: list[dict], inputs: list, threads: list[int],
                    model_macs: list[int], peak: dict) -> tuple[list[list[dict]], dict]:
    """-> (per model, one entry per thread count; the timed samples per (model index, threads))."""
    by_threads, samples = [[] for _ in paths], {}
    for count in threads:
        timed = latency.time_invokes(paths, inputs, args.runtime, count, args.runs, args.warmup)
        for m, measured in enumerate(timed):
            samples[(m, count)] = measured["samples_ms"]
            stats = latency.summarize(measured["samples_ms"])
            gmacs = model_macs[m] / (stats["p50"] / 1000) / 1e9
            limit = macs.peak_gmacs(peak, metadatas[m].get("precision", "float32"), count)
            by_threads[m].append({"threads": count, "init_ms": measured["init_ms"], "first_ms": measured["first_ms"],
                                  "latency_ms": stats, "throughput_ips": 1000 / stats["mean"], "gmacs_per_s": gmacs,
                                  "peak_gmacs": limit, "peak_fraction": gmacs / limit if limit else None})
    return by_threads, samples


def run(args) -> tuple[dict, dict]:
    """-> (the result dict written by --json, the timed samples per (model index, threads) for --plot)."""
    load_before = os.getloadavg()
    model_path = find_model(args.model)
    model_metadata = read_metadata(model_path)
    baseline_path = find_baseline(model_path, model_metadata, args.baseline)
    paths = [model_path] + ([baseline_path] if baseline_path else [])
    metadatas = [model_metadata] + ([read_metadata(baseline_path)] if baseline_path else [])
    check_arguments(args, metadatas, paths)
    runtime_name, _ = interpreter_class(args.runtime)
    threads = list(dict.fromkeys(args.threads or [1, os.cpu_count() or 1]))

    on_data = measure_on_data(args, paths, metadatas, threads[0]) if args.data else None
    inputs = on_data["inputs"] if on_data else [random_inputs(m) for m in metadatas]
    model_macs = [macs.count_macs(path, args.runtime)["total"] for path in paths]
    peak = macs.cpu_peak()
    by_threads, samples = measure_latency(args, paths, metadatas, inputs, threads, model_macs, peak)
    baseline_rss = footprint.peak_rss_mb(footprint.BASELINE, args.runtime)

    models = []
    for m, (path, model_meta) in enumerate(zip(paths, metadatas)):
        first = by_threads[m][0]
        no_data = {"metrics": None, "selective": None, "calibration": None, "end_to_end_ms": None, "end_to_end_parts_ms": None}
        models.append({
            "name": path.stem, "path": str(path), "precision": model_meta.get("precision", "unknown"),
            "size_bytes": path.stat().st_size, "sha256": model_meta["sha256"], "threads": first["threads"],
            "init_ms": first["init_ms"], "first_ms": first["first_ms"], "latency_ms": first["latency_ms"],
            "throughput_ips": first["throughput_ips"], "macs": model_macs[m], "gmacs_per_s": first["gmacs_per_s"],
            "peak_gmacs": first["peak_gmacs"], "peak_fraction": first["peak_fraction"],
            "peak_rss_mb": footprint.peak_rss_mb(path, args.runtime, threads[0]),
            **(on_data["per_model"][m] if on_data else no_data), "by_threads": by_threads[m],
        })
    comparison = None
    if len(models) == 2:
        first_metrics, second_metrics = models[0]["metrics"], models[1]["metrics"]
        comparison = {
            "latency_p50_ratio": [{"threads": a["threads"], "ratio": a["latency_ms"]["p50"] / b["latency_ms"]["p50"]}
                                  for a, b in zip(by_threads[0], by_threads[1])],
            "accuracy_delta_points": 100 * (first_metrics["accuracy"] - second_metrics["accuracy"]) if first_metrics else None,
            "size_ratio": models[0]["size_bytes"] / models[1]["size_bytes"],
        }
    result = {
        "schema_version": SCHEMA_VERSION, "tool": "benchmark",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": args.command,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_description(),
                    "peak_estimate": peak,
                    "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())},
        "runtime": runtime_name, "runtime_version": runtime_version(runtime_name), "threads": threads,
        "runs": args.runs, "warmup": args.warmup, "data": on_data["data"] if on_data else None,
        "footprint": {"baseline_rss_mb": baseline_rss, "what": "peak RSS of a fresh process that loads the model and "
                                                                "runs 10 invokes; baseline: one that only imports the runtime"},
        "models": models, "agreement": on_data["agreement"] if on_data else None, "comparison": comparison,
    }
    return result, samples


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result, samples = run(args)
    except (ModelError, RuntimeUnavailable, UsageError) as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    print(report.text_table(result))
    outputs = [(args.json, lambda: Path(args.json).write_text(json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n")),
               (args.markdown, lambda: Path(args.markdown).write_text(report.markdown(result))),
               (args.plot, lambda: report.plot(result, samples, args.plot))]
    failed = False
    for path, write in outputs:
        if path:
            try:
                write()
            except OSError as error:  # each output on its own: one that fails loses none of the others
                print(f"benchmark: cannot write {path} ({error.strerror or error})", file=sys.stderr)
                failed = True
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
