"""edge-live --serve: the page in a real browser (Debian's headless Chromium and chromium-driver,
through Selenium), and over plain HTTP the MJPEG stream, the token, sessions and the session's log,
against an edge-live subprocess replaying generated cells."""
from __future__ import annotations

import ast
import http.client
import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

from edge.metadata import load_spec
from edge.model_store import resolve_model
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from test_live import cell_frame, read_log
from edge.classifier import NON_ANSWERS
from edge.live import main, parse_args
from edge.overlay import focus_measure
from edge.live_state import FrameBuffer, LiveState
from edge.web import Commands, WebServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web_frames")
    for i in range(12):
        Image.fromarray(cell_frame(i, i % 2 == 0)).save(folder / f"frame{i:02d}.png")
    return folder


class Live:
    """An `edge-live --serve` subprocess on a looping folder; stderr goes to a file, where the page's
    address (and a generated token) is read."""

    def __init__(self, folder: Path, tmp: Path, serve: str, *extra: str, fps: str = "4", preexec_fn=None,
                 loop: bool = True):
        self.log, self.stderr = tmp / "live.jsonl", tmp / "stderr.txt"
        command = [sys.executable, "-m", "edge.live", "--source", str(folder), *(["--loop"] if loop else []),
                   "--fps", fps, "--headless",
                   "--threads", "1", "--log", str(self.log), "--serve", serve, *extra]
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                            preexec_fn=preexec_fn)
        deadline = time.monotonic() + 90
        while not (found := re.search(r"live page at http://\S+:(\d+)/(\S*)", self.stderr.read_text())):
            assert self.process.poll() is None and time.monotonic() < deadline, self.stderr.read_text()
            time.sleep(0.1)
        self.port = int(found[1])
        self.printed_token = found[2].removeprefix("?token=") or None
        self.token = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, token: str | None = "default", data: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        token = self.token if token == "default" else token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        request = urllib.request.Request(self.url(path), data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def status(self) -> dict:
        code, _, body = self.request("/api/status")
        assert code == 200, body
        return json.loads(body)

    def session(self, body: dict) -> tuple[int, dict]:
        code, _, reply = self.request("/api/session", data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})
        return code, json.loads(reply)

    def wait_for_frames(self, more_than: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (status := self.status())["frames"] <= more_than:
            assert time.monotonic() < deadline, f"no frames beyond {more_than}"
            time.sleep(0.2)
        return status

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        err = self.stderr.read_text()
        assert self.process.returncode == 0 and "Traceback" not in err, err
        return err


@pytest.fixture(scope="module")
def live(frames_folder, tmp_path_factory):
    """Loopback with a --token-file: the token is in force, and the page carries it."""
    tmp = tmp_path_factory.mktemp("live_web")
    (tmp / "token").write_text(TOKEN + "\n")
    run = Live(frames_folder, tmp, "127.0.0.1:0", "--token-file", str(tmp / "token"))
    run.token = TOKEN
    yield run
    err = run.stop()
    assert TOKEN not in err and TOKEN not in run.log.read_text()  # printed as "<the token in FILE>"


def read_part(response) -> bytes:
    """One part of a multipart/x-mixed-replace stream with boundary FRAME: its JPEG bytes."""
    assert response.readline() == b"--FRAME\r\n"
    headers = {}
    while (line := response.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    jpeg = response.read(int(headers["content-length"]))
    assert response.read(2) == b"\r\n"
    return jpeg


def open_stream(live: Live) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    connection.request("GET", f"/stream.mjpg?token={live.token}")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=FRAME"
    return connection, response


# -- plain HTTP -------------------------------------------------------------------------------
def test_stream_yields_jpeg_parts(live):
    connection, response = open_stream(live)
    try:
        parts = [read_part(response) for _ in range(2)]
    finally:
        connection.close()
    for jpeg in parts:
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"  # SOI ... EOI: whole JPEGs
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)


def test_viewer_that_disconnects_mid_stream_leaves_the_loop_running(live):
    for reset in (True, False):
        viewer = socket.create_connection(("127.0.0.1", live.port), timeout=30)
        viewer.sendall(f"GET /stream.mjpg?token={live.token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        viewer.recv(300)  # the headers and the start of a part, then gone
        if reset:  # an abrupt close: RST, so the server's next write fails with ConnectionReset
            viewer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        viewer.close()
    frames = live.status()["frames"]
    status = live.wait_for_frames(frames + 4)  # the loop goes on
    assert status["source"]["state"] == "running"
    deadline = time.monotonic() + 10
    while live.status()["viewers"] and time.monotonic() < deadline:  # the server let the viewers go
        time.sleep(0.2)
    assert live.status()["viewers"] == 0
    connection, response = open_stream(live)  # and still streams
    try:
        assert read_part(response)[:2] == b"\xff\xd8"
    finally:
        connection.close()
    assert "Traceback" not in live.stderr.read_text()


def test_status_reports_the_run(live):
    status = live.wait_for_frames(2)
    assert status["model"] == "leukemia_int8.tflite" and status["mode"] == "cell"
    assert status["source"]["state"] == "running" and status["fps"] > 0
    assert {"invoke", "preprocess", "overlay", "end_to_end"} <= set(status["latency_ms"])
    assert status["summary"]["images"] >= 1 and status["summary"]["call"] in ("hem", "all", "uncertain", "out_of_domain")
    assert status["focus"]["value"] > 0 and status["focus"]["peak"] >= status["focus"]["value"]
    frames = [r for r in read_log(live.log) if "label" in r]
    assert frames and all(r["focus"] > 0 for r in frames)  # the focus figure is logged per frame


def test_sessions_start_and_end_and_the_log_has_only_the_current_one(live):
    code, reply = live.session({"name": "slide-12"})
    assert code == 200 and reply["session"] == "slide-12"
    status = live.status()
    assert status["session"] == "slide-12"
    live.wait_for_frames(status["frames"] + 2)
    code, headers, body = live.request("/api/log")
    assert code == 200 and "slide-12.jsonl" in headers["Content-Disposition"]
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines[0] == {**lines[0], "event": "session_start", "session": "slide-12"}
    assert len(lines) >= 3 and all(line["session"] == "slide-12" for line in lines)
    assert lines[-1]["summary"]["images"] <= len(lines) - 1  # the summary started over

    code, reply = live.session({"end": True})
    assert code == 200 and reply["ended"] == "slide-12" and reply["session"] is None
    assert live.status()["session"] is None
    live.wait_for_frames(live.status()["frames"] + 1)
    _, _, body = live.request("/api/log")
    assert body and all(json.loads(line)["session"] is None for line in body.decode().splitlines())
    records = read_log(live.log)
    ended = next(r for r in records if r.get("event") == "session_end" and r["session"] == "slide-12")
    assert ended["summary"]["images"] >= 2

    assert live.session({"name": ""})[0] == 400
    assert live.session({"nom": "x"})[0] == 400
    assert live.request("/api/session", data=b"name=x")[0] == 415  # a cross-site form post is refused
    assert live.request("/api/session")[0] == 405


def test_token_beyond_loopback(frames_folder, tmp_path):
    run = Live(frames_folder, tmp_path, "0.0.0.0:0")  # every address; asked through 127.0.0.1
    try:
        token = run.printed_token
        assert token and len(token) >= 16
        for path in ("/", "/api/status", "/stream.mjpg", "/api/log", "/api/thumbnail/1.jpg", "/nothing"):
            code, headers, body = run.request(path, token=None)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert body.count(b"\n") == 1 and "error" in json.loads(body)
        assert run.request("/api/status", token=token[:-1] + "x")[0] == 401
        assert run.request("/api/session", token=None, data=b'{"name": "x"}',
                           headers={"Content-Type": "application/json"})[0] == 401
        assert run.request("/api/status", token=token)[0] == 200  # Authorization: Bearer
        code, _, page = run.request(f"/?token={token}", token=None)
        assert code == 200 and b"<img id=\"live\"" in page
    finally:
        err = run.stop()
    assert err.count(token) == 1  # printed once at start
    assert token not in run.log.read_text()
    assert read_log(run.log)[0]["serve"].startswith("0.0.0.0:")


# -- arguments and deployment ---------------------------------------------------------------
def test_serve_argument_checks(frames_folder, tmp_path, capsys):
    assert parse_args(["--source", "x", "--serve", "0.0.0.0:8080"]).serve == ("0.0.0.0", 8080)
    assert parse_args(["--source", "x", "--serve", "[::1]:8080"]).serve == ("::1", 8080)
    assert parse_args(["--source", "x", "--serve", ""]).serve is None  # the service's EDGE_LIVE_SERVE= (off)
    for bad in ("8080", "localhost:http", "127.0.0.1:70000", ":8080"):
        with pytest.raises(SystemExit) as exit:
            parse_args(["--source", "x", "--serve", bad])
        assert exit.value.code == 2
        assert "--serve" in capsys.readouterr().err.strip().splitlines()[-1]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        assert main(["--source", str(frames_folder), "--headless", "--serve", f"127.0.0.1:{port}"]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"127.0.0.1:{port}: cannot listen" in err
    (tmp_path / "short").write_text("abc")
    assert main(["--source", str(frames_folder), "--headless", "--serve", "0.0.0.0:0",
                 "--token-file", str(tmp_path / "short")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--token-file" in err


def test_service_setting_is_off_by_default():
    env = dict(line.split("=", 1) for line in (DEPLOY / "edge-live.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["EDGE_LIVE_SERVE"] == ""
    exec_start = next(line for line in (DEPLOY / "edge-live.service").read_text().splitlines()
                      if line.startswith("ExecStart="))
    assert "--serve ${EDGE_LIVE_SERVE}" in exec_start  # ${...}: one argument, empty when off


# -- the pieces -----------------------------------------------------------------------------
def state_of(spec, mode: str = "cell", log: str | None = None) -> LiveState:
    """A run's state as edge-live builds it from the model's spec, without any LiveRun."""
    return LiveState(model="leukemia_int8.tflite", labels=spec.labels,
                     names={code: spec.display_name(code) for code in (*spec.labels, *NON_ANSWERS)},
                     threshold=spec.threshold, mode=mode, source="a folder", log=log)


def test_the_web_module_never_touches_the_live_loop():
    """edge/web.py reads a LiveState and calls its Commands: it neither imports the loop (imports
    inside functions count) nor reaches for a run or its arguments; the state sees neither side."""
    def nodes(name: str) -> list:
        return list(ast.walk(ast.parse((ROOT / "edge" / f"{name}.py").read_text())))

    def imports(name: str) -> set[str]:
        return {node.module for node in nodes(name) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in nodes(name) if isinstance(node, ast.Import) for alias in node.names}
    names = {node.id for node in nodes("web") if isinstance(node, ast.Name)} | {
        node.attr for node in nodes("web") if isinstance(node, ast.Attribute)}
    assert not {"run", "args", "LiveRun"} & names
    assert "edge.live" not in imports("web") and not {"edge.live", "edge.web"} & imports("live_state")


def test_the_server_needs_only_a_state_and_its_commands(tmp_path):
    """What the server shows and does comes from a LiveState written by hand and three commands."""
    log = tmp_path / "live.jsonl"
    log.write_text('{"session":"old","frame":1}\n')  # as edge.live.ResultsLog writes them
    state = state_of(load_spec(resolve_model("leukemia")), mode="field", log=str(log))
    asked = []

    def change_session(name):
        asked.append(name)
        state.session_changed(name, log.stat().st_size, {"images": 0}, {"cells": 0})
        return {"session": name}

    state.session_changed("old", 0, {"images": 0}, {"cells": 0})
    for number, ms in enumerate((3.0, 1.0, 2.0), 1):
        state.frame_done(frames=number, fps=4.0, timings={"invoke": ms}, focus=10.0 * number, focus_peak=30.0,
                         summary={"images": number}, totals={"cells": 2 * number})
    state.publish(cell_frame(1, True)[:, :, ::-1].copy(), {"label": "all", "probability": 0.9}, 3)
    state.add_event("source_lost", "the camera went away")
    server = WebServer(("127.0.0.1", 0), state, token=None)
    server.start(Commands(change_session=change_session, capture=lambda: asked.append("capture"),
                          bench=lambda: None))
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        with urllib.request.urlopen(url + "/api/status", timeout=10) as response:
            status = json.loads(response.read())
        assert status["frames"] == 3 and status["fps"] == 4.0 and status["latency_ms"] == {"invoke": 2.0}
        assert status["session"] == "old" and status["summary"] == {"images": 3} and status["totals"] == {"cells": 6}
        assert status["focus"] == {"value": 30.0, "peak": 30.0, "in_focus_share": 0.9} and status["mode"] == "field"
        assert status["source"] == {"name": "a folder", "state": "lost"} and status["bench"] is False
        assert status["events"][0]["message"] == "the camera went away" and status["thumbnails"][0]["id"] == 1
        assert status["names"]["all"] == "blast" and status["model"] == "leukemia_int8.tflite"
        with urllib.request.urlopen(url + "/api/thumbnail/1.jpg", timeout=10) as response:
            assert response.read()[:2] == b"\xff\xd8"
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("GET", "/stream.mjpg")
        try:
            assert read_part(connection.getresponse())[:2] == b"\xff\xd8"
        finally:
            connection.close()

        assert post("/api/session", {"name": "slide-3"}) == (200, {"session": "slide-3"})
        with open(log, "a") as handle:
            handle.write('{"session":"slide-3","frame":4}\n{"session":"old","frame":5}\n')
        with urllib.request.urlopen(url + "/api/log", timeout=10) as response:
            assert [json.loads(line)["frame"] for line in response.read().splitlines()] == [4]
        assert post("/api/capture", {})[0] == 409  # no bench session: nothing asked of the loop
        assert asked == ["slide-3"]
    finally:
        server.close()


def test_frames_are_encoded_once_for_every_viewer_and_thumbnails_kept():
    buffer = FrameBuffer(max_fps=10)
    assert buffer.jpeg(0, timeout=0.01) is None
    buffer.put(np.zeros((48, 64, 3), np.uint8))
    first, second = buffer.jpeg(0), buffer.jpeg(0)
    assert first == second and first[0] == 1 and buffer.encoded == 1
    assert buffer.jpeg(1, timeout=0.01) is None  # nothing newer yet

    state = state_of(load_spec(resolve_model("leukemia")))
    server = WebServer(("127.0.0.1", 0), state, token=None)
    try:
        frame = cell_frame(1, True)[:, :, ::-1].copy()
        for number in range(3):  # at most one frame's thumbnails a second
            state.publish(frame, {"label": "all", "probability": 0.9}, number)
        state.publish(frame, {"cells": [{"box": [10, 10, 30, 30], "label": "hem", "probability": 0.2}]}, 4)
        assert state.thumbnail(1)[:2] == b"\xff\xd8" and state.thumbnail(2) is None
        server.start(Commands(change_session=None, capture=None, bench=lambda: None))
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/api/log", timeout=10)
        body = error.value.read()
        assert error.value.code == 404 and body.count(b"\n") == 1 and b"--log" in body
    finally:
        server.close()


def test_focus_figure_falls_as_the_image_blurs():
    frame = cell_frame(2, True)
    figures = [focus_measure(frame if k == 0 else cv2.GaussianBlur(frame, (k, k), 0)) for k in (0, 5, 11)]
    assert figures[0] > figures[1] > figures[2] > 0
    box = [(220, 140, 200, 200)]  # over the cells' boxes (field mode): the black around them does not dilute it
    assert focus_measure(frame, box) > figures[0]


# -- a real browser -------------------------------------------------------------------------
@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


PAGE_FIELDS = ("frames", "session", "images", "classified", "positives", "out-of-domain", "fraction", "call")


def page_matches_status(driver, live: Live, timeout: float = 40) -> dict:
    """The page's numbers equal /api/status's, read when no frame came in between (the page polls
    once a second, so this is retried until both saw the same frame)."""
    deadline = time.monotonic() + timeout
    while True:
        before = live.status()
        page = dict(zip(PAGE_FIELDS, driver.execute_script(
            "return arguments[0].map(id => document.getElementById(id).textContent)", PAGE_FIELDS)))
        after = live.status()
        if before["frames"] == after["frames"] == int(page["frames"] or -1) and before["session"] == after["session"]:
            break
        assert time.monotonic() < deadline, (page, after)
        time.sleep(0.15)
    summary = after["summary"]
    assert page["session"] == (after["session"] if after["session"] is not None else "(none)")
    assert [int(page[k]) for k in ("images", "classified", "positives", "out-of-domain")] == [
        summary["images"], summary["classified"], summary["counts"][after["labels"][1]], summary["out_of_domain"]]
    assert page["call"] == after["names"].get(summary["call"], summary["call"])  # in words
    if summary["positive_fraction"] is None:  # nothing in domain yet
        assert page["fraction"] == "-"
    else:
        assert float(page["fraction"].rstrip("%")) == pytest.approx(100 * summary["positive_fraction"], abs=0.051)
    return after


def test_the_page_in_a_headless_browser(browser, frames_folder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    (tmp_path / "token").write_text(TOKEN + "\n")
    # 1 frame a second, as often as the page polls: page_matches_status finds a moment when the page
    # and /api/status saw the same frame even on a loaded machine (at 4 fps it may never come)
    live = Live(frames_folder, tmp_path, "127.0.0.1:0", "--token-file", str(tmp_path / "token"), fps="1")
    live.token = TOKEN
    try:
        _page_follows_the_loop(browser, live, By, WebDriverWait)
    finally:
        live.stop()


def _page_follows_the_loop(browser, live, By, WebDriverWait):
    browser.get(live.url(f"/?token={live.token}"))
    wait = WebDriverWait(browser, 40)
    wait.until(lambda d: d.find_element(By.ID, "frames").text.isdigit())
    image = browser.find_element(By.ID, "live")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 640)  # the stream plays
    first = image.screenshot_as_png
    wait.until(lambda d: image.screenshot_as_png != first)  # the live image updates

    before = page_matches_status(browser, live)
    clicked = live.wait_for_frames(before["frames"] + 3)["frames"]  # the old session has >= 3 inputs
    browser.find_element(By.ID, "session-name").send_keys("patient 7")
    browser.find_element(By.ID, "start-session").click()
    wait.until(lambda d: d.find_element(By.ID, "session").text == "patient 7")
    after = page_matches_status(browser, live)
    assert after["session"] == "patient 7"
    assert after["summary"]["images"] <= after["frames"] - clicked + 1  # the summary started over

    browser.set_window_size(390, 844)  # a phone: nothing wider than the screen
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    long_name = "slide" + "x" * 41  # 46 characters without a space: wrapped, never wider than a phone
    browser.find_element(By.ID, "session-name").send_keys(long_name)
    browser.find_element(By.ID, "start-session").click()
    wait.until(lambda d: d.find_element(By.ID, "session").text.replace("\n", "") == long_name)
    wait.until(lambda d: any(long_name in e.text for e in d.find_elements(By.CSS_SELECTOR, "#events li")))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def test_the_page_says_when_the_source_ended(browser, frames_folder, tmp_path):
    """A folder replayed once: when it ends edge-live stops; the page drops the old frame, rate and
    answer, says so, and asks again less and less often (no error a second in the console)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    run = Live(frames_folder, tmp_path, "127.0.0.1:0", loop=False, fps="2")
    browser.get(run.url("/"))
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "frames").text.isdigit())
    assert browser.find_element(By.ID, "live").is_displayed()
    run.process.wait(timeout=60)  # the 12 images, once
    run.stop()
    wait.until(lambda d: "ended" in d.find_element(By.TAG_NAME, "body").get_attribute("class"))
    assert not browser.find_element(By.ID, "live").is_displayed()
    assert browser.find_element(By.ID, "ended").is_displayed()
    assert browser.find_element(By.ID, "fps").text == "-" and browser.find_element(By.ID, "state").text == "offline"
    browser.get_log("browser")  # from here on: the failed polls
    time.sleep(8)
    refused = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert len(refused) <= 3, refused  # backing off: 2, 4, 8 s ... not one a second


def test_a_frame_that_fails_after_it_was_counted_moves_only_the_count():
    state = state_of(load_spec(resolve_model("leukemia")))
    state.frame_done(frames=3, fps=4.0, timings={"invoke": 1.0}, focus=10.0, focus_peak=30.0,
                     summary={"images": 3}, totals=None)
    state.frame_failed(frames=4, fps=3.5)
    now = state.snapshot()
    assert (now.frames, now.fps, now.summary, now.focus) == (4, 3.5, {"images": 3}, 10.0)
