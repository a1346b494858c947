"""The bench over edge-live --serve --sessions: capture, the cells, review, report, approve, export,
over plain HTTP and by keyboard in headless Chromium."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import cv2

from test_web import Live, browser, frames_folder  # noqa: F401  (fixtures)
from edge.bench import Bench


def post(run: Live, path: str, body: dict | None = None) -> tuple[int, dict]:
    code, _, reply = run.request(path, data=json.dumps(body or {}).encode(), headers={"Content-Type": "application/json"})
    return code, json.loads(reply)


def test_capture_review_report_export_over_http(frames_folder, tmp_path):  # noqa: F811
    sessions = tmp_path / "sessions"
    run = Live(frames_folder, tmp_path, "127.0.0.1:0", "--sessions", str(sessions), "--session", "../../evil")
    try:
        run.wait_for_frames(1)
        assert run.status()["bench"] is True
        for n in (1, 2, 3):
            code, reply = post(run, "/api/capture")
            assert code == 200 and reply["capture"] == n and len(reply["cells"]) == 1  # cell mode: one cell each
        code, _, body = run.request("/api/cells")
        cells = json.loads(body)["cells"]
        assert code == 200 and [c["id"] for c in cells] == [1, 2, 3] and all(c["review"] is None for c in cells)
        code, headers, png = run.request("/" + cells[0]["thumbnail"])
        assert code == 200 and png[:4] == b"\x89PNG"
        assert post(run, "/api/cells/1", {"label": "../x"})[0] == 400
        assert post(run, "/api/cells/99", {"label": "all"})[0] == 404
        for cell, label in zip(cells, ["all", "hem", "not_a_cell"]):
            assert post(run, f"/api/cells/{cell['id']}", {"label": label})[0] == 200
        code, _, body = run.request("/api/report")
        report = json.loads(body)
        assert report["verified"] == {"hem": 1, "all": 1, "not_a_cell": 1} and report["cells"] == 3
        assert report["session"] == "../../evil" and report["verified_positive_fraction"] == 0.5
        assert post(run, "/api/approve", {"by": "tech 1"})[0] == 200
        assert post(run, "/api/cells/1", {"label": "hem"})[0] == 409  # approved: locked
        code, headers, csv = run.request("/api/report.csv")
        assert code == 200 and b"tech 1" in csv and "attachment" in headers["Content-Disposition"]
        code, _, pdf = run.request("/api/report.pdf")
        assert code == 200 and pdf.startswith(b"%PDF")
        code, exported = post(run, "/api/export")
        assert code == 200 and exported["counts"] == {"hem": 1, "all": 1}
        folders = list(sessions.iterdir())
        assert len(folders) == 1 and Path(exported["path"]).parent == folders[0]
        assert not (tmp_path / "evil").exists()  # the name never became a path
    finally:
        run.stop()
    bench = Bench(folders[0])
    assert bench.summary()["verified"] == report["verified"] and bench.approved["by"] == "tech 1"


def test_capture_and_review_by_keyboard_in_a_browser(browser, frames_folder, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    run = Live(frames_folder, tmp_path, "127.0.0.1:0", "--sessions", str(tmp_path / "sessions"))
    try:
        browser.get(run.url("/"))
        wait = WebDriverWait(browser, 40)
        wait.until(lambda d: d.find_element(By.ID, "bench").is_displayed())
        body = browser.find_element(By.TAG_NAME, "body")
        for n in (1, 2, 3):
            body.send_keys("c")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell")) == n)
        for key in ("2", "1", "x"):  # each review moves to the next cell
            before = len(browser.find_elements(By.CSS_SELECTOR, ".cell.reviewed"))
            body.send_keys(key)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell.reviewed")) == before + 1)
        _, _, reply = run.request("/api/report")
        report = json.loads(reply)
        assert report["reviewed"] == 3 and report["verified"]["not_a_cell"] == 1
        assert report["verified"]["all"] + report["verified"]["hem"] == 2
        table = browser.find_element(By.ID, "verified").text
        assert "reviewed 3 3" in table.replace("\n", " ")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        run.stop()


FIELD_FRAMES = 20  # each field stays 2 s in view at --fps 10


def test_three_fields_of_a_video_reviewed_by_keyboard_in_a_browser(browser, tmp_path):  # noqa: F811
    """Field mode on an MJPG video of three generated smear fields (3, 4 and 5 white cells), read by
    OpenCV: each field captured once with the page's key, every cell reviewed by key; the verified
    counts in the page's table, in /api/report and in the CSV report are the keys pressed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_field import WHITE, generated_field
    cells_in = (3, 4, 5)
    video = tmp_path / "fields.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (224, 224))
    for seed, count in enumerate(cells_in):
        bgr = generated_field(seed, white=WHITE[:count])[:, :, ::-1].copy()
        for _ in range(FIELD_FRAMES):
            writer.write(bgr)
    writer.release()
    run = Live(video, tmp_path, "127.0.0.1:0", "--mode", "field", "--sessions", str(tmp_path / "sessions"), fps="10")

    def field_in_view() -> int | None:
        """The field of the latest frame classified, while it is early in that field's time in view
        (a capture asked for then lands on the same field), else None."""
        for line in reversed(run.log.read_text().splitlines()):
            record = json.loads(line)
            if "cells" in record:
                position = (record["frame"] - 1) % (len(cells_in) * FIELD_FRAMES)  # the video loops
                return position // FIELD_FRAMES if 2 <= position % FIELD_FRAMES <= FIELD_FRAMES // 2 else None
        return None

    try:
        browser.get(run.url("/"))
        wait = WebDriverWait(browser, 40)
        wait.until(lambda d: d.find_element(By.ID, "bench").is_displayed())
        body = browser.find_element(By.TAG_NAME, "body")
        captured, deadline = [], time.monotonic() + 60
        while len(captured) < len(cells_in):  # each field once, in whatever order the video brings them
            assert time.monotonic() < deadline, captured
            field = field_in_view()
            if field is None or field in captured:
                time.sleep(0.05)
                continue
            body.send_keys("c")
            captured.append(field)
            total = sum(cells_in[f] for f in captured)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell")) == total)
        bench = Bench(next((tmp_path / "sessions").iterdir()))
        per_capture = [sum(c["capture"] == n for c in bench.cells()) for n in (1, 2, 3)]
        assert per_capture == [cells_in[f] for f in captured]  # three fields, each whole, each once

        keys = ["1", "2", "x"] * 4  # one key per cell: each review moves to the next cell
        for n, key in enumerate(keys, 1):
            body.send_keys(key)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell.reviewed")) == n)
        expected = {"hem": keys.count("1"), "all": keys.count("2"), "not_a_cell": keys.count("x")}
        report = json.loads(run.request("/api/report")[2])
        assert report["verified"] == expected and report["reviewed"] == report["cells"] == 12
        assert report["captures"] == 3 and sum(report["device"].values()) == 12

        def table() -> dict:
            rows = browser.execute_script("return Array.from(document.querySelectorAll('#verified tr'))"
                                          ".map(tr => Array.from(tr.cells).map(td => td.textContent))")
            return {row[0]: row[1:] for row in rows}
        wait.until(lambda d: table().get("reviewed") == ["12", "12"])
        names, rows = report["names"], table()
        assert rows[names["all"]] == [str(report["device"]["all"]), str(expected["all"])]
        assert rows[names["hem"]] == [str(report["device"]["hem"]), str(expected["hem"])]
        assert rows["not a cell"][1] == str(expected["not_a_cell"])
        assert rows["out of domain"][0] == str(report["device"]["out_of_domain"])
        exported = dict(csv.reader(io.StringIO(run.request("/api/report.csv")[2].decode())))
        assert exported[f"{names['all']}: device / verified"] == f"{report['device']['all']} / {expected['all']}"
        assert exported[f"{names['hem']}: device / verified"] == f"{report['device']['hem']} / {expected['hem']}"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        run.stop()
