"""Check a .tflite file's structure before an interpreter reads it.

The TFLite loader trusts the offsets inside the file: a model cut short, or bytes that are not a
model, can crash the process (a segmentation fault, no message) instead of raising an error.
``check_model_file(path)`` reads the file and raises ModelFileError (a ValueError whose message is
one line) unless:

- the file is at most MAX_MODEL_BYTES and bytes 4-8 are the TFLite identifier "TFL3";
- every table, vector and string that the interpreter loads lies inside the file: the model's
  description, operator codes, subgraphs (tensors with their shapes, names and quantization;
  operators with their tensor lists and custom options; each operator's options table, whose
  fields must lie inside it), buffers, metadata and signatures. This walk is our own, bounds-checked
  on every read, so it works with any runtime (tflite-runtime alone included);
- every buffer's data lies inside the file: inside the flatbuffer, or for a buffer stored after it
  (large models), from its offset for its size;
- every index names something that exists: a tensor's buffer, an operator's opcode and tensors,
  a subgraph's inputs and outputs, a metadata buffer, a signature's subgraph and tensors;
- where ai-edge-litert's flatbuffers schema (ai_edge_litert.schema_py_generated) is installed, the
  whole model is also read through it, every field of every table (operator options included): the
  flatbuffers library raises, never crashes, on a read out of range. Without it (tflite-runtime
  alone) the fields inside each operator's options table are not read one by one.

Buffer data is never copied: the walk only reads offsets and lengths.
"""
from __future__ import annotations

import importlib
import os
import struct

TFLITE_IDENTIFIER = b"TFL3"
MAX_MODEL_BYTES = 1 << 31  # a device model is megabytes; a flatbuffer addresses at most 2 GiB

_U16, _U32, _I32, _U64 = (struct.Struct(f"<{code}") for code in "HIiQ")


class ModelFileError(ValueError):
    """The file is not a sound TFLite model; the message is one line, without the path."""


def check_model_file(path: str | os.PathLike) -> None:
    """Raise ModelFileError unless the file at `path` is a structurally sound TFLite flatbuffer."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_MODEL_BYTES:
                raise ModelFileError(f"{size} bytes, more than the {MAX_MODEL_BYTES} a model may have")
            data = handle.read()
    except OSError as error:
        raise ModelFileError(f"cannot read the model ({error.strerror or error})") from None
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError("no TFL3 identifier at bytes 4-8")
    try:
        _walk_model(_Flatbuffer(data))
    except _OutOfBounds as error:
        raise ModelFileError(f"corrupt or cut short: {error}") from None
    _read_with_schema(data)


class _OutOfBounds(Exception):
    """A read outside the file, or an index to nothing."""


class _Flatbuffer:
    """Reads of a flatbuffer in which every position is checked against the file's size."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def read(self, kind: struct.Struct, at: int, what: str) -> int:
        if at < 0 or at + kind.size > self.size:
            raise _OutOfBounds(f"{what} lies outside the {self.size}-byte file")
        return kind.unpack_from(self.data, at)[0]

    def table(self, at: int, what: str) -> "_Table":
        vtable = at - self.read(_I32, at, what)
        vtable_size = self.read(_U16, vtable, what)
        table_size = self.read(_U16, vtable + 2, what)
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > self.size or at + table_size > self.size:
            raise _OutOfBounds(f"{what} is not a table inside the {self.size}-byte file")
        field_offsets = struct.unpack_from(f"<{vtable_size // 2 - 2}H", self.data, vtable + 4)
        if any(offset >= table_size for offset in field_offsets):  # every field, even those not walked
            raise _OutOfBounds(f"{what} has a field outside its table")
        return _Table(self, at, vtable, vtable_size, what)


class _Table:
    """One flatbuffer table: its fields by schema index (0, 1, ...)."""

    def __init__(self, buffer: _Flatbuffer, at: int, vtable: int, vtable_size: int, what: str):
        self.buffer, self.at, self.vtable, self.vtable_size, self.what = buffer, at, vtable, vtable_size, what

    def _field(self, index: int) -> int | None:
        """The field's position in the file, or None when the field is absent."""
        entry = 4 + 2 * index
        if entry + 2 > self.vtable_size:
            return None
        offset = self.buffer.read(_U16, self.vtable + entry, self.what)
        return self.at + offset if offset else None

    def scalar(self, index: int, kind: struct.Struct, what: str, default: int = 0) -> int:
        at = self._field(index)
        return default if at is None else self.buffer.read(kind, at, f"{self.what}'s {what}")

    def _referenced(self, index: int, what: str) -> int | None:
        at = self._field(index)
        return None if at is None else at + self.buffer.read(_U32, at, f"{self.what}'s {what}")

    def table(self, index: int, what: str) -> _Table | None:
        at = self._referenced(index, what)
        return None if at is None else self.buffer.table(at, f"{self.what}'s {what}")

    def vector(self, index: int, element_size: int, what: str) -> tuple[int, int]:
        """-> (position of the first element, element count); (0, 0) when the field is absent."""
        at = self._referenced(index, what)
        if at is None:
            return 0, 0
        count = self.buffer.read(_U32, at, f"{self.what}'s {what}")
        if at + 4 + count * element_size > self.buffer.size:
            raise _OutOfBounds(f"{self.what}'s {what} ({count} items) runs past the end of the "
                               f"{self.buffer.size}-byte file")
        return at + 4, count

    def string(self, index: int, what: str) -> None:
        start, length = self.vector(index, 1, what)
        if length and start + length >= self.buffer.size:  # a string ends with a zero byte
            raise _OutOfBounds(f"{self.what}'s {what} runs past the end of the {self.buffer.size}-byte file")

    def ints(self, index: int, what: str) -> tuple[int, ...]:
        start, count = self.vector(index, 4, what)
        return struct.unpack_from(f"<{count}i", self.buffer.data, start) if count else ()

    def tables(self, index: int, what: str) -> list[_Table]:
        start, count = self.vector(index, 4, f"{what} list")
        data = self.buffer
        return [data.table(start + 4 * i + data.read(_U32, start + 4 * i, f"{what} {i}"), f"{what} {i}")
                for i in range(count)]


