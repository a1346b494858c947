"""python -m convert's steps, each usable alone:

1. read_run / load_images: the run folder (train/run_folder.py) and its images, preprocessed (cached)
2. convert_model: the shipped model -> float32 and full-integer int8 TFLite (and float16, dynamic)
3. verify_folds: every fold model converted the same way and scored on the images it never saw
   (convert/folds.py), with the metrics of Keras and every precision on those pooled scores
4. fit_checks: the sidecar's checks, fitted on the out-of-fold results: the domain check, the
   calibration, the threshold restated on the calibrated probability, the uncertain band, the session rule
5. write_records: the sidecars, the verification record and Markdown, the split copy, the model card

convert_run runs them in order, as python -m convert does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.folds import FoldScores, calibration_sample, fold_scores, logits_of, outputs_of
from convert.records import (checks_metadata, model_metadata, out_of_domain_record, reference_scores, tensor_summary,
                             training_record, verification_markdown, verification_record)
from edge.calibration import Calibration, logit
from edge.interpreter import feature_details, input_details, make_interpreter, output_details
from edge.metadata import sha256_of, write_metadata
from train.data_root import data_root
from edge.datasets import Sample
from train.run_folder import RunFolder

UNCERTAIN_SHARE = 0.10
REFERENCE_EVERY = 10  # the shipped model's scores on every 10th image, for check_models
CHECKED = ("float32", "int8")  # the precisions a sidecar's checks are fitted for


@dataclass
class RunImages:
    """Every image of a run's split, preprocessed as the device does, with its fold and group."""
    samples: list[Sample]
    x: np.ndarray
    y: np.ndarray
    fold_of: np.ndarray
    groups: np.ndarray


def read_run(run: str | Path, data: str | Path | None = None) -> tuple[RunFolder, Path]:
    """-> (the run folder, its images' data root); run: the folder or its model.keras."""
    root = data_root(data)
    return RunFolder.read(run, root), root


def load_images(run: RunFolder, cache: str | None) -> RunImages:
    from train.arrays import cached_arrays

    rows = run.split["samples"]
    samples, x, y, _ = cached_arrays([Sample(r["path"], r["label"], r.get("patient")) for r in rows],
                                     run.config.preprocessing, cache)
    row_of = {r["path"]: r for r in rows}
    return RunImages(samples, x, y, np.array([row_of[s.path].get("fold", -1) for s in samples]),
                     np.array([row_of[s.path]["group"] for s in samples]))


@dataclass
class Converted:
    """The shipped model's converted flatbuffers, written as files."""
    flatbuffers: dict[str, bytes]
    files: list[dict]  # file, precision, size_bytes, sha256
    tensors: dict[str, tuple[dict, dict, dict]]  # input, output, features of each precision
    layer_sizes: list[int]  # the features' layers (the domain check's)
    calibration_images: int


def convert_model(model_path: Path, out: Path, name: str, precisions: list[str], x_calibration: np.ndarray) -> Converted:
    """The model with its features output (train/model.py with_features), converted -> out/<name>_<precision>.tflite."""
    import keras

    from convert.tflite import convert_keras
    from train.model import with_features  # (also registers the Mirror layer of test-time-augmented models)

    model = keras.models.load_model(model_path)
    print(f"converting {model_path} ({', '.join(precisions)}), calibrating on {len(x_calibration)} images", flush=True)
    featured, layer_sizes = with_features(model)
    flatbuffers = convert_keras(featured, precisions, x_calibration)
    files, tensors = [], {}
    for precision, flatbuffer in flatbuffers.items():
        path = out / f"{name}_{precision}.tflite"
        path.write_bytes(flatbuffer)
        interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
        tensors[precision] = (tensor_summary(input_details(interpreter)), tensor_summary(output_details(interpreter)),
                              tensor_summary(feature_details(interpreter)))
        files.append({"file": path.name, "precision": precision, "size_bytes": path.stat().st_size,
                      "sha256": sha256_of(path)})
    return Converted(flatbuffers, files, tensors, layer_sizes, len(x_calibration))


