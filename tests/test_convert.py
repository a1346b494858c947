import json
import shutil

import numpy as np
import pytest

from edge.interpreter import input_details, make_interpreter, output_details, run_one
from edge.metadata import ModelError, read_metadata

pytest.importorskip("tensorflow")
from convert.cli import main as convert_main  # noqa: E402
from convert.records import within_tolerance  # noqa: E402


def test_int8_model_is_fully_integer(tiny_leukemia_models):
    interpreter, _ = make_interpreter(tiny_leukemia_models / "leukemia_int8.tflite", runtime="ai-edge-litert")
    assert input_details(interpreter)["dtype"] == np.int8
    assert output_details(interpreter)["dtype"] == np.int8
    for tensor in interpreter.get_tensor_details():
        assert tensor["dtype"] in (np.int8, np.int32), f"{tensor['name']} is {tensor['dtype']}"
    float_interpreter, _ = make_interpreter(tiny_leukemia_models / "leukemia_float32.tflite", runtime="ai-edge-litert")
    assert input_details(float_interpreter)["dtype"] == np.float32


def test_every_variant_written_with_metadata_that_round_trips(tiny_leukemia_models):
    for precision in ("float32", "int8", "float16", "dynamic"):
        model = tiny_leukemia_models / f"leukemia_{precision}.tflite"
        metadata = read_metadata(model)
        assert metadata["precision"] == precision
        assert metadata["labels"] == ["hem", "all"]
        assert metadata["preprocessing"] == {"name": "cnmc_cell", "size": 32, "crop": "fixed"}
        interpreter, _ = make_interpreter(model, runtime="ai-edge-litert")
        details = input_details(interpreter)
        assert metadata["input"]["shape"] == [int(v) for v in details["shape"]]
        assert metadata["input"]["quantization"]["scale"] == pytest.approx(details["quantization"][0])
        score = run_one(interpreter, np.zeros((32, 32, 3), np.float32))
        assert score.shape == (1,) and 0.0 <= float(score[0]) <= 1.0
    verification = json.loads((tiny_leukemia_models / "leukemia_verification.json").read_text())
    assert set(verification["metrics"]) == {"keras", "float32", "int8", "float16", "dynamic"}
    assert 0.0 <= verification["agreement"] <= 1.0
    assert "Not a medical device" in (tiny_leukemia_models / "leukemia_MODEL_CARD.md").read_text()


def test_converted_artefacts_name_images_relative_to_the_data_root(tiny_leukemia_models, tiny_leukemia_run, tmp_path, capsys):
    from convert.check_models import main as check_main

    paths = json.loads((tiny_leukemia_models / "leukemia_verification.json").read_text())["reference_scores"]["paths"]
    assert paths and all(p.startswith("cnmc/") for p in paths)
    split = json.loads((tiny_leukemia_models / "leukemia_split.json").read_text())
    assert all(r["path"].startswith("cnmc/") for r in split["samples"])
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_leukemia_run.parent / "cnmc", elsewhere / "cnmc")
    assert check_main([str(tiny_leukemia_models), "--data", str(elsewhere)]) == 0
    assert capsys.readouterr().out.count("OK, the same scores as at conversion") == 2
    assert check_main([str(tiny_leukemia_models), "--data", str(tmp_path / "absent")]) == 1


def test_tampered_model_is_refused(tiny_leukemia_models, tmp_path):
    copy = tmp_path / "leukemia_int8.tflite"
    data = bytearray((tiny_leukemia_models / "leukemia_int8.tflite").read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / "leukemia_int8.json").write_text((tiny_leukemia_models / "leukemia_int8.json").read_text())
    with pytest.raises(ModelError, match="SHA-256"):
        read_metadata(copy)


def test_tolerance_check():
    assert within_tolerance({"accuracy": 0.90}, {"accuracy": 0.895}, 1.0)
    assert not within_tolerance({"accuracy": 0.90}, {"accuracy": 0.88}, 1.0)
    assert within_tolerance({"accuracy": 0.90}, {"accuracy": 0.92}, 0.0)


def test_convert_exits_1_when_int8_misses_the_tolerance(tiny_leukemia_run, tmp_path, capsys, keras_eager):
    # a tolerance of -101 pp demands int8 beat float by more than 100 points: it must fail
    assert convert_main([str(tiny_leukemia_run), "--out", str(tmp_path), "--calibration", "8", "--tolerance", "-101",
                         "--cache", str(tiny_leukemia_run.parent / "cache")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_convert_bad_run_folder_exits_2(tmp_path, capsys):
    assert convert_main([str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "expected a `python -m train` run folder" in capsys.readouterr().err


def test_a_run_that_was_not_cross_validated_is_refused_in_one_line(tiny_leukemia_run, tmp_path, capsys):
    run = tmp_path / "single_split"
    shutil.copytree(tiny_leukemia_run, run, ignore=shutil.ignore_patterns("folds"))
    config = json.loads((run / "config.json").read_text())
    del config["cv"]
    (run / "config.json").write_text(json.dumps(config))
    assert convert_main([str(run), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a cross-validated run" in err
