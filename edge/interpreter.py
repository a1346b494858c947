"""Small pure functions around a TFLite interpreter (in the spirit of pycoral's adapters).

The interpreter comes from ai-edge-litert, else tflite-runtime, else tensorflow.lite (desktop
only); TensorFlow is imported only as that last resort, never by default.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

import numpy as np

from edge.model_file import check_model_file

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
_MODULES = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite.python.interpreter",
}


class RuntimeUnavailable(RuntimeError):
    pass


def interpreter_class(runtime: str | None = None):
    """-> (runtime name, Interpreter class); the first importable one when runtime is None."""
    names = RUNTIMES if runtime is None else (runtime,)
    problems = []
    for name in names:
        if name not in _MODULES:
            raise RuntimeUnavailable(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
        try:
            return name, importlib.import_module(_MODULES[name]).Interpreter
        except ImportError as error:  # tflite-runtime under numpy 2 fails here too
            problems.append(f"{name}: {error}")
    raise RuntimeUnavailable("no TFLite interpreter could be imported (" + "; ".join(problems) + ")")


def make_interpreter(model_path: str | os.PathLike, runtime: str | None = None, threads: int | None = None):
    """-> (interpreter with tensors allocated, runtime name). A file that is not a sound TFLite model
    raises ValueError with a one-line message: its structure is checked before the runtime reads
    it (edge.model_file), since the runtime trusts the file and a corrupt one can crash the process."""
    built, name = make_interpreters(model_path, runtime, [threads])
    return built[threads], name


def make_interpreters(model_path: str | os.PathLike, runtime: str | None, thread_counts) -> tuple[dict, str]:
    """-> ({thread count: interpreter with tensors allocated}, runtime name): the file checked once,
    then one interpreter per count (the thread measurement compares them side by side)."""
    name, cls = interpreter_class(runtime)
    check_model_file(model_path)
    built = {}
    try:
        for threads in thread_counts:
            with _runtime_notices_silenced():
                built[threads] = cls(model_path=os.fspath(model_path), num_threads=threads)
                built[threads].allocate_tensors()
    except (ValueError, RuntimeError) as error:  # the runtime's own messages may span several lines
        raise ValueError(" ".join(str(error).split())) from None
    return built, name


@contextlib.contextmanager
def _runtime_notices_silenced():
    """The runtime's C++ code prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on the
    process's stderr whenever it builds an interpreter, and no setting of ai-edge-litert 1.2.0 turns it
    off: file descriptor 2 points at /dev/null meanwhile. Errors still arrive, as the exception."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to silence
        yield
        return
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


def input_details(interpreter) -> dict:
    return interpreter.get_input_details()[0]


def output_details(interpreter) -> dict:
    """The score output (one value per image); a model may also output its pooled features."""
    outputs = interpreter.get_output_details()
    return next((details for details in outputs if int(details["shape"][-1]) == 1), outputs[0])


def feature_details(interpreter) -> dict | None:
    """The pooled-features output of a model that has one, else None."""
    return next((details for details in interpreter.get_output_details() if int(details["shape"][-1]) != 1), None)


def quantize(values: np.ndarray, details: dict) -> np.ndarray:
    """float -> the tensor's dtype with its own scale and zero point (identity for float tensors)."""
    dtype = details["dtype"]
    scale, zero_point = details["quantization"]
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if not np.issubdtype(details["dtype"], np.integer):
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_batch(interpreter, images: np.ndarray) -> np.ndarray:
    """Preprocessed float32 (n, h, w, c) images, n matching the input tensor -> dequantized outputs."""
    details = input_details(interpreter)
    interpreter.set_tensor(details["index"], quantize(images, details))
    interpreter.invoke()
    out = output_details(interpreter)
    return dequantize(interpreter.get_tensor(out["index"]), out)


def run_one(interpreter, image: np.ndarray) -> np.ndarray:
    """One preprocessed float32 (h, w, c) image -> the dequantized output vector."""
    return run_batch(interpreter, image[None])[0]


def scores_and_features(interpreter, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (positive scores (n,), dequantized pooled features (n, f)), one invoke per image."""
    details, features = input_details(interpreter), feature_details(interpreter)
    if features is None:
        raise ValueError("the model has no features output")
    score_list, feature_list = [], []
    for image in images:
        interpreter.set_tensor(details["index"], quantize(image[None], details))
        interpreter.invoke()
        out = output_details(interpreter)
        score_list.append(dequantize(interpreter.get_tensor(out["index"]), out)[0, 0])
        feature_list.append(dequantize(interpreter.get_tensor(features["index"]), features)[0])
    return np.array(score_list, dtype=np.float32), np.stack(feature_list)