@dataclass
class Verification:
    """The fold models' out-of-fold results and the metrics of each model on them."""
    evaluated_on: str
    folds: FoldScores
    metrics: dict[str, dict]  # keras and every precision, at the run's threshold
    agreement: float  # float32 and int8 calls that agree


def verify_folds(run: RunFolder, images: RunImages, precisions: list[str], calibration_images: int,
                 seed: int) -> Verification:
    from edge.metrics import evaluate

    config = run.config
    evaluated_on = (f"pooled out-of-fold scores of the {config.cv.folds} fold models (epoch "
                    f"{config.cv.epoch}), each converted and quantized with its own training folds' images")
    folds = fold_scores(run.path, config.cv.fold_models, images.x, images.y, images.fold_of, precisions,
                        calibration_images, seed)
    labels = tuple(config.labels)
    metrics = {key: evaluate(images.y, value, config.threshold, labels) for key, value in folds.probabilities.items()}
    predictions = {key: value >= config.threshold for key, value in folds.probabilities.items()}
    return Verification(evaluated_on, folds, metrics, float(np.mean(predictions["float32"] == predictions["int8"])))


@dataclass
class Checks:
    """Per checked precision (float32, int8): what the device checks an answer against."""
    domain: dict  # edge.domain.DomainCheck
    domain_fitted_on: str
    calibrations: dict[str, Calibration]
    calibration_records: dict[str, dict]  # the methods compared and why one was chosen
    answers: dict[str, dict]  # threshold (calibrated), uncertain_margin, session (or None)


def fit_domain_checks(converted: Converted, x_train: np.ndarray, y_train: np.ndarray,
                      unseen_distances: dict[str, np.ndarray]) -> dict:
    """The out-of-domain check on the shipped model's features of the training images, its threshold
    flagging IN_DOMAIN_FLAG_RATE of the unseen (out-of-fold) images."""
    from convert.domain import fitted_check, flag_threshold

    train_features = outputs_of({p: converted.flatbuffers[p] for p in CHECKED}, x_train)
    return {p: fitted_check(train_features[p][1], y_train, converted.layer_sizes, flag_threshold(unseen_distances[p]))
            for p in CHECKED}


