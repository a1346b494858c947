"""What a clinic may feed the device: a folder of fuzzed and extreme images, tampered model sidecars,
bad arguments, unwritable outputs and a full disk. Every case is one line and a clear exit status,
never a traceback, and never the end of the other inputs."""
import io
import json
import math
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_cell, synthetic_mri
from edge.classifier import Classifier
from edge.cli import main as classify_main
from edge.live import ResultsLog
from edge.live import main as live_main
from edge.metadata import ModelError, sha256_of, write_metadata

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tiff": "TIFF", "webp": "WEBP"}
MEMORY_BUDGET_MB = 500


def _png_with_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (the CRC fixed, so only the size is a lie)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 30, 120)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def hostile_corpus(folder: Path) -> tuple[list[Path], list[Path]]:
    """-> (good images, every file) of a few hundred fuzzed and extreme images in one folder."""
    rng = np.random.default_rng(13)
    folder.mkdir()
    good = []
    for i, (extension, pillow_format) in enumerate(FORMATS.items()):
        path = folder / f"good_{i}.{extension}"
        Image.fromarray(synthetic_cell(i, i % 2 == 0, size=200)).save(path, pillow_format)
        good.append(path)
    for path in list(good):
        data = path.read_bytes()
        for k in range(40):
            mutated = bytearray(data)
            kind = k % 4
            if kind == 0:  # byte flips
                for position in rng.integers(0, len(data), size=int(rng.integers(1, 30))):
                    mutated[position] ^= int(rng.integers(1, 256))
            elif kind == 1:  # truncation
                mutated = mutated[: int(rng.integers(0, len(data)))]
            elif kind == 2:  # header and dimension edits
                start = int(rng.integers(0, min(64, len(data) - 4)))
                mutated[start:start + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
            else:  # the right bytes under another format's name
                pass
            extension = path.suffix if kind != 3 else list(FORMATS)[(k + 1) % len(FORMATS)] and \
                f".{list(FORMATS)[(list(FORMATS).index(path.suffix[1:]) + 1) % len(FORMATS)]}"
            (folder / f"fuzz_{path.stem}_{k}{extension}").write_bytes(bytes(mutated))
    for width, height in [(512, 1), (1, 512), (30000, 10), (10, 30000), (65500, 1)]:
        Image.new("RGB", (width, height), (120, 40, 150)).save(folder / f"strip_{width}x{height}.png")
    Image.new("P", (450, 65535), 3).save(folder / "tall_450x65535.gif")
    Image.fromarray(synthetic_cell(7, True, size=4000)).save(folder / "large_4000x4000.jpg", quality=80)
    (folder / "claims_8000x8000.png").write_bytes(_png_with_size(8000, 8000))
    (folder / "bomb_100000x100000.png").write_bytes(_png_with_size(100000, 100000))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    (folder / "folder.png").mkdir()
    return good, sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".bmp", ".gif",
                                                                          ".tiff", ".webp"})


