"""edge-classify and the Classifier API on the shipped models: output formats, exit statuses,
the bad-input corpus, model errors, quality gates and the no-TensorFlow guarantee."""
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import synthetic_cell, synthetic_mri
from edge.classifier import Classifier
from edge.cli import main
from edge.metadata import ModelError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.fixture
def cells(tmp_path):
    """Three good cell images in different formats, and one broken file."""
    folder = tmp_path / "cells"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_cell(1, True, size=300)).save(folder / "a.png")
    Image.fromarray(synthetic_cell(2, False, size=300)).save(folder / "sub" / "b.bmp")
    Image.fromarray(synthetic_cell(3, True, size=300)).save(folder / "c.tiff")
    return folder


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_one_object_per_input(cells, capsys):
    code, out, _ = run_cli(["--model", "leukemia", "--json", "--label-all", str(cells)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    for row in rows:
        assert {"path", "label", "answer", "reason", "probability", "threshold", "probabilities", "latency_ms"} <= set(row)
        assert row["label"] in ("all", "hem") and set(row["probabilities"]) == {"all", "hem"}
        assert row["answer"] == {"all": "blast", "hem": "normal"}[row["label"]]
        assert row["probability"] == pytest.approx(row["probabilities"]["all"], abs=1e-5)
        assert (row["probability"] >= row["threshold"]) == (row["label"] == "all")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5 and row["latency_ms"] > 0


def test_csv_and_table_output(cells, capsys):
    code, out, _ = run_cli(["--model", "leukemia_int8", "--csv", "--label-all", str(cells / "a.png"),
                            str(cells / "c.tiff")], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [Path(r["path"]).name for r in rows] == ["a.png", "c.tiff"]
    assert all(r["label"] in ("all", "hem") and r["error"] == "" for r in rows)
    code, out, _ = run_cli(["--model", "leukemia", "--label-all", str(cells / "a.png")], capsys)
    assert code == 0 and "P(blast)" in out.splitlines()[0] and "threshold" in out.splitlines()[0] and "a.png" in out
    assert out.splitlines()[1].split()[1] in ("blast", "normal")


def test_globs_and_folders_are_expanded(cells, capsys):
    code, out, _ = run_cli(["--json", "--label-all", str(cells / "*.png"), str(cells / "sub")], capsys)
    assert code == 0 and sorted(Path(json.loads(l)["path"]).name for l in out.splitlines()) == ["a.png", "b.bmp"]


def _bad_corpus(folder: Path) -> dict[str, str]:
    """file name -> the reason its error must mention."""
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    good = io.BytesIO()
    Image.fromarray(synthetic_cell(4, True, size=300)).save(good, "PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 400 megapixels, a few kB on disk
    frames = [Image.fromarray(synthetic_cell(i, True)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    return {"empty.png": "empty", "text.jpg": "not an image", "truncated.png": "damaged",
            "bomb.png": "too large", "animated.gif": "animated"}


def test_bad_inputs_get_one_line_errors_and_do_not_stop_the_rest(cells, tmp_path, capsys):
    expected = _bad_corpus(tmp_path / "bad")
    code, out, err = run_cli(["--json", str(cells), str(tmp_path / "bad"), str(tmp_path / "missing.png")], capsys)
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and "Traceback" not in err
    assert sum("label" in r for r in rows.values()) == 3
    for name, reason in {**expected, "missing.png": "no such file"}.items():
        assert reason in rows[name]["error"], (name, rows[name])
        assert "\n" not in rows[name]["error"]


def test_cmyk_and_16_bit_images_are_classified(tmp_path, capsys):
    Image.fromarray(synthetic_cell(5, True, size=300)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    mri = synthetic_mri(5, True, size=256).astype(np.uint16) * 257
    Image.fromarray(mri).save(tmp_path / "sixteen.png")
    code, out, _ = run_cli(["--json", "--label-all", "--model", "leukemia", str(tmp_path / "cmyk.jpg")], capsys)
    assert code == 0 and json.loads(out)["label"] in ("all", "hem")
    code, out, _ = run_cli(["--json", "--label-all", "--model", "brain", str(tmp_path / "sixteen.png")], capsys)
    assert code == 0 and json.loads(out)["label"] in ("yes", "no")


def _copy_model(folder: Path, name="leukemia_int8") -> Path:
    folder.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(MODELS / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.tflite"


def test_model_errors_exit_2_with_one_line(cells, tmp_path, capsys):
    tampered = _copy_model(tmp_path / "tampered")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x55
    tampered.write_bytes(bytes(data))

    corrupt = _copy_model(tmp_path / "corrupt")
    corrupt.write_bytes(b"\x00" * 200)
    meta = json.loads(corrupt.with_suffix(".json").read_text())
    from edge.metadata import write_metadata
    write_metadata(corrupt, meta)  # a record that matches the garbage, so the loader itself must refuse it

    reshaped = _copy_model(tmp_path / "reshaped")
    meta = json.loads(reshaped.with_suffix(".json").read_text())
    meta["input"]["shape"] = [1, 64, 64, 3]
    meta["preprocessing"]["size"] = 64  # a consistent sidecar that does not describe this model
    reshaped.with_suffix(".json").write_text(json.dumps(meta))

    no_metadata = tmp_path / "bare.tflite"
    shutil.copy(MODELS / "leukemia_int8.tflite", no_metadata)
    cases = {str(tampered): "SHA-256", str(corrupt): "not a loadable", str(reshaped): "its metadata says",
             str(no_metadata): "metadata", str(tmp_path / "absent.tflite"): "not found", "kidney": "unknown model"}
    for model, reason in cases.items():
        code, out, err = run_cli(["--model", model, str(cells)], capsys)
        assert code == 2, model
        assert reason in err and err.count("\n") == 1 and "Traceback" not in err, (model, err)


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_default_model_from_environment_and_config(tmp_path, monkeypatch):
    from edge.model_store import default_model, resolve_model

    monkeypatch.delenv("EDGE_MODEL", raising=False)
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.setattr("edge.model_store.CONFIG_FILES", (str(tmp_path / "none.json"),))
    assert resolve_model().name == "leukemia_int8.tflite"
    monkeypatch.setenv("EDGE_CONFIG", str(tmp_path / "none.json"))  # named but missing: an error, not the fallback
    with pytest.raises(ModelError, match="no such file"):
        resolve_model()
    (tmp_path / "config.json").write_text(json.dumps({"default_model": "brain_float32"}))
    monkeypatch.setenv("EDGE_CONFIG", str(tmp_path / "config.json"))
    assert resolve_model().name == "brain_float32.tflite"
    monkeypatch.setenv("EDGE_MODEL", "brain")
    assert default_model() == "brain" and resolve_model().name == "brain_int8.tflite"


def test_quality_gates_flag_wrong_domain_blank_and_blurred_images():
    cell = synthetic_cell(6, True, size=300)
    with Classifier("leukemia") as classifier:
        assert classifier.get_input_shape() == (1, 96, 96, 3)
        grey = np.repeat(cell.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
        assert any("greyscale" in i for i in classifier.classify(grey).issues)
        mri = np.repeat(synthetic_mri(6, True, size=256)[:, :, None], 3, axis=2)
        assert any("greyscale" in i for i in classifier.classify(mri).issues)
        assert any("blank" in i for i in classifier.classify(np.zeros((300, 300, 3), np.uint8)).issues)
        assert any("saturated" in i for i in classifier.classify(np.full((300, 300, 3), 255, np.uint8)).issues)
    with Classifier("brain") as classifier:
        assert any("colour" in i for i in classifier.classify(cell).issues)
        sharp = np.repeat(synthetic_mri(7, True, size=256)[:, :, None], 3, axis=2)
        blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(4)))
        assert classifier.classify(sharp).issues == []
        assert any("out of focus" in i for i in classifier.classify(blurred).issues)


def test_works_where_tensorflow_cannot_be_imported(cells, tmp_path):
    blocker = tmp_path / "blocker" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is not installed on this device')\n")
    env = {"PYTHONPATH": f"{blocker.parent}:{ROOT}", "PATH": "/usr/bin:/bin"}
    cli = subprocess.run([sys.executable, "-m", "edge.cli", "--json", str(cells)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert cli.returncode in (0, 3), cli.stderr  # 3: a generated cell given no class (out of domain)
    assert len(cli.stdout.splitlines()) == 3
    api = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from edge.classifier import Classifier\n"
        f"result = Classifier('brain').classify({str(cells / 'a.png')!r})\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "print(result.model_label)\n")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip() in ("yes", "no")


def test_batch_equals_one_by_one():
    images = [synthetic_cell(i, i % 2 == 0, size=300) for i in range(5)]
    with Classifier("leukemia") as classifier:
        batch = classifier.classify_batch(images)
        single = [classifier.classify(image) for image in images]
        assert classifier.get_input_shape() == (1, 96, 96, 3)
    assert [r.label for r in batch] == [r.label for r in single]
    np.testing.assert_allclose([r.probability for r in batch], [r.probability for r in single], atol=1e-6)
