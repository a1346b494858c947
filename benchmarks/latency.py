"""Time TFLite models side by side in one process, interleaved so machine noise hits them alike.

Two passes, both numpy-only (they run on a Pi):
- ``time_invokes``: interpreter init, first inference, warm-up, then timed bare ``invoke()`` calls,
  alternating between the models (and their order) on every run;
- ``classify_images``: the device pipeline per image (decode, quality gates, preprocess, quantize,
  invoke, dequantize, domain check: edge.classifier, what ships), each model in turn on the same
  decoded image; gives the scores for the accuracy figures and the end-to-end time by stage.
"""
from __future__ import annotations

import time

import numpy as np

from edge.images import ImageError, load_image
from edge.interpreter import input_details, make_interpreter, quantize

from .progress import progress

STATISTICS = ("mean", "std", "min", "p50", "p90", "p99", "max", "count")


def summarize(samples_ms) -> dict:
    """mean, std (population), min, p50, p90, p99 (linear interpolation), max and count of the samples."""
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max()),
            "count": int(values.size)}


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def time_invokes(model_paths: list, inputs: list[np.ndarray], runtime: str | None, threads: int,
                 runs: int, warmup: int) -> list[dict]:
    """inputs[i]: preprocessed float32 (n, h, w, c) images for model i, fed in turn.
    -> per model {"runtime", "init_ms", "first_ms", "samples_ms"} with `runs` samples each."""
    interpreters, results = [], []
    for path in model_paths:
        started = time.perf_counter()
        interpreter, runtime_name = make_interpreter(path, runtime, threads)
        results.append({"runtime": runtime_name, "init_ms": _ms_since(started)})
        interpreters.append(interpreter)
    tensor_index = [input_details(interpreter)["index"] for interpreter in interpreters]
    feeds = [[quantize(image[None], input_details(interpreter)) for image in images]
             for interpreter, images in zip(interpreters, inputs)]
    for interpreter, index, feed, result in zip(interpreters, tensor_index, feeds, results):
        interpreter.set_tensor(index, feed[0])
        started = time.perf_counter()
        interpreter.invoke()
        result["first_ms"] = _ms_since(started)
    for _ in range(warmup):
        for interpreter in interpreters:
            interpreter.invoke()
    samples = [[] for _ in model_paths]
    order = list(range(len(model_paths)))
    for run in progress(range(runs), runs, f"timed invokes, {threads} thread(s)"):
        for m in order if run % 2 == 0 else order[::-1]:
            interpreters[m].set_tensor(tensor_index[m], feeds[m][run % len(feeds[m])])
            started = time.perf_counter()
            interpreters[m].invoke()
            samples[m].append(_ms_since(started))
    return [{**result, "samples_ms": model_samples} for result, model_samples in zip(results, samples)]


def classify_images(model_paths: list, image_paths: list[str], runtime: str | None, threads: int,
                    keep_inputs: int = 32) -> dict:
    """Each image decoded once, then run through every model's device pipeline (edge.classifier:
    quality gates, preprocess, quantize, invoke, dequantize, domain check; alternating the order).
    -> {"used": indices of the decoded images, "skipped": [(path, reason)],
        "scores": per model an array of positive-class scores (one per used image),
        "out_of_domain": per model an array of the domain check's flags (False without a check),
        "timings": per model {stage: list of ms} for every pipeline stage and "end_to_end",
        "inputs": per model the first keep_inputs preprocessed images (for the timed runs)}."""
    from edge.classifier import STAGES, Classifier
    from edge.preprocess import preprocess

    classifiers = [Classifier(path, runtime=runtime, threads=threads) for path in model_paths]
    count = len(model_paths)
    scores = [[] for _ in range(count)]
    flags = [[] for _ in range(count)]
    timings = [{stage: [] for stage in (*STAGES, "end_to_end")} for _ in range(count)]
    inputs = [[] for _ in range(count)]
    used, skipped = [], []
    for i, path in enumerate(progress(image_paths, len(image_paths), "classifying images")):
        started = time.perf_counter()
        try:
            rgb = load_image(path)
        except ImageError as error:
            skipped.append((path, str(error)))
            continue
        decode_ms = _ms_since(started)
        used.append(i)
        for m in range(count) if len(used) % 2 else reversed(range(count)):
            result = classifiers[m].classify(rgb)
            scores[m].append(result.probabilities[classifiers[m].labels[1]])
            flags[m].append(bool(result.out_of_domain))
            stages = {**result.timings_ms, "decode": decode_ms}
            for stage, value in stages.items():
                timings[m][stage].append(value)
            timings[m]["end_to_end"].append(sum(stages.values()))
            if len(inputs[m]) < keep_inputs:
                inputs[m].append(preprocess(rgb, classifiers[m].preprocessing))
    timings = [{stage: values for stage, values in model.items() if values} for model in timings]
    return {"used": used, "skipped": skipped, "scores": [np.array(s, dtype=np.float64) for s in scores],
            "out_of_domain": [np.array(f, dtype=bool) for f in flags],
            "timings": timings, "inputs": [np.stack(i) if i else None for i in inputs]}
