"""A bench session (edge.bench, edge.report): captured fields counted once per cell, reviews and the
approval kept across a SIGKILL, the verified report, and the export read back by python -m train's loader."""
from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.bench import NOT_A_CELL, Bench, SessionLocked
from edge.model_store import resolve_model
from edge.report import report, report_csv, report_pdf
from test_live import cell_frame

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
