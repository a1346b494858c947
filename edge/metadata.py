"""Model metadata: a sidecar JSON beside each .tflite (``brain_int8.tflite`` -> ``brain_int8.json``)
holding everything the device needs: labels and their display names, input, preprocessing, the
output's calibration, the threshold (on the calibrated probability), the uncertain band, the session
rule, the domain check and the SHA-256.

``load_spec`` reads it once into a checked ``ModelSpec``; ``ModelSpec.check_against(interpreter)``
compares it with the model's own tensors. Anything wrong is one ModelError line naming the file
and the field."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.calibration import Calibration
from edge.domain import DomainCheck
from edge.labels import DISPLAY_NAMES
from edge.preprocess import channels, check_preprocessing
from edge.summary import SessionRule


MAX_METADATA_BYTES = 4 << 20  # the shipped sidecars are 0.4-1.9 MB, mostly the domain statistics


class ModelError(ValueError):
    """A model that cannot be used; the message is one line."""


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(model_path: str | os.PathLike, metadata: dict) -> Path:
    path = sidecar_path(model_path)
    path.write_text(json.dumps({**metadata, "sha256": sha256_of(model_path)}, indent=2) + "\n")
    return path


def read_metadata(model_path: str | os.PathLike) -> dict:
    """The model's metadata; refuses a model whose SHA-256 differs from the record."""
    model_path = Path(model_path)
    path = sidecar_path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise ModelError(f"{path}: metadata larger than {MAX_METADATA_BYTES} bytes")
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{model_path}: metadata {path.name} not found beside the model") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: unreadable metadata ({error})") from None
    except RecursionError:
        raise ModelError(f"{path}: unreadable metadata (nested too deeply)") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read metadata ({error.strerror or error})") from None
    if not isinstance(metadata, dict):
        raise ModelError(f"{path}: metadata must be a JSON object, not {type(metadata).__name__}")
    if metadata.get("sha256") != sha256_of(model_path):
        raise ModelError(f"{model_path}: SHA-256 does not match its metadata (file changed or corrupt)")
    return metadata


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # "int8", "uint8" or "float32"
    scale: float  # 0.0 for a float tensor
    zero_point: int


@dataclass(frozen=True)
class ModelSpec:
    """What the device needs to know about a model, checked."""
    path: Path  # the .tflite file
    task: str
    labels: tuple[str, str]  # (negative, positive)
    threshold: float  # on the calibrated probability of the positive class
    preprocessing: dict
    input: TensorSpec
    output: TensorSpec  # the positive class's logit (or, in an older model, its sigmoid probability)
    features: TensorSpec | None = None  # pooled features, a second output (for the domain check)
    domain: DomainCheck | None = None
    session_rule: SessionRule | None = None  # the session call's (edge/summary.py)
    uncertain_margin: float | None = None  # "uncertain" within this distance of the threshold
    calibration: Calibration = Calibration()
    display_names: dict | None = None  # class code -> plain words (blast, normal, tumour, ...)

    @property
    def positive_label(self) -> str:
        return self.labels[1]

    def display_name(self, answer: str) -> str:
        """Plain words for a class code or a non-answer ("uncertain", "out_of_domain", "rejected")."""
        return (self.display_names or {}).get(answer) or DISPLAY_NAMES.get(answer, answer)

    def check_against(self, interpreter) -> None:
        """Raise ModelError unless the interpreter's input and output tensors are the ones described."""
        from edge.interpreter import feature_details, output_details

        outputs = interpreter.get_output_details()
        expected = 1 + (self.features is not None)
        if len(interpreter.get_input_details()) != 1 or len(outputs) != expected:
            raise ModelError(f"{self.path}: the model has {len(interpreter.get_input_details())} inputs and "
                             f"{len(outputs)} outputs; its metadata describes 1 and {expected}")
        tensors = [("input", self.input, interpreter.get_input_details()[0]),
                   ("output", self.output, output_details(interpreter))]
        if self.features is not None:
            tensors.append(("features", self.features, feature_details(interpreter)))
        for field, spec, details in tensors:
            if details is None:
                raise ModelError(f"{self.path}: the model has no {field} output")
            actual = _tensor_of(details)
            if actual.shape != spec.shape or actual.dtype != spec.dtype:
                raise ModelError(f"{self.path}: {field} is {actual.dtype} {list(actual.shape)} but its metadata "
                                 f"says {spec.dtype} {list(spec.shape)}")
            if not (math.isclose(actual.scale, spec.scale, rel_tol=1e-6) and actual.zero_point == spec.zero_point):
                raise ModelError(f"{self.path}: {field}.quantization is scale {actual.scale:g}, zero point "
                                 f"{actual.zero_point} but its metadata says {spec.scale:g}, {spec.zero_point}")


