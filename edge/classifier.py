"""Classify images with a shipped or given TFLite model: the device-side Python API.

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
from edge.interpreter import input_details, make_interpreter, run_batch
from edge.metadata import ModelError, read_metadata
from edge.model_store import resolve_model
from edge.preprocess import preprocess
from edge.quality import quality_issues


@dataclass
class Classification:
    label: str
    score: float  # probability of the predicted label
    probabilities: dict[str, float]
    latency_ms: float  # preprocessing + inference
    issues: list[str] = field(default_factory=list)  # quality-gate reasons; empty when none
    timings_ms: dict[str, float] = field(default_factory=dict)


class Classifier:
    def __init__(self, model: str | os.PathLike | None = None, runtime: str | None = None,
                 threads: int | None = None, check_quality: bool = True):
        self.model_path = resolve_model(model)
        self.metadata = read_metadata(self.model_path)
        try:
            self.interpreter, self.runtime = make_interpreter(self.model_path, runtime, threads)
        except ValueError as error:
            raise ModelError(f"{self.model_path}: not a loadable TFLite model ({error})") from None
        self._input = input_details(self.interpreter)
        actual = [int(v) for v in self._input["shape"]]
        self._input_shape = tuple(actual)
        if actual != self.metadata["input"]["shape"]:
            raise ModelError(f"{self.model_path}: input shape {actual} does not match metadata "
                             f"{self.metadata['input']['shape']}")
        self.labels = tuple(self.metadata["labels"])
        self.threshold = float(self.metadata["threshold"])
        self.preprocessing = self.metadata["preprocessing"]
        self.check_quality = check_quality

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.interpreter = None

    def get_input_shape(self) -> tuple[int, ...]:
        """The model's input shape for one image, e.g. (1, 96, 96, 3)."""
        return self._input_shape

    def _set_batch_size(self, count: int) -> None:
        if int(self._input["shape"][0]) == count:
            return
        if count != 1 and int(self._input["shape_signature"][0]) != -1:
            raise ModelError(f"{self.model_path}: the model takes one image at a time")
        self.interpreter.resize_tensor_input(self._input["index"], [count, *self._input_shape[1:]])
        self.interpreter.allocate_tensors()
        self._input = input_details(self.interpreter)

    def positive_scores(self, model_inputs: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (n, h, w, c) images -> positive-class probabilities, one invoke."""
        self._set_batch_size(len(model_inputs))
        return run_batch(self.interpreter, model_inputs)[:, 0]

    def _result(self, positive: float, latency_ms: float, issues: list[str], timings: dict) -> Classification:
        label = self.labels[1] if positive >= self.threshold else self.labels[0]
        probabilities = {self.labels[0]: 1.0 - positive, self.labels[1]: positive}
        return Classification(label, probabilities[label], probabilities, latency_ms, issues, timings)

    def classify(self, image: str | os.PathLike | np.ndarray) -> Classification:
        """A file path or an HxWx3 uint8 RGB array -> Classification (raises edge.images.ImageError)."""
        started = time.perf_counter()
        rgb = image if isinstance(image, np.ndarray) else load_image(image)
        decoded = time.perf_counter()
        issues = quality_issues(rgb, self.preprocessing["name"]) if self.check_quality else []
        model_input = preprocess(rgb, self.preprocessing)
        prepared = time.perf_counter()
        positive = float(self.positive_scores(model_input[None])[0])
        done = time.perf_counter()
        timings = {"decode": (decoded - started) * 1000, "preprocess": (prepared - decoded) * 1000,
                   "inference": (done - prepared) * 1000}
        return self._result(positive, (done - decoded) * 1000, issues, timings)

    def classify_batch(self, images: list) -> list[Classification]:
        """Several paths or RGB arrays in one invoke (raises ImageError on the first unreadable one);
        each result's latency is its share of the batch."""
        if not images:
            return []
        started = time.perf_counter()
        rgbs = [image if isinstance(image, np.ndarray) else load_image(image) for image in images]
        decoded = time.perf_counter()
        issues = [quality_issues(rgb, self.preprocessing["name"]) if self.check_quality else [] for rgb in rgbs]
        batch = np.stack([preprocess(rgb, self.preprocessing) for rgb in rgbs])
        prepared = time.perf_counter()
        positives = self.positive_scores(batch)
        done = time.perf_counter()
        share = 1000 / len(images)
        timings = {"decode": (decoded - started) * share, "preprocess": (prepared - decoded) * share,
                   "inference": (done - prepared) * share}
        return [self._result(float(p), (done - decoded) * share, i, timings) for p, i in zip(positives, issues)]
