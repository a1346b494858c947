"""A bench session (edge.bench, edge.report): captured fields counted once per cell, reviews and the
approval kept across a SIGKILL, the verified report, the export read back by python -m train's loader
and cross-validated on; what asks edge-live for a capture: --auto-capture (edge.auto_capture), the
window's key, a line on the terminal and SIGUSR1."""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_cell
from edge.auto_capture import AutoCapture
from edge.bench import NOT_A_CELL, Bench, SessionLocked
from edge.live import main
from edge.model_store import resolve_model
from edge.overlay import focus_measure
from edge.report import report, report_csv, report_pdf
from test_live import cell_folder, cell_frame  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"hem": "normal", "all": "blast", "uncertain": "uncertain", "out_of_domain": "out of domain"}


def new_bench(root: Path, name: str = "slide 12/../x") -> Bench:
    return Bench.create(root, name, labels=("hem", "all"), names=NAMES, model_path=resolve_model("leukemia"),
                        mode="field")


def field_record(labels: list[str]) -> dict:
    return {"cells": [{"box": [20 + 60 * i, 20, 50, 50], "label": label, "model_label": "all" if label == "all" else "hem",
                       "probability": 0.9 if label == "all" else 0.1, "out_of_domain": label == "out_of_domain"}
                      for i, label in enumerate(labels)]}


def test_session_counts_each_captured_cell_once_and_the_review_is_verified(tmp_path):
    bench = new_bench(tmp_path)
    assert bench.folder.parent == tmp_path and bench.id.isdigit()  # the name never becomes a path
    assert json.loads((bench.folder / "session.json").read_text())["name"] == "slide 12/../x"
    frame = cell_frame(1, True)
    fields = [["all", "hem", "uncertain"], ["out_of_domain", "all"], ["hem", "hem"]]
    for labels in fields:
        bench.capture(frame, field_record(labels))
    assert sorted(p.name for p in (bench.folder / "frames").iterdir()) == ["000001.png", "000002.png", "000003.png"]
    cells = bench.cells()
    assert len(cells) == 7 and [c["cell"] for c in cells] == list(range(1, 8))
    assert all((bench.folder / c["crop"]).stat().st_size > 0 for c in cells)
    truth = ["all", "hem", "all", "hem", "all", "hem", NOT_A_CELL]  # one reclassified, one struck
    for cell, label in zip(cells, truth):
        bench.review(cell["cell"], label, by="tech")
    with pytest.raises(ValueError):
        bench.review(1, "../../etc")
    summary = bench.summary()
    assert summary["device"] == {"hem": 3, "all": 2, "uncertain": 1, "out_of_domain": 1}
    assert summary["verified"] == {"hem": 3, "all": 3, NOT_A_CELL: 1} and summary["verified_counted"] == 6
    assert summary["verified_positive_fraction"] == 0.5
    low, high = summary["verified_positive_fraction_ci95"]
    assert low < 0.5 < high
    # device classes 1 all, 2 hem, 5 all, 6 hem, 7 hem; the technician: all, hem, all, hem, not a cell
    assert summary["agreement"] == {"cells": 5, "agreed": 4, "fraction": 0.8}

    bench.approve("Dr. A")
    with pytest.raises(SessionLocked):
        bench.review(1, "hem")
    with pytest.raises(SessionLocked):
        bench.capture(frame, field_record(["all"]))
    data = report(bench)
    assert data["approved_by"] == "Dr. A" and data["model"] == "leukemia_int8.tflite" and len(data["model_sha256"]) == 64
    rows = dict(csv.reader(io.StringIO(report_csv(data).decode())))
    assert rows["blast: device / verified"] == "2 / 3" and rows["normal: device / verified"] == "3 / 3"
    assert rows["blast share, verified"] == "50.0%" and "Research use only" in rows["notice"]
    pytest.importorskip("fpdf")
    pdf = report_pdf(data)
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-10:]

    again = Bench(bench.folder)  # reopened: the same cells, reviews and approval
    assert again.summary() == summary | {"approved": again.approved} and again.approved["by"] == "Dr. A"


def test_export_round_trips_into_edge_train_loader(tmp_path):
    from edge.datasets import find_cnmc_images
    bench = new_bench(tmp_path)
    bench.capture(cell_frame(2, True), field_record(["all", "hem", "out_of_domain"]))
    bench.capture(cell_frame(3, False), field_record(["hem"]))
    for cell, label in zip(bench.cells(), ["all", "hem", "all", NOT_A_CELL]):
        bench.review(cell["cell"], label)
    exported = bench.export()
    assert exported["counts"] == {"hem": 1, "all": 2}
    assert Path(exported["path"]).parent == bench.folder  # nothing outside the session folder
    samples = find_cnmc_images(exported["path"])
    assert len(samples) == 3 and {s.patient for s in samples} == {bench.id}  # the session is the group
    assert sorted(s.label for s in samples) == [0, 1, 1]  # hem 0, all 1
    bench.review(1, "hem")  # reclassified after the export: the next export moves it
    assert bench.export()["counts"] == {"hem": 2, "all": 1}
    assert len(find_cnmc_images(exported["path"])) == 3


