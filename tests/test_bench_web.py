"""The bench over edge-live --serve --sessions: capture, the cells, review, report, approve, export,
over plain HTTP and by keyboard in headless Chromium."""
from __future__ import annotations

import json
import time
from pathlib import Path

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
