"""Verifying a cross-validated run's fold models: each converted like the shipped model (calibrated on
its own training folds) and scored on the images it never saw, so quantization and the out-of-domain
check are measured on images none of the models saw."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.calibration import Calibration, sigmoid
from edge.interpreter import make_interpreter, scores_and_features


def calibration_sample(x: np.ndarray, y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A stratified, seeded subset of training images for int8 calibration (never augmented)."""
    from sklearn.model_selection import train_test_split

    if count >= len(x):
        return x
    classes = len(np.unique(y))
    # a stratified split needs each side to hold every class: not so when count or what is left is tiny
    stratify = y if min(count, len(x) - count) >= classes else None
    picked, _ = train_test_split(x, train_size=count, stratify=stratify, random_state=seed)
    return picked


def outputs_of(flatbuffers: dict[str, bytes], x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(score outputs, pooled features) of every converted flatbuffer on x, with ai-edge-litert (the
    verification runtime)."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for precision, flatbuffer in flatbuffers.items():
            path = Path(folder) / f"{precision}.tflite"
            path.write_bytes(flatbuffer)
            interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
            results[precision] = scores_and_features(interpreter, x)
    return results


def logits_of(flatbuffers: dict[str, bytes], x: np.ndarray) -> dict[str, np.ndarray]:
    """The score output of every converted flatbuffer on x, as logits (an averaged model's probability
    is turned into its logit)."""
    from convert.tflite import score_output_kind

    return {precision: Calibration(output_kind=score_output_kind(flatbuffers[precision])).logits(outputs[0])
            for precision, outputs in outputs_of(flatbuffers, x).items()}


def unseen_distances(flatbuffers: dict[str, bytes], layer_sizes: list[int], x_train, y_train,
                     x_unseen) -> dict[str, np.ndarray]:
    """Per precision: the domain check fitted on the training images' features, applied to unseen ones."""
    from convert.domain import fitted_check

    train_outputs, unseen_outputs = outputs_of(flatbuffers, x_train), outputs_of(flatbuffers, x_unseen)
    return {precision: fitted_check(train_outputs[precision][1], y_train, layer_sizes).distances(unseen_outputs[precision][1])
            for precision in flatbuffers}


class FoldScores(NamedTuple):
    """Out-of-fold results of every image, each from the fold model that never saw it."""
    probabilities: dict[str, np.ndarray]  # "keras" and every precision, uncalibrated
    distances: dict[str, np.ndarray]  # out-of-domain distances of float32 and int8 (each fold's check fitted on its training folds)
    logits: dict[str, np.ndarray]  # every precision's converted model


def fold_scores(run: Path, fold_models: list[str], x: np.ndarray, y: np.ndarray, fold_of: np.ndarray,
                precisions: list[str], calibration_images: int = 1000, seed: int = 0) -> FoldScores:
    """Each fold's model (fold_models[k], relative to the run folder, scores the images of fold k) as
    Keras and as every converted precision, each quantized with its own fold's training images."""
    import keras

    from convert.tflite import convert_keras
    from train.model import with_features  # (also registers the Mirror layer of test-time-augmented models)

    pooled = {name: np.full(len(y), np.nan, dtype=np.float32) for name in ["keras", *precisions]}
    logits = {name: np.full(len(y), np.nan) for name in precisions}
    distances = {precision: np.full(len(y), np.nan) for precision in ("float32", "int8")}
    for fold, fold_model in enumerate(fold_models):
        held = fold_of == fold
        model = keras.models.load_model(Path(run) / fold_model)
        featured, layer_sizes = with_features(model)
        flatbuffers = convert_keras(featured, precisions, calibration_sample(x[~held], y[~held], calibration_images, seed))
        pooled["keras"][held] = model.predict(x[held], batch_size=256, verbose=0).ravel()
        for precision, fold_logits in logits_of(flatbuffers, x[held]).items():
            logits[precision][held] = fold_logits
            pooled[precision][held] = sigmoid(fold_logits)
        checked = {p: flatbuffers[p] for p in distances}
        for precision, fold_distances in unseen_distances(checked, layer_sizes, x[~held], y[~held], x[held]).items():
            distances[precision][held] = fold_distances
        print(f"fold {fold}: converted and scored {int(held.sum())} held-out images", flush=True)
    return FoldScores(pooled, distances, logits)
