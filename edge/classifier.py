"""The device pipeline: decode -> quality gates -> preprocess -> quantize -> invoke -> dequantize ->
result, each stage timed. edge-classify, both edge-live modes, benchmark and check_models all run it.

    with Classifier("leukemia") as classifier:
        result = classifier.classify("cell.bmp")
        print(result.label, result.probability, result.reason, result.latency_ms)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from edge.images import load_image
from edge.interpreter import dequantize, feature_details, input_details, make_interpreter, output_details, quantize
from edge.metadata import ModelError, ModelSpec, load_spec
from edge.model_store import resolve_model
from edge.preprocess import preprocess
from edge.quality import quality_issues

# The answers that are not a class: near the threshold, unlike the training data, refused by a quality gate.
UNCERTAIN, OUT_OF_DOMAIN, REJECTED = "uncertain", "out_of_domain", "rejected"
NON_ANSWERS = (UNCERTAIN, OUT_OF_DOMAIN, REJECTED)
STAGES = ("decode", "quality", "preprocess", "quantize", "invoke", "dequantize", "domain")


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
        self.model_path = resolve_model(model)
        self.spec = load_spec(self.model_path)
        try:
            self.interpreter, self.runtime = make_interpreter(self.model_path, runtime, threads)
        except ValueError as error:
            raise ModelError(f"{self.model_path}: not a loadable TFLite model ({error})") from None
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

    def _scores(self, model_inputs: np.ndarray, watch: _Stopwatch) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocessed float32 (n, h, w, c) images -> (raw score outputs (logits, or probabilities for an
        older model), domain distances or None), one invoke, stages timed."""
        self._set_batch_size(len(model_inputs))
        self.interpreter.set_tensor(self._input["index"], quantize(model_inputs, self._input))
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

    def _prepare(self, image, watch: _Stopwatch) -> tuple[np.ndarray, list[str]]:
        rgb = image if isinstance(image, np.ndarray) else load_image(image)
        watch.lap("decode")
        issues = quality_issues(rgb, self.preprocessing["name"]) if self.check_quality else []
        watch.lap("quality")
        model_input = preprocess(rgb, self.preprocessing)
        watch.lap("preprocess")
        return model_input, issues

    def classify(self, image: str | os.PathLike | np.ndarray) -> Classification:
        """A file path or an HxWx3 uint8 RGB array -> Classification (raises edge.images.ImageError)."""
        watch = _Stopwatch()
        model_input, issues = self._prepare(image, watch)
        raw, distances = self._scores(model_input[None], watch)
        return self._result(float(raw[0]), None if distances is None else distances[0], issues, watch.ms)

    def classify_batch(self, images: list) -> list[Classification]:
        """Several paths or RGB arrays in one invoke (raises ImageError on the first unreadable one);
        each result's timings are its share of the batch."""
        if not images:
            return []
        watch = _Stopwatch()
        prepared = [self._prepare(image, watch) for image in images]
        raw, distances = self._scores(np.stack([model_input for model_input, _ in prepared]), watch)
        if distances is None:
            distances = [None] * len(raw)
        share = {stage: ms / len(images) for stage, ms in watch.ms.items()}
        return [self._result(float(r), d, issues, share) for r, d, (_, issues) in zip(raw, distances, prepared)]