def fit_calibration(logits: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> tuple[Calibration, dict]:
    """The calibration chosen and fitted on the pooled out-of-fold logits (convert/calibration.py)."""
    from convert.calibration import choose

    return choose(logits, y, fold_of)


def answer_rules(calibration: Calibration, logits: np.ndarray, y: np.ndarray, groups: np.ndarray, fold_of_group: dict,
                 threshold: float, labels: tuple[str, str]) -> dict:
    """On the calibrated out-of-fold probabilities: the threshold restated, the uncertain band, the
    session rule (chosen across folds)."""
    from convert.session import choose_session_rule, group_table

    probabilities = calibration.probabilities(logits)
    calibrated_threshold = calibration.probability(float(logit(threshold)))
    table = group_table(y, probabilities, groups, calibrated_threshold)
    return {"threshold": calibrated_threshold,
            "uncertain_margin": float(np.quantile(np.abs(probabilities - calibrated_threshold), UNCERTAIN_SHARE)),
            "session": choose_session_rule(table, fold_of_group, labels)}


def fit_checks(run: RunFolder, images: RunImages, converted: Converted, verification: Verification) -> Checks:
    config = run.config
    folds = verification.folds
    domain = fit_domain_checks(converted, images.x, images.y, folds.distances)
    fold_of_group = {r["group"]: r.get("fold", 0) for r in run.split["samples"]}
    calibrations, records, answers = {}, {}, {}
    for p in CHECKED:
        calibrations[p], records[p] = fit_calibration(folds.logits[p], images.y, images.fold_of)
        answers[p] = answer_rules(calibrations[p], folds.logits[p], images.y, images.groups, fold_of_group,
                                  config.threshold, tuple(config.labels))
    return Checks(domain, f"pooled features of the {len(images.y)} training images", calibrations, records, answers)


def write_records(out: Path, name: str, run: RunFolder, root: Path, images: RunImages, converted: Converted,
                  verification: Verification, checks: Checks, tolerance: float) -> dict:
    """The sidecar of every converted model, <name>_split.json, <name>_verification.json and .md,
    <name>_MODEL_CARD.md -> the verification record."""
    import keras
    import tensorflow

    from convert.domain import IN_DOMAIN_FLAG_RATE
    from convert.model_card import model_card
    from convert.tflite import score_output_kind
    from train.crossval import per_group_calls
    from train.splits import save_split

    config = run.config
    split_copy = out / f"{name}_split.json"
    save_split(run.split, split_copy, root)
    training = training_record(config, run.split, converted.calibration_images, split_copy.name)
    metadata = {}
    for file in converted.files:
        precision = file["precision"]
        metadata[precision] = model_metadata(name, precision, config, converted.tensors[precision],
                                             score_output_kind(converted.flatbuffers[precision]), training,
                                             verification.evaluated_on, verification.metrics[precision])
        if precision in checks.domain:
            metadata[precision].update(checks_metadata(
                config, converted.tensors[precision][2], checks.calibrations[precision],
                checks.calibration_records[precision], checks.domain[precision], checks.domain_fitted_on,
                IN_DOMAIN_FLAG_RATE, checks.answers[precision], verification.evaluated_on, UNCERTAIN_SHARE))
        write_metadata(out / file["file"], metadata[precision])

    reference = np.arange(0, len(images.y), REFERENCE_EVERY)
    shipped = logits_of({p: converted.flatbuffers[p] for p in CHECKED}, images.x[reference])
    record = verification_record(
        name, config, verification.evaluated_on, len(images.y), converted.calibration_images, verification.metrics,
        verification.agreement, tolerance, converted.files,
        reference_scores([images.samples[i].path for i in reference], images.y[reference],
                         {p: checks.calibrations[p].probabilities(shipped[p]) for p in CHECKED}, root),
        {"tensorflow": tensorflow.__version__, "keras": keras.__version__})
    record["out_of_domain"] = out_of_domain_record(checks.domain, verification.folds.distances)
    record["calibration"] = checks.calibration_records
    record["session"] = {p: checks.answers[p]["session"] for p in CHECKED}
    int8_probabilities = checks.calibrations["int8"].probabilities(verification.folds.logits["int8"])
    record["per_group_int8"] = per_group_calls(images.y, int8_probabilities, images.groups,
                                               checks.answers["int8"]["threshold"], tuple(config.labels))
    (out / f"{name}_verification.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}_verification.md").write_text(verification_markdown(record))
    (out / f"{name}_MODEL_CARD.md").write_text(model_card(name, config.task, record, metadata["int8"]))
    return record


def convert_run(run_path: str | Path, out: str | Path, name: str | None = None, precisions: list[str] | None = None,
                calibration_images: int = 1000, tolerance: float = 1.0, seed: int = 0, cache: str | None = None,
                data: str | Path | None = None) -> dict:
    """Every step in order -> the verification record (its "passed": int8 within `tolerance`
    percentage points of float32's accuracy)."""
    run, root = read_run(run_path, data)
    name = name or run.config.task
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(run, cache)
    x_calibration = calibration_sample(images.x, images.y, calibration_images, seed)
    precisions = list(precisions or CHECKED)
    converted = convert_model(run.model_path, out, name, precisions, x_calibration)
    verification = verify_folds(run, images, precisions, calibration_images, seed)
    checks = fit_checks(run, images, converted, verification)
    return write_records(out, name, run, root, images, converted, verification, checks, tolerance)

