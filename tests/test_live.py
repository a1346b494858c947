"""edge-live end to end with the shipped leukemia int8 model: a video written by OpenCV, a folder, the
(faked) Pi camera; the JSON-lines log survives a killed process; SIGTERM stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_cell
from edge.live import ResultsLog, main

FAKES = Path(__file__).parent / "fakes"
ROOT = Path(__file__).resolve().parents[1]


def cell_frame(seed: int, blast: bool, size=(640, 480)) -> np.ndarray:
    """A segmented cell (as C-NMC shows them) in the middle of a black 640x480 frame, RGB."""
    cell = cv2.resize(synthetic_cell(seed, blast), (200, 200), interpolation=cv2.INTER_LINEAR)
    frame = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    top, left = (size[1] - 200) // 2, (size[0] - 200) // 2
    frame[top:top + 200, left:left + 200] = cell
    return frame


def write_cell_video(path: Path, count: int) -> Path:
    """An MJPEG video of `count` cell frames at 30 fps, written by OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(count):
        writer.write(cell_frame(i, i % 2 == 0)[:, :, ::-1].copy())
    writer.release()
    return path


@pytest.fixture(scope="module")
def cell_video(tmp_path_factory) -> Path:
    return write_cell_video(tmp_path_factory.mktemp("video") / "cells.avi", 12)


@pytest.fixture(scope="module")
def cell_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i in range(6):
        Image.fromarray(cell_frame(i, i % 2 == 0)).save(folder / f"frame{i:02d}.png")
    return folder


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cell_mode_on_a_video_file_logs_every_frame(cell_video, tmp_path, capsys):
    log = tmp_path / "results.jsonl"
    snapshots = tmp_path / "snaps"
    status = main(["--source", str(cell_video), "--model", "leukemia_int8", "--fps", "0", "--headless",
                   "--threads", "2", "--log", str(log), "--snapshots", str(snapshots), "--snapshot-positives"])
    assert status == 0
    records = read_log(log)
    assert records[0]["event"] == "start" and records[-1]["event"] == "stop"
    frames = [r for r in records if "frame" in r and "label" in r]
    assert len(frames) == records[-1]["frames"] >= 1
    assert records[-1]["captured"] == records[-1]["frames"] == 12  # --fps 0 on a file: every frame classified
    assert records[-1]["dropped"] == 0
    for record in frames:
        assert record["label"] in ("hem", "all", "uncertain", "out_of_domain", "rejected")
        assert record["model_label"] in ("hem", "all") and ("reason" in record) == (record["label"] not in ("hem", "all"))
        assert set(record["latency_ms"]) - {"domain"} == {"capture_wait", "quality", "preprocess", "quantize", "invoke",
                                                          "dequantize", "overlay", "end_to_end"}  # domain: models with the check
        assert record["latency_ms"]["end_to_end"] >= record["latency_ms"]["invoke"]
    numbers = [r["frame"] for r in frames]
    assert numbers == sorted(set(numbers))
    if any(r["label"] == "all" for r in frames):
        assert list(snapshots.glob("*_positive.png"))  # positives were saved (at most one a second)
    assert "fps" in capsys.readouterr().err


def test_results_equal_edge_classify_on_the_same_frames(cell_folder, tmp_path):
    """The live loop and edge-classify give the same label and score for the same image."""
    from edge.classifier import Classifier
    log = tmp_path / "results.jsonl"
    assert main(["--source", str(cell_folder), "--fps", "5", "--headless", "--model", "leukemia_int8",
                 "--log", str(log)]) == 0
    frames = [r for r in read_log(log) if "label" in r]
    assert [r["frame"] for r in frames] == [1, 2, 3, 4, 5, 6]  # 5 fps is slower than the model: none dropped
    with Classifier("leukemia_int8") as classifier:
        for record, path in zip(frames, sorted(cell_folder.glob("*.png"))):
            expected = classifier.classify(path)
            assert record["label"] == expected.label
            assert record["probability"] == pytest.approx(expected.probability, abs=1e-5)