CRASH_SCRIPT = """
import sys
from pathlib import Path
from edge.bench import Bench
bench = Bench(Path(sys.argv[1]))
labels = ("hem", "all")
n = 0
while True:
    for cell in bench.cells():
        bench.review(cell["cell"], labels[n % 2])
        n += 1
        print(cell["cell"], labels[(n - 1) % 2], flush=True)
"""


def test_sigkill_mid_review_loses_no_review(tmp_path):
    bench = new_bench(tmp_path)
    for _ in range(5):
        bench.capture(cell_frame(4, True), field_record(["all", "hem"]))
    bench.close()
    process = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(bench.folder)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:  # every review it said it made
        acknowledged.append(process.stdout.readline().split())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with open(bench.folder / "reviews.jsonl", "ab") as handle:
        handle.write(b'{"cell": 3, "lab')  # and a line cut by the crash
    reopened = Bench(bench.folder)
    kept = [(str(r["cell"]), r["label"]) for r in reopened.reviews.records()]
    assert len(acknowledged) == 40 and [tuple(a) for a in acknowledged] == kept[:40]
    latest = {cell: label for cell, label in kept}
    assert {str(c["cell"]): c["review"] for c in reopened.cells()} == latest
    assert (bench.folder / "reviews.jsonl").read_bytes().endswith(b"\n")


def test_exported_sessions_train_a_tiny_cross_validation(tmp_path, keras_eager):
    """Three reviewed sessions, both classes in each, exported into one {all,hem}/ folder: a grouped
    3-fold CV run of python -m train holds each session out as one group."""
    pytest.importorskip("tensorflow")
    from train.cli import main as train_main
    data = tmp_path / "data"
    ids = []
    for session in range(3):
        bench = new_bench(tmp_path / "sessions", f"patient {session}")
        truth = ["all", "hem"] * 4
        crops = [synthetic_cell(100 * session + i, label == "all") for i, label in enumerate(truth)]
        bench.capture(cell_frame(session, True), field_record(truth), crops=crops)
        for cell, label in zip(bench.cells(), truth):
            bench.review(cell["cell"], label)
        exported = bench.export()
        assert exported["counts"] == {"hem": 4, "all": 4}
        shutil.copytree(exported["path"], data, dirs_exist_ok=True)  # the lab's training folder
        ids.append(bench.id)
    assert len(set(ids)) == 3 and sorted(p.name for p in data.iterdir()) == ["all", "hem"]
    run = tmp_path / "run"
    assert train_main(["leukemia", "--cv", "3", "--cv-only", "--data", str(data), "--out", str(run), "--epochs", "1",
                       "--size", "32", "--width", "4", "--batch-size", "8", "--cell-crop", "fixed",
                       "--cache", str(tmp_path / "cache")]) == 0
    cv = json.loads((run / "cv.json").read_text())
    assert sorted(row["group"] for row in cv["per_group"]) == sorted(ids)  # each session is one group
    assert all(row["images"] == 8 for row in cv["per_group"]) and len(cv["per_fold"]) == 3
    folds = {}
    for row in json.loads((run / "split.json").read_text())["samples"]:
        folds.setdefault(row["patient"], set()).add(row["fold"])
    assert sorted(folds) == sorted(ids) and all(len(f) == 1 for f in folds.values())  # no session split


# -- what asks for a capture -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def smear() -> np.ndarray:
    """One generated smear, 1200 px square at about a 640x480 camera's magnification: 30 white cells
    among 400 red cells, which the stage moves under the camera."""
    from test_field import generated_field
    rng = np.random.default_rng(0)
    white = []
    while len(white) < 30:
        x, y, r = int(rng.integers(20, 580)), int(rng.integers(20, 580)), int(rng.integers(10, 14))
        if all(np.hypot(x - a, y - b) > r + c + 6 for a, b, c in white):
            white.append((x, y, r))
    return cv2.resize(generated_field(0, size=600, white=white, red_cells=400), (1200, 1200),
                      interpolation=cv2.INTER_CUBIC)


def view(x: int, y: int, blur: float = 0, seed: int = 0) -> np.ndarray:
    """The 640x480 camera view at stage position (x, y), with camera noise and a JPEG's loss; blur: a
    Gaussian of that sigma (out of focus)."""
    frame = smear()[y:y + 480, x:x + 640]
    if blur:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    noisy = np.clip(frame + np.random.default_rng(seed).normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], cv2.IMREAD_COLOR)


