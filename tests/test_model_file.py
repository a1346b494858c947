"""edge.model_file: the structural check that keeps a broken .tflite away from the interpreter, which
would crash the process on one. The shipped models pass; broken files are one line, with the schema
module ai-edge-litert ships and without it (as with tflite-runtime alone)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.model_file import ModelFileError, _read_with_schema, check_model_file

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS.glob("*.tflite"))


SCHEMA = ["with the schema", "walk only"]


def _use(schema: str, monkeypatch) -> None:
    if schema == "walk only":  # tflite-runtime ships no schema module: the import fails
        monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)


def _repacked(edit) -> bytes:
    """The leukemia model read through the schema's object API, edited, and packed again."""
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = (MODELS / "leukemia_int8.tflite").read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    edit(model)
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set_tensor_buffer(model):
    model.subgraphs[0].tensors[3].buffer = 999


def _set_operator_input(model):
    operator = model.subgraphs[0].operators[0]
    operator.inputs = [500, *operator.inputs[1:]]  # a new list: the one read is a view of the file


def _set_opcode_index(model):
    model.subgraphs[0].operators[0].opcodeIndex = 77


def _with_identifier(data: bytes) -> bytes:
    return data[:4] + b"TFL3" + data[8:]


LEUKEMIA = (MODELS / "leukemia_int8.tflite").read_bytes()
BRAIN = (MODELS / "brain_int8.tflite").read_bytes()
BROKEN = {  # name -> (the file's bytes, made lazily; what the one line says)
    "empty": (lambda: b"", "no TFL3 identifier"),
    "leukemia cut to a third": (lambda: LEUKEMIA[: len(LEUKEMIA) // 3], "corrupt or cut short"),
    "brain cut to a third": (lambda: BRAIN[: len(BRAIN) // 3], "corrupt or cut short"),
    "brain cut by 100 bytes": (lambda: BRAIN[:-100], "corrupt or cut short"),
    "5000 random bytes": (lambda: np.random.default_rng(26).bytes(5000), "no TFL3 identifier"),
    "5000 random bytes named TFL3": (lambda: _with_identifier(np.random.default_rng(27).bytes(5000)),
                                     "corrupt or cut short"),
    "a text file": (lambda: b"hello\nworld\n", "no TFL3 identifier"),
    "a tensor's buffer index": (lambda: _repacked(_set_tensor_buffer), "tensor 3's buffer names 999"),
    "an operator's input index": (lambda: _repacked(_set_operator_input), "operator 0's inputs names 500"),
    "an operator's opcode index": (lambda: _repacked(_set_opcode_index), "operator 0's opcode names 77"),
}


@pytest.mark.parametrize("schema", SCHEMA)
def test_shipped_models_pass(schema, monkeypatch):
    _use(schema, monkeypatch)
    assert len(SHIPPED) >= 4
    for path in SHIPPED:
        check_model_file(path)


@pytest.mark.parametrize("schema", SCHEMA)
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_model_file_is_refused_in_one_line(case, schema, tmp_path, monkeypatch):
    make, reason = BROKEN[case]
    path = tmp_path / "model.tflite"
    path.write_bytes(make())
    _use(schema, monkeypatch)
    with pytest.raises(ModelFileError, match=reason) as refused:
        check_model_file(path)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 200


def test_the_schema_reader_alone_refuses_a_cut_model():
    pytest.importorskip("ai_edge_litert.schema_py_generated")
    _read_with_schema(LEUKEMIA)  # reads the whole model
    with pytest.raises(ModelFileError, match="the schema cannot read it"):
        _read_with_schema(LEUKEMIA[: len(LEUKEMIA) // 3])


def test_without_the_schema_module_the_walk_alone_refuses_a_cut_model(monkeypatch, tmp_path):
    _use("walk only", monkeypatch)
    cut = LEUKEMIA[: len(LEUKEMIA) // 3]
    assert _read_with_schema(cut) is None  # no schema to read it with
    path = tmp_path / "cut.tflite"
    path.write_bytes(cut)
    with pytest.raises(ModelFileError, match="corrupt or cut short"):
        check_model_file(path)


def test_a_folder_or_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ModelFileError, match="cannot read the model"):
        check_model_file(tmp_path)
    with pytest.raises(ModelFileError, match="cannot read the model"):
        check_model_file(tmp_path / "missing.tflite")
