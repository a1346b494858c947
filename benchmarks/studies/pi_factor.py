"""This machine's speed against a Raspberry Pi 4, measured: the published Pi 4 figure's model run
here with the same runtime family and thread count, so a Pi figure can be turned into a target here.

    python -m benchmarks.studies.pi_factor                       # about a minute (TensorFlow builds the model)
    python -m benchmarks.studies.pi_factor --json runs/pi_factor.json

The anchor is XNNPACK's own table (README of google/XNNPACK, "Raspberry Pi", benchmarked on
2020-02-12 with end2end-bench on Raspbian Buster): MobileNet v2 1.0X, float32, 224x224 input,
randomized weights and inputs, multi-threaded (as many threads as cores: 4 on a Pi 4's
BCM2711, Cortex-A72 at 1.5 GHz), 44 ms. Here the same architecture is built by Keras
(tf.keras.applications.MobileNetV2, weights=None: random weights, which do not change the time),
converted to a float32 TFLite file in a temporary folder (about 14 MB: never written into the
repository) and timed with ai-edge-litert, whose default CPU path is the XNNPACK delegate, with
4 threads, the published figure's count. The factor is Pi time / time here: a Pi 4 figure of
T ms is T / factor ms here.

Caveats, printed with the figure: end2end-bench runs XNNPACK's own graph without the TFLite
interpreter (TFLite adds little to a 44 ms model), on Raspbian Buster (32-bit); the Pi's 4 threads
ran on 4 cores, here 4 threads share os.cpu_count() cores, so the factor at 4 threads compares
whole machines. The pipeline around the model is single-threaded Python, for which the per-core
ratio matters: no 1-thread Pi 4 figure is published, so it is bracketed by the 1-thread time here,
between 44 ms / t1 (the Pi's 4 threads no faster than 1) and 4 x 44 ms / t1 (4 threads 4 times
faster). Targets are given by the factor (the published figure's thread count) and, as the strict
reading, by the bracket's upper end. Load and CPU are printed with the figures (timings on a shared
machine are noisy: medians over interleaved runs).

Needs TensorFlow (the desktop side's .venv has it); the device side (edge/) never imports it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description, one_line

PI4_FIGURE = {"model": "MobileNet v2 1.0X", "precision": "float32", "input": 224, "ms": 44.0, "threads": 4,
              "board": "Raspberry Pi 4 (BCM2711, 4x Cortex-A72 1.5 GHz)", "tool": "XNNPACK end2end-bench",
              "source": "google/XNNPACK README, Performance / Raspberry Pi (benchmarked 2020-02-12)"}
# Targets of issue 30, as Pi 4 figures: cell mode within one frame at 30 fps; field mode at 10 fps for
# 224 px fields and 5 fps for 1280x960 frames.
PI4_TARGETS_MS = {"cell mode, end to end": 1000 / 30, "field mode, 224x224 field": 1000 / 10,
                  "field mode, 1280x960 frame": 1000 / 5}


@contextlib.contextmanager
def _quiet():
    """TensorFlow's and the converter's own lines (C++ on the file descriptors) off meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def build_mobilenet_v2(folder: Path) -> Path:
    """A float32 MobileNetV2 1.0 at 224 px (1000 classes, random weights) as a TFLite file in folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet():
        import tensorflow as tf
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        flatbuffer = converter.convert()
    path = folder / "mobilenet_v2_1.0_224_random_float32.tflite"
    path.write_bytes(flatbuffer)
    return path


def time_model(path: Path, threads: list[int], runs: int, warmup: int) -> dict[int, list[float]]:
    """Invoke times (ms) per thread count, the thread counts interleaved run by run."""
    from edge.interpreter import input_details, make_interpreter
    interpreters = {}
    for count in threads:
        interpreter, _ = make_interpreter(path, "ai-edge-litert", count)
        details = input_details(interpreter)
        interpreter.set_tensor(details["index"], np.random.default_rng(0).random(details["shape"], dtype=np.float32))
        interpreters[count] = interpreter
    for _ in range(warmup):
        for interpreter in interpreters.values():
            interpreter.invoke()
    samples = {count: [] for count in threads}
    for run in range(runs):
        for count in threads if run % 2 == 0 else threads[::-1]:
            started = time.perf_counter()
            interpreters[count].invoke()
            samples[count].append((time.perf_counter() - started) * 1000)
    return samples


def measure(runs: int = 30, warmup: int = 3, model: Path | None = None) -> dict:
    """-> the figures: medians per thread count, the factors and the targets here."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = model or build_mobilenet_v2(Path(tmp))
        threads = sorted({1, os.cpu_count() or 1, PI4_FIGURE["threads"]})
        samples = time_model(path, threads, runs, warmup)
    medians = {count: statistics.median(values) for count, values in samples.items()}
    same = medians[PI4_FIGURE["threads"]]
    factor = PI4_FIGURE["ms"] / same
    per_core = (PI4_FIGURE["ms"] / medians[1], PI4_FIGURE["threads"] * PI4_FIGURE["ms"] / medians[1])
    from importlib import metadata
    return {
        "pi4_figure": PI4_FIGURE,
        "here": {"cpu": cpu_description(), "runtime": f"ai-edge-litert {metadata.version('ai-edge-litert')}",
                 "load_average_before": [round(v, 2) for v in load_before],
                 "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "median_ms": {str(count): round(value, 2) for count, value in medians.items()},
        "p90_ms": {str(count): round(float(np.percentile(samples[count], 90)), 2) for count in samples},
        "runs": runs,
        "factor": round(factor, 2),  # Pi 4 time / time here, same model, same thread count
        "per_core_factor_range": [round(v, 2) for v in per_core],  # 44 ms / t1 .. 4 x 44 ms / t1
        "targets_here_ms": {name: round(ms / factor, 2) for name, ms in PI4_TARGETS_MS.items()},
        "targets_here_strict_ms": {name: round(ms / per_core[1], 2) for name, ms in PI4_TARGETS_MS.items()},
        "targets_pi4_ms": {name: round(ms, 1) for name, ms in PI4_TARGETS_MS.items()},
    }


def load_factor(path: str | os.PathLike | None) -> dict | None:
    """{"factor", "strict"} recorded by --json (None when there is no such file)."""
    if not path or not Path(path).is_file():
        return None
    recorded = json.loads(Path(path).read_text())
    return {"factor": float(recorded["factor"]), "strict": float(recorded["per_core_factor_range"][1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per thread count")
    parser.add_argument("--model", type=Path, help="time this float32 MobileNetV2 .tflite instead of building one")
    parser.add_argument("--json", type=Path, help="also write the figures here (e.g. runs/pi_factor.json)")
    args = parser.parse_args(argv)
    result = measure(args.runs, model=args.model)
    figure = result["pi4_figure"]
    print(f"Pi 4 anchor: {figure['model']} {figure['precision']} {figure['input']} px, {figure['threads']} threads, "
          f"{figure['ms']:g} ms ({figure['tool']}; {figure['source']})")
    print(f"here: {one_line(result['here']['cpu'])}; {result['here']['runtime']}; load average "
          f"{result['here']['load_average_before']} before, {result['here']['load_average_after']} after")
    for count, value in result["median_ms"].items():
        print(f"  MobileNetV2 float32 224 px, {count} thread(s): median {value:.1f} ms, p90 "
              f"{result['p90_ms'][count]:.1f} ms ({result['runs']} interleaved runs)")
    low, high = result["per_core_factor_range"]
    print(f"Pi factor (Pi 4 time / time here, {figure['threads']} threads): {result['factor']:.2f}; per core "
          f"between {low:.2f} and {high:.2f} (44 ms and 4 x 44 ms over the 1-thread time here)")
    print("targets (Pi 4 figure -> here, by the factor; strict: by the per-core upper end):")
    for name, ms in result["targets_pi4_ms"].items():
        print(f"  {name}: <= {ms:.1f} ms on a Pi 4 -> <= {result['targets_here_ms'][name]:.2f} ms here "
              f"(strict <= {result['targets_here_strict_ms'][name]:.2f} ms)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
