"""The device pipeline: decode -> quality gates -> preprocess -> quantize -> invoke -> dequantize ->
result, each stage timed. edge-classify, both edge-live modes, benchmark and check_models all run it.

    with Classifier("leukemia") as classifier:
        result = classifier.classify("cell.bmp")
        print(result.label, result.score, result.latency_ms)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from edge.images import load_image
from edge.interpreter import dequantize, feature_details, input_details, make_interpreter, output_details, quantize
from edge.metadata import ModelError, load_spec
from edge.model_store import resolve_model
from edge.preprocess import preprocess
from edge.quality import quality_issues

UNCERTAIN = "uncertain"  # the label of an answer withheld by --abstain
STAGES = ("decode", "quality", "preprocess", "quantize", "invoke", "dequantize", "domain")


@dataclass
class Classification:
    label: str
    score: float  # probability of the predicted label
    probabilities: dict[str, float]
    latency_ms: float  # every stage from the file (or the RGB array) to the result
    issues: list[str] = field(default_factory=list)  # quality-gate reasons; empty when none
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage (STAGES)
    domain_score: float | None = None  # distance to the training features (None: the model has no check)
    out_of_domain: bool | None = None  # domain_score above the model's threshold


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
                 threads: int | None = None, check_quality: bool = True, abstain: bool = False):
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
        self.check_quality = check_quality
        if abstain and self.spec.abstain_margin is None:
            raise ModelError(f"{self.model_path}: --abstain needs abstain_margin in the model's metadata")
        self.abstain = abstain

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
        """Preprocessed float32 (n, h, w, c) images -> (positive scores, domain distances or None),
        one invoke, stages timed."""
        self._set_batch_size(len(model_inputs))
        self.interpreter.set_tensor(self._input["index"], quantize(model_inputs, self._input))
        watch.lap("quantize")
        self.interpreter.invoke()
        watch.lap("invoke")
        positives = dequantize(self.interpreter.get_tensor(self._output["index"]), self._output)[:, 0]
        watch.lap("dequantize")
        distances = None
        if self.spec.domain is not None:
            features = dequantize(self.interpreter.get_tensor(self._features["index"]), self._features)
            distances = self.spec.domain.distances(features)
            watch.lap("domain")
        return positives, distances

    def positive_scores(self, model_inputs: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (n, h, w, c) images -> positive-class probabilities, one invoke."""
        return self._scores(model_inputs, _Stopwatch())[0]

    def _result(self, positive: float, distance: float | None, issues: list[str], timings: dict) -> Classification:
        label = self.labels[1] if positive >= self.threshold else self.labels[0]
        probabilities = {self.labels[0]: 1.0 - positive, self.labels[1]: positive}
        score = probabilities[label]
        flagged = None if distance is None else bool(distance > self.spec.domain.threshold)
        if self.abstain and (flagged or abs(positive - self.threshold) < self.spec.abstain_margin):
            label = UNCERTAIN
        return Classification(label, score, probabilities, sum(timings.values()), issues, timings,
                              None if distance is None else float(distance), flagged)

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
        positives, distances = self._scores(model_input[None], watch)
        return self._result(float(positives[0]), None if distances is None else distances[0], issues, watch.ms)

    def classify_batch(self, images: list) -> list[Classification]:
        """Several paths or RGB arrays in one invoke (raises ImageError on the first unreadable one);
        each result's timings are its share of the batch."""
        if not images:
            return []
        watch = _Stopwatch()
        prepared = [self._prepare(image, watch) for image in images]
        positives, distances = self._scores(np.stack([model_input for model_input, _ in prepared]), watch)
        if distances is None:
            distances = [None] * len(positives)
        share = {stage: ms / len(images) for stage, ms in watch.ms.items()}
        return [self._result(float(p), d, issues, share) for p, d, (_, issues) in zip(positives, distances, prepared)]