def _run_measured(module: str, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run a CLI in a fresh process -> (result, its peak resident memory in MB from VmHWM)."""
    script = (f"import sys, {module} as cli\n"
              "code = cli.main(sys.argv[1:])\n"
              "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
              "print('PEAK_KB', peak, file=sys.stderr)\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    peak_kb = int(done.stderr.split("PEAK_KB")[-1].split()[0])
    return done, peak_kb / 1024


def test_a_folder_of_hostile_images_gets_one_line_each_in_bounded_memory(tmp_path):
    good, files = hostile_corpus(tmp_path / "corpus")
    assert len(files) >= 250
    done, peak_mb = _run_measured("edge.cli", ["--model", "leukemia", "--json", str(tmp_path / "corpus")])
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in files if p.is_file())
    by_name = {Path(r["path"]).name: r for r in rows}
    assert all(by_name[p.name].get("model_label") in ("all", "hem") for p in good)
    for name, reason in [("claims_8000x8000.png", "too large"), ("bomb_100000x100000.png", "too large"),
                         ("tall_450x65535.gif", "too large"), ("empty.png", "empty file"),
                         ("text.png", "not an image")]:
        assert reason in by_name[name]["error"], (name, by_name[name])
    for name in ("strip_512x1.png", "strip_65500x1.png", "strip_10x30000.png", "large_4000x4000.jpg"):
        assert "label" in by_name[name], by_name[name]  # odd shapes are classified (and flagged), not crashed
    errors = [r["error"] for r in rows if "error" in r]
    assert errors and all("\n" not in e and len(e) < 300 for e in errors)
    assert peak_mb < MEMORY_BUDGET_MB, f"peak {peak_mb:.0f} MB"
    print(f"peak resident memory over {len(files)} hostile files: {peak_mb:.0f} MB")


@pytest.mark.parametrize("mode", ["cell", "field"])
def test_edge_live_replays_a_hostile_folder_to_the_end(mode, tmp_path):
    hostile_corpus(tmp_path / "corpus")
    done, peak_mb = _run_measured("edge.live", ["--source", str(tmp_path / "corpus"), "--mode", mode, "--fps", "0",
                                                "--headless", "--model", "leukemia", "--log", str(tmp_path / "log.jsonl")])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "stop" and records[-1]["frames"] >= 1 and records[-1]["failed"] == 0
    assert any(r.get("event") == "image_skipped" for r in records)
    assert peak_mb < MEMORY_BUDGET_MB, f"peak {peak_mb:.0f} MB"


@pytest.mark.parametrize("model", ["leukemia", "brain"])
@pytest.mark.parametrize("quality", [True, False])
def test_extreme_shapes_as_arrays(model, quality):
    with Classifier(model, check_quality=quality) as classifier:
        for shape in [(1, 512), (512, 1), (10, 30000), (30000, 10), (1, 1), (65500, 1)]:
            result = classifier.classify(np.full((*shape, 3), 120, np.uint8))
            assert result.model_label in classifier.labels and math.isfinite(result.probability)
            assert result.answered or result.reason


def _sidecar_case(tmp_path: Path, name: str, edit, model: str = "leukemia_int8",
                  sidecar_of: str | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    target = folder / f"{sidecar_of or model}.tflite"
    shutil.copy(MODELS / f"{model}.tflite", target)
    metadata = json.loads((MODELS / f"{sidecar_of or model}.json").read_text())
    result = edit(metadata)
    if isinstance(result, str):  # raw sidecar text, not an object to re-hash
        target.with_suffix(".json").write_text(result)
    else:
        write_metadata(target, metadata)
    return target


def _set(path: str, value):
    def edit(metadata):
        *parents, last = path.split(".")
        node = metadata
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return edit


SIDECAR_CASES = {
    "no_labels": (_set("labels", KeyError), "labels"),
    "no_threshold": (_set("threshold", KeyError), "threshold"),
    "no_preprocessing": (_set("preprocessing", KeyError), "preprocessing"),
    "no_input_shape": (_set("input.shape", KeyError), "input.shape"),
    "labels_empty": (_set("labels", []), "labels"),
    "labels_one": (_set("labels", ["all"]), "labels"),
    "labels_three": (_set("labels", ["hem", "all", "other"]), "labels"),
    "labels_string": (_set("labels", "hemall"), "labels"),
    "labels_duplicate": (_set("labels", ["all", "all"]), "labels"),
    "labels_swapped": (_set("labels", ["all", "hem"]), "positive_label"),
    "unknown_preprocessing": (_set("preprocessing.name", "cnmc"), "preprocessing"),
    "unknown_crop": (_set("preprocessing.crop", "loose"), "preprocessing"),
    "unknown_stain": (_set("preprocessing.stain", "macenko"), "preprocessing"),
    "size_0": (_set("preprocessing.size", 0), "preprocessing"),
    "size_negative": (_set("preprocessing.size", -96), "preprocessing"),
    "size_string": (_set("preprocessing.size", "96"), "preprocessing"),
    "size_huge": (_set("preprocessing.size", 100000), "preprocessing"),
    "threshold_nan": (_set("threshold", float("nan")), "threshold"),
    "threshold_inf": (_set("threshold", float("inf")), "threshold"),
    "threshold_2": (_set("threshold", 2.0), "threshold"),
    "threshold_negative": (_set("threshold", -1), "threshold"),
    "threshold_true": (_set("threshold", True), "threshold"),
    "threshold_string": (_set("threshold", "0.5"), "threshold"),
    "json_array": (lambda m: "[1, 2, 3]", "JSON object"),
    "json_null": (lambda m: "null", "JSON object"),
    "json_string": (lambda m: '"leukemia"', "JSON object"),
    "json_deep": (lambda m: "[" * 100000 + "]" * 100000, "nested too deeply"),
    "json_broken": (lambda m: '{"labels": ', "unreadable metadata"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_tampered_sidecar_is_one_line_naming_file_and_field(case, tmp_path, capsys):
    edit, field = SIDECAR_CASES[case]
    model = _sidecar_case(tmp_path, case, edit)
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, True, size=200)).save(image)
    code = classify_main(["--model", str(model), str(image)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and field in err and "Traceback" not in err, err
    assert str(model.with_suffix(".json")) in err or str(model) in err, err


def test_a_float32_model_under_an_int8_sidecar_is_refused(tmp_path, capsys):
    model = _sidecar_case(tmp_path, "swapped_model", lambda m: None, model="leukemia_float32",
                          sidecar_of="leukemia_int8")
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, True, size=200)).save(image)
    assert classify_main(["--model", str(model), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input is float32" in err and "says int8" in err, err


def _random_bytes_named_tflite(data: bytes) -> bytes:
    """5,000 random bytes with the TFLite identifier at bytes 4-8, so they get past that first check."""
    noise = np.random.default_rng(26).bytes(5000)
    return noise[:4] + b"TFL3" + noise[8:]


BROKEN_MODEL_FILES = {  # before the structure check, a cut model and named noise crashed the process (SIGSEGV)
    "cut_to_a_third": lambda data: data[: len(data) // 3],
    "5000_random_bytes": lambda data: np.random.default_rng(26).bytes(5000),
    "5000_random_bytes_named_TFL3": _random_bytes_named_tflite,
}


def _classify_in_a_process(model: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, True, size=200)).save(image)
    return subprocess.run([sys.executable, "-m", "edge.cli", "--model", str(model), str(image)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("case", sorted(BROKEN_MODEL_FILES))
def test_a_broken_model_file_whose_sidecar_matches_is_one_line_not_a_crash(case, tmp_path):
    target = tmp_path / "brain_int8.tflite"  # the larger shipped model (4 MB); test_model_file cuts both
    target.write_bytes(BROKEN_MODEL_FILES[case]((MODELS / "brain_int8.tflite").read_bytes()))
    write_metadata(target, json.loads((MODELS / "brain_int8.json").read_text()))  # its sha256 rewritten to match
    assert json.loads(target.with_suffix(".json").read_text())["sha256"] == sha256_of(target)
    done = _classify_in_a_process(target, tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)  # a signal would be negative (-11: SIGSEGV)
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"edge-classify: {target}: not a loadable TFLite model (")
    assert "Traceback" not in done.stderr


def test_a_model_that_is_a_symlink_to_a_text_file_is_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\nsecond line\n")
    link = tmp_path / "brain_int8.tflite"
    link.symlink_to(text)
    write_metadata(link, json.loads((MODELS / "brain_int8.json").read_text()))
    done = _classify_in_a_process(link, tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr == f"edge-classify: {link}: not a loadable TFLite model (no TFL3 identifier at bytes 4-8)\n"


@pytest.mark.parametrize("config, reason", [("[1]", "JSON object"), ('{"default_model": 3}', "default_model"),
                                            ("{", "unreadable config"), (None, "no such file")])
def test_a_bad_edge_config_is_one_line(config, reason, tmp_path, monkeypatch, capsys):
    path = tmp_path / "config.json"
    if config is not None:
        path.write_text(config)
    monkeypatch.delenv("EDGE_MODEL", raising=False)
    monkeypatch.setenv("EDGE_CONFIG", str(path))
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, True, size=200)).save(image)
    assert classify_main([str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err, err


@pytest.mark.parametrize("args", [["--threads", "99999999999"], ["--threads", "0"], ["--threads", "two"]])
def test_classify_arguments_checked_by_argparse(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        classify_main([*args, str(tmp_path)])
    assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--fps", "-1"], ["--fps", "nan"], ["--fps", "inf"], ["--duration", "-1"],
                                  ["--duration", "0"], ["--threads", "99999999999"], ["--max-frames", "0"]])
def test_live_arguments_checked_by_argparse(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        live_main(["--source", str(tmp_path), "--headless", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and args[0] in err and "Traceback" not in err


def test_inputs_that_match_no_image_are_errors(tmp_path, capsys):
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "notes.txt").write_text("hello")
    code = classify_main(["--model", "leukemia", "--json", str(empty), str(texts), str(tmp_path / "*.bmp")])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and len(rows) == 3
    assert [r["error"] for r in rows] == ["no image files in this folder"] * 2 + ["matches no file"]


def test_unreadable_and_vanished_outputs(tmp_path):
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, True, size=200)).save(image)
    command = [sys.executable, "-m", "edge.cli", "--model", "leukemia", str(image)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    ours = [line for line in done.stderr.splitlines() if not line.startswith("INFO: ")]  # the runtime's own notice
    assert done.returncode == 2 and len(ours) == 1 and "No space left" in ours[0], done.stderr
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          timeout=120, pass_fds=(), close_fds=True, preexec_fn=lambda: os.close(1))
    assert done.returncode == 2 and "standard output is closed" in done.stderr, done.stderr


@pytest.fixture
def cell_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_cell(i, i % 2 == 0, size=200)).save(folder / f"{i}.png")
    return folder


def test_live_refuses_unwritable_log_and_snapshot_paths_before_work(cell_folder, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [["--log", str(tmp_path)], ["--log", str(a_file / "run.jsonl")],
             ["--snapshots", str(a_file / "snaps")], ["--snapshots", str(a_file)]]
    for extra in cases:
        code = live_main(["--source", str(cell_folder), "--headless", "--model", "leukemia", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and extra[0] in err and "Traceback" not in err, (extra, err)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 kB tmpfs (needs root and mount; skipped with the reason otherwise)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system up to its last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def test_log_on_a_full_disk_keeps_whole_lines_and_resumes(small_tmpfs):
    problems = []
    log = ResultsLog(str(small_tmpfs / "run.jsonl"), on_problem=problems.append)
    assert log.write({"frame": 0})
    filler = _fill(small_tmpfs)
    results = [log.write({"frame": i, "pad": "x" * 300}) for i in range(1, 40)]
    assert not all(results) and len(problems) == 1 and "cannot write the log" in problems[0]
    filler.unlink()
    assert log.write({"frame": 99})
    log.close()
    records = [json.loads(line) for line in (small_tmpfs / "run.jsonl").read_text().splitlines()]
    assert records[0] == {"frame": 0} and records[-2] == {"frame": 99}
    assert records[-1]["event"] == "log_resumed" and records[-1]["records_lost"] == results.count(False)
    assert "again" in problems[-1]


def test_live_on_a_full_disk_keeps_classifying_and_a_restart_reads_every_line(cell_folder, small_tmpfs, capsys):
    log = small_tmpfs / "run.jsonl"
    _fill(small_tmpfs)
    assert live_main(["--source", str(cell_folder), "--headless", "--model", "leukemia", "--fps", "0", "--loop",
                      "--max-frames", "20", "--log", str(log)]) == 0
    err = capsys.readouterr().err
    assert err.count("cannot write the log") == 1 and "20 frames" in err and "Traceback" not in err
    (small_tmpfs / "filler").unlink()
    assert live_main(["--source", str(cell_folder), "--headless", "--model", "leukemia", "--fps", "0",
                      "--max-frames", "2", "--log", str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["event"] == "stop" and records[-1]["frames"] >= 1  # every line above parsed