def test_auto_capture_takes_each_new_settled_sharp_view_once():
    auto, history = AutoCapture(), []
    passed = {"cells": [{"box": [0, 0, 10, 10], "label": "all"}]}  # the quality gates found nothing

    def frame(rgb, record=passed) -> bool:  # as the loop does: the focus figure, its running peak, the decision
        history.append(focus_measure(rgb))
        if auto.ready(rgb, record, history[-1], max(history)):
            auto.captured()
            return True
        return False

    a = [frame(view(0, 0, seed=n)) for n in range(4)]
    assert a == [False, True, False, False]  # the first view once settled (two alike frames), then never again
    assert not frame(view(2, 1, seed=5))  # a drift of 2 px: the same view
    moving = [frame(view(x, 0, seed=x)) for x in (40, 140, 260, 380, 480)]  # the stage moves: never steady
    b = [frame(view(560, 0, seed=n)) for n in range(4)]
    assert moving == [False] * 5 and b == [False, True, False, False]  # settled: captured once
    blurred = [frame(view(0, 600, blur=2, seed=n)) for n in range(3)]
    assert blurred == [False] * 3 and history[-1] < 0.5 * max(history)  # a new view, out of focus
    assert [frame(view(0, 600, seed=n)) for n in range(3)] == [True, False, False]  # focused: captured once
    gated = [frame(view(560, 600, seed=n), {"cells": [{"label": "rejected", "issues": ["out of focus"]}]})
             for n in range(3)] + [frame(view(560, 600, seed=n), {"cells": []}) for n in range(3)]
    assert gated == [False] * 6  # a quality gate said no, or no cell to count
    cell = AutoCapture()  # cell mode: one cell on black, then another
    frames = [cell_frame(1, True), cell_frame(1, True), cell_frame(1, True), cell_frame(3, False), cell_frame(3, False)]
    assert [cell.ready(f, {"label": "all"}, 100.0, 100.0) and (cell.captured() or True) for f in frames] == [
        False, True, False, False, True]
    assert not AutoCapture().ready(frames[0], {"label": "rejected", "issues": ["blank image"]}, 100.0, 100.0)


def test_auto_capture_in_edge_live_field_mode(tmp_path, capsys):
    folder = tmp_path / "views"
    folder.mkdir()
    views = [view(0, 0), view(0, 0), view(560, 0), view(560, 0), view(0, 600, blur=2), view(0, 600, blur=2),
             view(0, 600), view(0, 600), view(0, 600)]
    for n, rgb in enumerate(views):
        Image.fromarray(rgb).save(folder / f"{n:02d}.png")
    sessions = tmp_path / "sessions"
    assert main(["--source", str(folder), "--mode", "field", "--fps", "0", "--headless", "--threads", "1",
                 "--sessions", str(sessions), "--auto-capture"]) == 0
    bench = Bench(next(sessions.iterdir()))
    captures = [r for r in bench.results.records() if "image" in r]
    assert [r["frame"] for r in captures] == [2, 4, 7]  # each view once, when settled; the blurred frames not
    assert all(r["cells"] for r in captures) and bench.summary()["cells"] == sum(r["cells"] for r in captures)
    with pytest.raises(SystemExit) as stopped:
        main(["--source", str(folder), "--auto-capture"])
    assert stopped.value.code == 2 and "--auto-capture needs --sessions DIR" in capsys.readouterr().err


def captured_frames(sessions: Path) -> list[int]:
    return [r["frame"] for r in Bench(next(sessions.iterdir())).results.records() if "image" in r]


def test_the_window_key_c_captures(cell_folder, tmp_path, monkeypatch):  # noqa: F811
    from edge.live import LiveRun
    keys = iter([-1, ord("c"), -1, ord("q")])  # cv2.waitKey after frames 1, 2, 3, 4
    monkeypatch.setattr(LiveRun, "_open_window", lambda self: "edge-live")
    monkeypatch.setattr(cv2, "imshow", lambda *args: None)
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    sessions = tmp_path / "sessions"
    assert main(["--source", str(cell_folder), "--fps", "0", "--threads", "1", "--sessions", str(sessions)]) == 0
    assert captured_frames(sessions) == [3]  # c after frame 2: the next frame; q after frame 4 stopped it


def test_a_line_c_on_the_terminal_and_sigusr1_capture_headless(cell_folder, tmp_path, monkeypatch):  # noqa: F811
    master, terminal = os.openpty()
    os.write(master, b"hello\nc\n")  # typed before the loop starts: read once it runs
    stdin = os.fdopen(terminal, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    log, sessions = tmp_path / "live.jsonl", tmp_path / "sessions"

    def signal_after_frames(count: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count('"frame"') >= count:
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.02)

    previous = signal.signal(signal.SIGUSR1, lambda *args: None)  # a late signal must not end pytest
    try:
        sender = threading.Thread(target=signal_after_frames, args=(5,))
        sender.start()
        assert main(["--source", str(cell_folder), "--loop", "--fps", "10", "--max-frames", "12", "--headless",
                     "--threads", "1", "--log", str(log), "--sessions", str(sessions)]) == 0
        sender.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stdin.close()
        os.close(master)
    frames = captured_frames(sessions)
    assert len(frames) == 2 and frames[0] < 5 <= frames[1], frames  # the terminal's c, then SIGUSR1

    read, write = os.pipe()  # stdin that is no terminal: nothing is read from it
    os.write(write, b"c\n")
    os.close(write)
    with os.fdopen(read, "r") as piped:
        monkeypatch.setattr(sys, "stdin", piped)
        sessions = tmp_path / "piped"
        assert main(["--source", str(cell_folder), "--fps", "10", "--max-frames", "4", "--headless", "--threads", "1",
                     "--sessions", str(sessions)]) == 0
    assert captured_frames(sessions) == []