def _tensor_of(details: dict) -> TensorSpec:
    scale, zero_point = details["quantization"]
    return TensorSpec(tuple(int(v) for v in details["shape"]), np.dtype(details["dtype"]).name, float(scale),
                      int(zero_point))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tensor_spec(value, field: str, fail) -> TensorSpec:
    if not isinstance(value, dict):
        fail(field, "missing or not an object")
    shape = value.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096
                                                      for v in shape)):
        fail(f"{field}.shape", f"must be a list of positive sizes, got {json.dumps(shape)[:60]}")
    dtype = value.get("dtype")
    if dtype not in ("int8", "uint8", "float32"):
        fail(f"{field}.dtype", f"must be int8, uint8 or float32, got {json.dumps(dtype)[:60]}")
    quantization = value.get("quantization", {"scale": 0.0, "zero_point": 0})
    if not isinstance(quantization, dict):
        fail(f"{field}.quantization", "must be an object")
    scale, zero_point = quantization.get("scale"), quantization.get("zero_point")
    if not _is_number(scale) or scale < 0 or not isinstance(zero_point, int) or isinstance(zero_point, bool):
        fail(f"{field}.quantization", "needs a scale >= 0 and an integer zero_point")
    if (dtype == "float32") != (scale == 0):
        fail(f"{field}.quantization", f"a {dtype} tensor needs {'no' if dtype == 'float32' else 'a'} scale")
    return TensorSpec(tuple(shape), dtype, float(scale), zero_point)


def load_spec(model_path: str | os.PathLike) -> ModelSpec:
    """The model's checked spec (also checks the SHA-256); ModelError naming the file and field otherwise."""
    model_path = Path(model_path)
    metadata = read_metadata(model_path)
    sidecar = sidecar_path(model_path)

    def fail(field: str, problem: str):
        raise ModelError(f"{sidecar}: {field}: {problem}")

    labels = metadata.get("labels")
    if not (isinstance(labels, list) and len(labels) == 2 and all(isinstance(v, str) and v.strip() for v in labels)):
        fail("labels", f"must be two names [negative, positive], got {json.dumps(labels)[:60]}")
    if labels[0] == labels[1]:
        fail("labels", f"the two labels must differ, got {labels}")
    if "positive_label" in metadata and metadata["positive_label"] != labels[1]:
        fail("positive_label", f"{json.dumps(metadata['positive_label'])[:40]} is not the second label ({labels[1]!r})")
    threshold = metadata.get("threshold")
    if not (_is_number(threshold) and 0 < threshold < 1):
        fail("threshold", f"must be a number strictly between 0 and 1, got {json.dumps(threshold)[:40]}")
    preprocessing = metadata.get("preprocessing")
    try:
        check_preprocessing(preprocessing)
    except ValueError as error:
        fail("preprocessing", str(error))
    model_input = _tensor_spec(metadata.get("input"), "input", fail)
    model_output = _tensor_spec(metadata.get("output"), "output", fail)
    size = preprocessing["size"]
    if len(model_input.shape) != 4 or model_input.shape[1:] != (size, size, channels(preprocessing)):
        fail("input.shape", f"{list(model_input.shape)} does not fit preprocessing {preprocessing}")
    if model_output.shape[-1] != 1:
        fail("output.shape", f"{list(model_output.shape)}: one score (logit) per image is expected")
    task = metadata.get("task")
    if not isinstance(task, str):
        fail("task", "missing")
    features = domain = rule = None
    if "features" in metadata:
        features = _tensor_spec(metadata["features"], "features", fail)
        if len(features.shape) != 2 or features.shape[1] < 2:
            fail("features.shape", f"{list(features.shape)}: (1, number of features) is expected")
    if "domain" in metadata:
        if features is None:
            fail("domain", "needs a features output")
        try:
            domain = DomainCheck.from_metadata(metadata["domain"], features.shape[1])
        except ValueError as error:
            fail("domain", str(error))
    if "session" in metadata:
        try:
            rule = SessionRule.from_metadata((metadata["session"] or {}).get("rule")
                                             if isinstance(metadata["session"], dict) else None)
        except ValueError as error:
            fail("session.rule", str(error))
    margin = metadata.get("uncertain_margin")
    if margin is not None and not (_is_number(margin) and 0 <= margin < 1):
        fail("uncertain_margin", f"must be a number from 0 to 1, got {json.dumps(margin)[:40]}")
    try:
        calibration = Calibration.from_metadata(metadata.get("calibration"), metadata.get("output_kind", "probability"))
    except ValueError as error:
        fail("calibration", str(error))
    names = metadata.get("display_names")
    if names is not None and not (isinstance(names, dict) and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                                  and len(v) <= 40 for k, v in names.items())):
        fail("display_names", "must map class codes to short names")
    return ModelSpec(model_path, task, (labels[0], labels[1]), float(threshold), dict(preprocessing),
                     model_input, model_output, features, domain, rule, margin, calibration, names)
