"""Keras model -> TFLite flatbuffers: float32, full-integer int8, and optional float16 / dynamic range,
each with the logit of the positive class as its score output (the final sigmoid removed).

Keras 3 path: export a SavedModel with ``model.export`` and convert from it.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

PRECISIONS = ("float32", "int8", "float16", "dynamic")


class ConversionError(RuntimeError):
    pass


def full_range_representative(images: np.ndarray) -> np.ndarray:
    """The calibration images and a copy of each brightened until its brightest pixel is 1.0 (a
    brighter camera): the input range is then exactly [0, 1], so the int8 input is scale 1/255 and
    zero point -128, i.e. pixel - 128, and no pixel value is clipped or rounded."""
    peaks = images.reshape(len(images), -1).max(axis=1).reshape(-1, *([1] * (images.ndim - 1)))
    brightened = np.clip(images / np.maximum(peaks, 1e-6), 0.0, 1.0)
    return np.concatenate([images, brightened]).astype(np.float32)


def _converter(saved_model: str, precision: str, representative: np.ndarray | None):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if precision == "int8":
        if representative is None or len(representative) == 0:
            raise ConversionError("int8 conversion needs a non-empty representative dataset")

        def representative_dataset():
            for image in full_range_representative(representative):
                yield [image[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision != "float32":
        raise ConversionError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return converter


def convert_keras(model, precisions: list[str], representative: np.ndarray | None = None) -> dict[str, bytes]:
    """-> {precision: flatbuffer bytes}. Converter failures become one readable ConversionError."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        saved_model = os.path.join(folder, "saved_model")
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(saved_model, format="tf_saved_model")
        for precision in precisions:
            try:
                results[precision] = logit_output(_converter(saved_model, precision, representative).convert())
            except ConversionError:
                raise
            except Exception as error:  # the converter raises many types with multi-page messages
                first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
                raise ConversionError(f"{precision} conversion failed: {first_line}") from error
    return results


def _final_ops(flatbuffer: bytes):
    """-> (the model object, its subgraph, the builtin code of each operator)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    return model, model.subgraphs[0], codes


def logit_output(flatbuffer: bytes) -> bytes:
    """The same model with its final sigmoid removed: the score output becomes the logit.

    An int8 sigmoid output steps by 1/256 and saturates (every confident scan reads 0.996 or 1.0); the
    int8 logit before it keeps its resolution at both ends (its scale comes from the same calibration
    images). The device maps the logit to a calibrated probability (edge/calibration.py). A model whose
    score is not one sigmoid (an ensemble or test-time augmentation averages several) is returned as
    it is: its output stays a probability (score_output_kind)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model, subgraph, codes = _final_ops(flatbuffer)
    final = [op for op in subgraph.operators
             if codes[op.opcodeIndex] == schema.BuiltinOperator.LOGISTIC and op.outputs[0] in list(subgraph.outputs)]
    if len(final) > 1:
        raise ConversionError(f"expected at most one sigmoid producing a model output, found {len(final)}")
    if not final:
        return flatbuffer
    sigmoid_op = final[0]
    probability, logit = int(sigmoid_op.outputs[0]), int(sigmoid_op.inputs[0])
    subgraph.outputs = [logit if int(index) == probability else int(index) for index in subgraph.outputs]
    subgraph.operators.remove(sigmoid_op)
    for signature in model.signatureDefs or []:
        for output in signature.outputs:
            if output.tensorIndex == probability:
                output.tensorIndex = logit
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def score_output_kind(flatbuffer: bytes) -> str:
    """"logit" when the one-value score output comes straight from the dense head (a fully connected
    layer), else "probability" (a sigmoid, or the mean of several)."""
    from tensorflow.lite.python import schema_py_generated as schema

    _, subgraph, codes = _final_ops(flatbuffer)
    scores = [int(i) for i in subgraph.outputs if int(subgraph.tensors[int(i)].shape[-1]) == 1]
    producer = next(op for op in subgraph.operators if int(op.outputs[0]) == scores[0])
    return "logit" if codes[producer.opcodeIndex] == schema.BuiltinOperator.FULLY_CONNECTED else "probability"
