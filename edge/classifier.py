"""The device pipeline: decode -> quality gates -> preprocess -> quantize -> invoke -> dequantize ->
result, each stage timed. edge-classify, both edge-live modes, benchmark and check_models all run it.

A frame costs little more than its model: the quality gates and the preprocessing share one pass
over the frame (edge.preprocess.brightness_profile), work on the non-black part of a bounded copy
and of the crop window only, and hand over uint8 pixels, which a lookup table turns into the
model's input tensor (the same values as quantize(pixels / 255), computed once for the 256 levels).
A batch (field mode: one frame's cells) is one invoke. The thread count, when none is given, is the
fastest measured for the model on this machine at start (interleaved invokes of 1, 2, 4 and all
cores; the fewest threads within THREAD_MARGIN of the fastest; measured once per process and model).

    with Classifier("leukemia") as classifier:
        result = classifier.classify("cell.bmp")
        print(result.label, result.probability, result.reason, result.latency_ms)
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from edge.images import load_image
from edge.interpreter import (dequantize, feature_details, input_details, interpreter_class, make_interpreter,
                              make_interpreters, output_details, quantize)
from edge.metadata import ModelError, ModelSpec, load_spec
from edge.model_store import resolve_model
from edge.preprocess import brightness_profile, preprocess_uint8
from edge.quality import quality_issues

# The answers that are not a class: near the threshold, unlike the training data, refused by a quality gate.
UNCERTAIN, OUT_OF_DOMAIN, REJECTED = "uncertain", "out_of_domain", "rejected"
NON_ANSWERS = (UNCERTAIN, OUT_OF_DOMAIN, REJECTED)
STAGES = ("decode", "quality", "preprocess", "quantize", "invoke", "dequantize", "domain")
THREAD_MARGIN = 0.10  # more threads are chosen only when they are faster than fewer by more than this
THREAD_TRIAL_INVOKES = 10  # timed invokes per thread count at start (after 2 untimed ones)
THREAD_TRIAL_BUDGET_S = 0.2  # ... or fewer, when the measurement has taken this long
_THREAD_TIMINGS: dict[tuple, dict[int, float]] = {}  # (model file, runtime, counts) -> median invoke ms


def thread_candidates(limit: int | None = None) -> list[int]:
    """The thread counts measured for a model: 1, 2, 4 and all cores, up to the cores (and limit)."""
    cores = os.cpu_count() or 1
    top = min(cores, limit) if limit else cores
    return sorted({count for count in (1, 2, 4, cores) if count <= top})


def measure_threads(model_path: str | os.PathLike, runtime: str | None = None,
                    counts: list[int] | None = None) -> tuple[dict[int, float], dict]:
    """-> ({threads: median invoke ms}, {threads: an interpreter with that many threads}): each count
    timed on a zero input, the counts interleaved so that load on the machine hits them alike. The
    timings are kept for the process (the interpreters are not)."""
    counts = counts or thread_candidates()
    interpreters, _ = make_interpreters(model_path, runtime, counts)
    for interpreter in interpreters.values():
        details = input_details(interpreter)
        interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
        interpreter.invoke()  # the first invokes prepare the delegate
        interpreter.invoke()
    samples = {count: [] for count in counts}
    started = time.perf_counter()
    for run in range(THREAD_TRIAL_INVOKES):
        for count in counts if run % 2 == 0 else counts[::-1]:
            before = time.perf_counter()
            interpreters[count].invoke()
            samples[count].append((time.perf_counter() - before) * 1000)
        if run >= 2 and time.perf_counter() - started > THREAD_TRIAL_BUDGET_S:
            break
    timings = {count: statistics.median(values) for count, values in samples.items()}
    stat = os.stat(model_path)
    _THREAD_TIMINGS[(os.path.realpath(model_path), stat.st_mtime_ns, stat.st_size, runtime, tuple(counts))] = timings
    return timings, interpreters


def fastest(timings: dict[int, float]) -> int:
    """The fewest threads whose median is within THREAD_MARGIN of the fastest."""
    best = min(timings.values())
    return min(count for count, ms in timings.items() if ms <= best * (1 + THREAD_MARGIN))


def thread_report(classifier, requested: int | None) -> str | None:
    """A line when --threads asks for more threads than the fastest measured for the model (allowed:
    said, not refused), else None."""
    if not requested or requested <= 1:
        return None
    timings = classifier.check_threads()
    best = fastest(timings)
    if requested <= best:
        return None
    measured = ", ".join(f"{count}: {ms:.2f} ms" for count, ms in sorted(timings.items()))
    return (f"--threads {requested} is above the fastest measured for {classifier.model_path.name} on this machine "
            f"({best}; median invoke {measured}); using {requested} as asked")


def _cached_timings(model_path, runtime: str | None, counts: list[int]) -> dict[int, float] | None:
    stat = os.stat(model_path)
    return _THREAD_TIMINGS.get((os.path.realpath(model_path), stat.st_mtime_ns, stat.st_size, runtime, tuple(counts)))


@dataclass
class Classification:
    label: str  # the answer: a class code, or UNCERTAIN, OUT_OF_DOMAIN or REJECTED (then `reason` says why)
    probability: float  # calibrated probability of the positive class (kept for every answer)
    probabilities: dict[str, float]  # calibrated, per class code
    latency_ms: float  # every stage from the file (or the RGB array) to the result
    issues: list[str] = field(default_factory=list)  # quality-gate reasons; empty when none
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage (STAGES)
    domain_score: float | None = None  # distance to the training features (None: the model has no check)
    out_of_domain: bool | None = None  # domain_score above the model's threshold
    model_label: str = ""  # the class the probability points to, whatever the answer
    reason: str | None = None  # why the answer is not a class (None for a class answer)

    @property
    def answered(self) -> bool:
        return self.label not in NON_ANSWERS


def answer(spec: ModelSpec, model_label: str, positive: float, distance: float | None,
           issues: list[str]) -> tuple[str, str | None]:
    """-> (the answer, why it is not a class or None): a quality gate refuses first, then the domain
    check, then the band around the threshold where the model cannot tell."""
    if issues:
        return REJECTED, "; ".join(issues)
    if distance is not None and distance > spec.domain.threshold:
        return OUT_OF_DOMAIN, (f"unlike the training images (distance {distance:.2f}, "
                               f"limit {spec.domain.threshold:.2f})")
    if spec.uncertain_margin and abs(positive - spec.threshold) < spec.uncertain_margin:
        return UNCERTAIN, (f"P({spec.display_name(spec.labels[1])}) {positive:.2f} is within {spec.uncertain_margin:.2f} "
                           f"of the threshold {spec.threshold:.2f}")
    return model_label, None


class _Stopwatch:
    """Milliseconds per named stage, each stage from the end of the previous one."""

    def __init__(self):
        self.ms: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self.last) * 1000
        self.last = now


class Classifier:
    def __init__(self, model: str | os.PathLike | None = None, runtime: str | None = None,
                 threads: int | None = None, check_quality: bool = True, label_all: bool = False):
        """threads: interpreter threads; None: the fastest measured for this model (thread_timings)."""
        self.model_path = resolve_model(model)
        self.spec = load_spec(self.model_path)
        self.thread_timings: dict[int, float] | None = None  # median invoke ms per thread count, when measured
        try:
            if threads is None:
                self.interpreter, self.runtime, threads = self._fastest_interpreter(runtime)
            else:
                self.interpreter, self.runtime = make_interpreter(self.model_path, runtime, threads)
        except ValueError as error:
            raise ModelError(f"{self.model_path}: not a loadable TFLite model ({error})") from None
        self.threads = threads
        self._runtime_choice = runtime
        self.spec.check_against(self.interpreter)
        self._input = input_details(self.interpreter)
        self._output = output_details(self.interpreter)
        self._features = feature_details(self.interpreter)
        self.labels = self.spec.labels
        self.threshold = self.spec.threshold
        self.preprocessing = self.spec.preprocessing
        self.calibration = self.spec.calibration
        self.check_quality = check_quality
        self.label_all = label_all  # every input gets a class: no uncertain, out-of-domain or rejected answer
        # pixel level 0..255 -> the input tensor's value, exactly quantize(level / 255) (identity scale for float)
        levels = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
        self._input_table = quantize(levels, self._input)
        # the shipped int8 models' input (scale 1/255, zero point -128) is the level - 128: one XOR of the bytes
        self._input_is_shifted = bool(self._input_table.dtype == np.int8 and np.array_equal(
            self._input_table, (np.arange(256) - 128).astype(np.int8)))

    def _input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels -> the input tensor, exactly self._input_table[pixels]."""
        if self._input_is_shifted:
            return pixels.view(np.int8) ^ np.int8(-128)
        return np.take(self._input_table, pixels)

    def _fastest_interpreter(self, runtime: str | None):
        """-> (interpreter, runtime name, threads): the fastest thread count measured (or remembered)."""
        counts = thread_candidates()
        if len(counts) == 1:
            interpreter, name = make_interpreter(self.model_path, runtime, 1)
            return interpreter, name, 1
        timings = _cached_timings(self.model_path, runtime, counts)
        if timings is None:
            timings, interpreters = measure_threads(self.model_path, runtime, counts)
            chosen = fastest(timings)
            name, _ = interpreter_class(runtime)
            interpreter = interpreters[chosen]
        else:
            chosen = fastest(timings)
            interpreter, name = make_interpreter(self.model_path, runtime, chosen)
        self.thread_timings = timings
        return interpreter, name, chosen

    def check_threads(self) -> dict[int, float]:
        """Median invoke ms per thread count up to max(self.threads, all cores), measured now unless
        known; the caller can say when self.threads is slower than fastest(timings)."""
        if self.thread_timings is None or self.threads not in self.thread_timings:
            counts = sorted(set(thread_candidates()) | {self.threads})
            self.thread_timings = (_cached_timings(self.model_path, self._runtime_choice, counts)
                                   or measure_threads(self.model_path, self._runtime_choice, counts)[0])
        return self.thread_timings

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.interpreter = None

    def get_input_shape(self) -> tuple[int, ...]:
        """The model's input shape for one image, e.g. (1, 96, 96, 3)."""
        return self.spec.input.shape

    def _set_batch_size(self, count: int) -> None:
        if int(self._input["shape"][0]) == count:
            return
        if count != 1 and int(self._input["shape_signature"][0]) != -1:
            raise ModelError(f"{self.model_path}: the model takes one image at a time")
        self.interpreter.resize_tensor_input(self._input["index"], [count, *self.spec.input.shape[1:]])
        self.interpreter.allocate_tensors()
        self._input = input_details(self.interpreter)
        self._output = output_details(self.interpreter)
        self._features = feature_details(self.interpreter)

    def _scores(self, pixels: np.ndarray, watch: _Stopwatch) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocessed uint8 (n, h, w, c) pixels -> (raw score outputs (logits, or probabilities for an
        older model), domain distances or None), one invoke, stages timed."""
        self._set_batch_size(len(pixels))
        self.interpreter.set_tensor(self._input["index"], self._input_tensor(pixels))
        watch.lap("quantize")
        self.interpreter.invoke()
        watch.lap("invoke")
        raw = dequantize(self.interpreter.get_tensor(self._output["index"]), self._output)[:, 0]
        watch.lap("dequantize")
        distances = None
        if self.spec.domain is not None:
            features = dequantize(self.interpreter.get_tensor(self._features["index"]), self._features)
            distances = self.spec.domain.distances(features)
            watch.lap("domain")
        return raw, distances

    def _result(self, raw: float, distance: float | None, issues: list[str], timings: dict) -> Classification:
        positive = self.calibration.probability(raw)
        model_label = self.labels[1] if positive >= self.threshold else self.labels[0]
        flagged = None if distance is None else bool(distance > self.spec.domain.threshold)
        label, reason = model_label, None
        if not self.label_all:
            label, reason = answer(self.spec, model_label, positive, distance, issues)
        return Classification(label, positive, {self.labels[0]: 1.0 - positive, self.labels[1]: positive},
                              sum(timings.values()), issues, timings, None if distance is None else float(distance),
                              flagged, model_label, reason)

    def _prepare(self, image, watch: _Stopwatch, prepare=None) -> tuple[np.ndarray, list[str]]:
        """-> (the preprocessed uint8 pixels, quality issues). prepare: see classify_batch."""
        if prepare is not None:
            pixels, copy = prepare(image)
            watch.lap("preprocess")
            issues = quality_issues(copy, self.preprocessing["name"]) if self.check_quality else []
            watch.lap("quality")
            return pixels, issues
        rgb = image if isinstance(image, np.ndarray) else load_image(image)
        watch.lap("decode")
        profile, issues = None, []
        if self.check_quality and isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.dtype == np.uint8:
            profile = brightness_profile(rgb)  # one pass over the frame, for the gates and the crop
            issues = quality_issues(rgb, self.preprocessing["name"], profile)
        watch.lap("quality")
        pixels = preprocess_uint8(rgb, self.preprocessing, profile)
        watch.lap("preprocess")
        return pixels, issues

    def classify(self, image: str | os.PathLike | np.ndarray) -> Classification:
        """A file path or an HxWx3 uint8 RGB array -> Classification (raises edge.images.ImageError)."""
        watch = _Stopwatch()
        pixels, issues = self._prepare(image, watch)
        raw, distances = self._scores(pixels[None], watch)
        return self._result(float(raw[0]), None if distances is None else distances[0], issues, watch.ms)

    def classify_batch(self, images: list, prepare=None) -> list[Classification]:
        """Several paths or RGB arrays in one invoke (raises ImageError on the first unreadable one);
        each result's timings are its share of the batch. prepare: a function image -> (the model's
        uint8 input, the image the quality gates measure) in place of preprocessing (field mode's
        cells at the training magnification: edge.field.model_input)."""
        if not images:
            return []
        watch = _Stopwatch()
        prepared = [self._prepare(image, watch, prepare) for image in images]
        raw, distances = self._scores(np.stack([pixels for pixels, _ in prepared]), watch)
        if distances is None:
            distances = [None] * len(raw)
        share = {stage: ms / len(images) for stage, ms in watch.ms.items()}
        return [self._result(float(r), d, issues, share) for r, d, (_, issues) in zip(raw, distances, prepared)]