def _check_indices(indices, count: int, what: str, optional: bool = False) -> None:
    lowest = -1 if optional else 0  # an operator's optional input is -1
    for index in indices:
        if not lowest <= index < count:
            raise _OutOfBounds(f"{what} names {index}, but there are {count}")


def _walk_model(data: _Flatbuffer) -> None:
    """The TFLite schema's tables, by field index (tensorflow/compiler/mlir/lite/schema/schema.fbs)."""
    model = data.table(data.read(_U32, 0, "the root offset"), "the model")
    model.string(3, "description")
    operator_codes = model.tables(1, "operator code")
    for code in operator_codes:
        code.string(1, "custom code")
    buffers = model.tables(4, "buffer")
    for number, buffer in enumerate(buffers):
        buffer.vector(0, 1, "data")
        offset, size = buffer.scalar(1, _U64, "offset"), buffer.scalar(2, _U64, "size")
        if offset > 1 and offset + size > data.size:  # stored after the flatbuffer (1 is a placeholder)
            raise _OutOfBounds(f"buffer {number} (bytes {offset} to {offset + size}) runs past the end of "
                               f"the {data.size}-byte file")
    subgraphs = model.tables(2, "subgraph")
    tensor_counts = []
    for number, subgraph in enumerate(subgraphs):
        tensors = subgraph.tables(0, f"subgraph {number} tensor")
        for tensor in tensors:
            tensor.ints(0, "shape")
            _check_indices([tensor.scalar(2, _U32, "buffer")], len(buffers), f"{tensor.what}'s buffer")
            tensor.string(3, "name")
            quantization = tensor.table(4, "quantization")
            if quantization is not None:
                for field, (element_size, name) in enumerate([(4, "min"), (4, "max"), (4, "scale"), (8, "zero point")]):
                    quantization.vector(field, element_size, name)
            tensor.table(6, "sparsity")
            tensor.ints(7, "shape signature")
        _check_indices(subgraph.ints(1, "inputs"), len(tensors), f"subgraph {number}'s inputs")
        _check_indices(subgraph.ints(2, "outputs"), len(tensors), f"subgraph {number}'s outputs")
        for operator in subgraph.tables(3, f"subgraph {number} operator"):
            _check_indices([operator.scalar(0, _U32, "opcode index")], len(operator_codes), f"{operator.what}'s opcode")
            for field, name in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
                _check_indices(operator.ints(field, name), len(tensors), f"{operator.what}'s {name}", optional=True)
            operator.table(4, "options")
            operator.vector(5, 1, "custom options")
            offset, size = operator.scalar(9, _U64, "large custom options offset"), operator.scalar(10, _U64, "size")
            if offset > 1 and offset + size > data.size:
                raise _OutOfBounds(f"{operator.what}'s custom options run past the end of the {data.size}-byte file")
            operator.table(12, "options 2")
        subgraph.string(4, "name")
        tensor_counts.append(len(tensors))
    _check_indices(model.ints(5, "metadata buffer"), len(buffers), "the metadata buffer list")
    for entry in model.tables(6, "metadata"):
        entry.string(0, "name")
        _check_indices([entry.scalar(1, _U32, "buffer")], len(buffers), f"{entry.what}'s buffer")
    for signature in model.tables(7, "signature"):
        subgraph = signature.scalar(4, _U32, "subgraph index")
        _check_indices([subgraph], len(subgraphs), f"{signature.what}'s subgraph")
        for field, name in ((0, "input"), (1, "output")):
            for tensor_map in signature.tables(field, f"{signature.what} {name}"):
                tensor_map.string(0, "name")
                _check_indices([tensor_map.scalar(1, _U32, "tensor index")], tensor_counts[subgraph],
                               f"{tensor_map.what}'s tensor")
        signature.string(2, "key")


def _read_with_schema(data: bytes) -> None:
    """Read every field of the model through ai-edge-litert's generated schema, where installed."""
    try:
        schema = importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError:  # tflite-runtime ships no schema; the walk above is the check
        return
    try:
        schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as error:  # whatever a corrupt flatbuffer makes the generated reader raise
        reason = " ".join(str(error).split())[:100]
        raise ModelFileError(f"corrupt: the schema cannot read it ({type(error).__name__}: {reason})") from None