def test_pi_camera_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("picamera2", None)
    import picamera2
    monkeypatch.setattr(picamera2.Picamera2, "scene", cell_frame(3, True))
    monkeypatch.setattr(picamera2.Picamera2, "opened", [])
    log = tmp_path / "pi.jsonl"
    try:
        assert main(["--source", "picamera2", "--max-frames", "3", "--headless", "--log", str(log)]) == 0
    finally:
        sys.modules.pop("picamera2", None)
    frames = [r for r in read_log(log) if "label" in r]
    assert len(frames) == 3 and all(r["source"] == "picamera2:0" for r in frames)
    assert picamera2.Picamera2.opened[0].closed


def test_bad_source_and_bad_model_exit_with_one_line(tmp_path, capsys):
    assert main(["--source", str(tmp_path / "nothing.mp4"), "--headless"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing.mp4" in err and "Traceback" not in err
    assert main(["--source", "0", "--model", str(tmp_path / "missing.tflite"), "--headless"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.tflite" in err
    assert main(["--source", "0", "--model", "brain", "--mode", "field", "--headless"]) == 2
    assert "field mode needs a cell model" in capsys.readouterr().err


def test_fps_0_classifies_every_frame_of_a_folder_and_of_a_video(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(15):
        Image.fromarray(cell_frame(i, i % 2 == 0)).save(folder / f"frame{i:02d}.png")
    video = write_cell_video(tmp_path / "cells.avi", 20)
    for source, count in ((folder, 15), (video, 20)):
        log = tmp_path / f"{source.name}.jsonl"
        assert main(["--source", str(source), "--fps", "0", "--headless", "--model", "brain_int8",
                     "--threads", "1", "--log", str(log)]) == 0
        records = read_log(log)
        assert [r["frame"] for r in records if "label" in r] == list(range(1, count + 1)), source
        assert records[-1]["frames"] == records[-1]["captured"] == count and records[-1]["dropped"] == 0


def test_loop_replays_a_video_file(tmp_path):
    video = write_cell_video(tmp_path / "cells.avi", 4)
    log = tmp_path / "loop.jsonl"
    assert main(["--source", str(video), "--loop", "--fps", "0", "--max-frames", "10", "--headless",
                 "--model", "brain_int8", "--log", str(log)]) == 0
    frames = [r for r in read_log(log) if "label" in r]
    assert [r["frame"] for r in frames] == list(range(1, 11))
    probabilities = [r["probability"] for r in frames]
    assert len(set(probabilities[:4])) > 1  # four different frames...
    assert probabilities[4:] == probabilities[:6]  # ...and then the same four again, and again


@pytest.mark.parametrize("name", ["fake.png", "notes.mp4", "camera 63"])
def test_a_source_that_is_no_video_folder_or_camera_is_one_line_and_exit_1(name, tmp_path):
    source = "63" if name.startswith("camera") else str(tmp_path / name)
    if not source.isdigit():
        Path(source).write_text("a text file, not an image or a video\n")
    done = subprocess.run([sys.executable, "-m", "edge.live", "--source", source, "--headless",
                           "--model", "brain_int8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edge-live: {name if source.isdigit() else source}: cannot open"), \
        done.stderr


def test_log_cuts_off_a_partial_last_line_before_appending(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"frame": 1}\n{"frame": 2, "lab')  # a power cut mid-record
    log = ResultsLog(str(path))
    log.write({"frame": 3})
    log.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"frame": 1} and json.loads(lines[-1]) == {"frame": 3}
    assert len(lines) == 2  # the broken record is cut off, so every line reads


def _start_live(cell_folder: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "edge.live", "--source", str(cell_folder), "--loop", "--fps", "0",
               "--headless", "--threads", "1", "--log", str(log)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_frames(log: Path, count: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count('"frame"') >= count:
            return
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError("edge-live produced no frames")


def test_log_stays_valid_when_the_process_is_killed(cell_folder, tmp_path):
    log = tmp_path / "killed.jsonl"
    process = _start_live(cell_folder, log)
    _wait_for_frames(log, 20, process)
    process.kill()
    process.wait(timeout=10)
    records = read_log(log)  # every line parses: only the record in flight can be lost
    assert len([r for r in records if "label" in r]) >= 20
    assert records[-1].get("event") != "stop"


def test_sigterm_stops_cleanly_with_a_summary(cell_folder, tmp_path):
    log = tmp_path / "term.jsonl"
    process = _start_live(cell_folder, log)
    _wait_for_frames(log, 5, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    records = read_log(log)
    assert records[-1]["event"] == "stop" and records[-1]["frames"] >= 5
    assert "Traceback" not in err.decode()


def test_field_mode_counts_every_white_cell_of_generated_fields(tmp_path):
    from test_field import WHITE, generated_field
    folder = tmp_path / "fields"
    folder.mkdir()
    cut_cell = (4, 100, 11)  # a white cell cut by the left border: found, not classified
    for seed in range(3):
        Image.fromarray(generated_field(seed, white=WHITE + [cut_cell])).save(folder / f"field{seed}.png")
    log = tmp_path / "field.jsonl"
    assert main(["--source", str(folder), "--mode", "field", "--fps", "5", "--headless", "--log", str(log)]) == 0
    records = read_log(log)
    frames = [r for r in records if "cells" in r]
    assert len(frames) == 3
    blasts = cells = flagged = 0
    for record in frames:
        counts = record["counts"]
        assert len(record["cells"]) == len(WHITE) == counts["cells"] + counts["out_of_domain"]
        assert counts["edge_cells_skipped"] == 1
        assert counts["out_of_domain"] == sum(bool(c.get("out_of_domain")) for c in record["cells"])
        assert counts["blasts"] == sum(c["label"] == "all" and not c.get("out_of_domain") for c in record["cells"])
        assert record["scale"]["source"].startswith(("red cells", "none"))
        assert "detect" in record["latency_ms"]
        blasts, cells, flagged = blasts + counts["blasts"], cells + counts["cells"], flagged + counts["out_of_domain"]
    assert records[-1]["totals"] == {"cells": cells, "blasts": blasts, "out_of_domain": flagged,
                                     "blast_ratio": round(blasts / cells, 4) if cells else None}


def test_duration_stops_a_looping_source(cell_folder, tmp_path):
    log = tmp_path / "duration.jsonl"
    started = time.monotonic()
    assert main(["--source", str(cell_folder), "--loop", "--fps", "20", "--duration", "1", "--headless",
                 "--log", str(log)]) == 0
    assert time.monotonic() - started < 30  # it stopped by itself (a loose bound: no speed is asserted)
    stop = read_log(log)[-1]
    assert stop["event"] == "stop" and stop["frames"] > 6  # more than one pass over the 6 images


def test_camera_options_through_the_cli(tmp_path, monkeypatch, capsys):
    """Field mode on a Pi camera reads the main stream at the asked size and rate; the camera's
    setup is said at start and logged; --list-cameras lists the camera and exits."""
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("picamera2", None)
    import picamera2
    monkeypatch.setattr(picamera2.Picamera2, "scene", cell_frame(4, True))
    monkeypatch.setattr(picamera2.Picamera2, "opened", [])
    log = tmp_path / "pi.jsonl"
    try:
        assert main(["--source", "picamera2", "--mode", "field", "--camera-size", "1280x960", "--camera-fps", "10",
                     "--max-frames", "2", "--headless", "--log", str(log)]) == 0
        assert main(["--list-cameras"]) == 0
    finally:
        sys.modules.pop("picamera2", None)
    config = picamera2.Picamera2.opened[0].camera_config
    assert config["main"]["size"] == (1280, 960) and config["lores"] is None
    assert config["controls"]["FrameDurationLimits"] == (100000, 100000)
    start = read_log(log)[0]
    assert start["camera"] == "picamera2:0: main stream 1280x960, 10 fps" and start["threads"] >= 1
    out, err = capsys.readouterr()
    assert "picamera2:0: main stream 1280x960, 10 fps" in err
    assert out.startswith("picamera2:0  imx708")
    with pytest.raises(SystemExit):
        main(["--source", "picamera2", "--camera-size", "big"])
