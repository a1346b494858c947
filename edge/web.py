"""edge-live --serve HOST:PORT: a web page for a device without a screen, from the standard library.

    /                   the page: live view, frame rate and latency, the session summary, focus meter,
                        the latest flagged or positive cells, recent events; it polls /api/status
    /stream.mjpg        the annotated frames, multipart/x-mixed-replace JPEG (picamera2's mjpeg_server)
    /api/status         JSON: frames, fps, median ms per stage, session and its summary, source state,
                        model, focus
    /api/session        POST {"name": "slide-12"} starts a new session, {"end": true} ends the current one
    /api/log            the current session's lines of the --log file (404 without --log)
    /api/thumbnail/N.jpg  one of the latest flagged or positive cells or frames

The loop only hands over references (the newest annotated frame, events, a thumbnail at most once a
second); JPEG encoding happens here, at most once per frame and at most --serve-fps times a second
whoever watches, so viewers never slow classification. Bound beyond the loopback address, every
request needs the token (?token=... or Authorization: Bearer ...). Nothing here writes a file.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from importlib import resources
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qs, urlsplit

import cv2

BOUNDARY = "FRAME"
JPEG_QUALITY = 75
THUMBNAILS_KEPT = 8
THUMBNAIL_SIDE = 160
THUMBNAIL_INTERVAL_S = 1.0  # at most one flagged/positive frame's thumbnails a second
EVENTS_KEPT = 20
STATUS_FRAMES = 300  # /api/status medians: the latest frames
MAX_SESSION_NAME = 100
MIN_TOKEN_LENGTH = 16
THUMBNAIL_PATH = re.compile(r"/api/thumbnail/(\d{1,9})\.jpg")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in a file (surrounding whitespace ignored); ValueError when unfit."""
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise ValueError(f"needs one token of at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                         "(python3 -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class FrameBuffer:
    """The newest annotated BGR frame. put() stores a reference (no copy, no encoding: the loop's
    frame is not drawn on afterwards); jpeg() encodes on the caller's thread, at most once per
    frame and at most once per interval, and shares the bytes with every viewer."""

    def __init__(self, max_fps: float):
        self.interval = 1.0 / max_fps
        self._condition = threading.Condition()
        self._frame = None
        self._number = 0
        self._closed = False
        self._encode_lock = threading.Lock()
        self._jpeg, self._jpeg_number, self._jpeg_time = b"", 0, float("-inf")
        self.encoded = 0

    def put(self, bgr) -> None:
        with self._condition:
            self._frame = bgr
            self._number += 1
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def jpeg(self, newer_than: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """(frame number, JPEG) once a frame newer than newer_than exists; None on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self._number > newer_than or self._closed, timeout)
            if self._number <= newer_than or self._closed:
                return None
        with self._encode_lock:
            recent = time.monotonic() - self._jpeg_time < self.interval
            if not (self._jpeg_number > newer_than and recent):
                with self._condition:
                    frame, number = self._frame, self._number
                if number != self._jpeg_number:
                    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                    if not ok:
                        return None
                    self._jpeg, self._jpeg_number, self._jpeg_time = data.tobytes(), number, time.monotonic()
                    self.encoded += 1
            return self._jpeg_number, self._jpeg


class WebServer(ThreadingHTTPServer):
    """The HTTP server of one edge-live run; binds in the constructor (OSError when it cannot)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str | None, max_fps: float = 10.0):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.token = token
        self.frames = FrameBuffer(max_fps)
        self.run = None  # the LiveRun, set by start()
        self.stopping = threading.Event()
        self.source_state = "running"
        self.viewers = 0
        self._lock = threading.Lock()
        self._events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self._thumbnails: deque[tuple[dict, bytes]] = deque(maxlen=THUMBNAILS_KEPT)
        self._thumbnail_count = 0
        self._last_thumbnail = float("-inf")
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # HTTPServer's would look the host up in DNS (slow offline)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a viewer went away
        print(f"edge-live: web request from {client_address[0]} failed ({type(error).__name__}: {error})",
              file=sys.stderr, flush=True)

    # -- the run's side ------------------------------------------------------------------------
    def start(self, run) -> None:
        self.run = run
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="edge-live web", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.frames.close()
        if self._thread is not None:
            self.shutdown()
        self.server_close()

    def page_url(self, token_shown: str | None = None) -> str:
        """The page's address (this device's name when bound to every address), with the token or
        token_shown in its place."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/" + (f"?token={token_shown or self.token}" if self.token else "")

    def add_event(self, kind: str, message: str) -> None:
        with self._lock:
            self._events.append({"time": _now_iso(), "kind": kind, "message": message})
            if kind == "source_lost":
                self.source_state = "lost"
            elif kind == "source_reopened":
                self.source_state = "running"

    def publish(self, bgr, record: dict, number: int, spec, rgb=None) -> None:
        """The loop's hand-over after each frame: the annotated frame, and thumbnails of flagged or
        positive cells cut from the frame as captured (rgb; at most once a second, a few small JPEGs)."""
        self.frames.put(bgr)
        now = time.monotonic()
        if now - self._last_thumbnail < THUMBNAIL_INTERVAL_S:
            return
        positive_label, positive_name = spec.labels[1], spec.display_name(spec.labels[1])

        def caption(result: dict) -> str:
            mark = "" if result["label"] in spec.labels else "? "
            return f"{mark}{spec.display_name(result['label'])}, P({positive_name}) {result['probability']:.0%}"

        def shown(result: dict) -> bool:
            return result["label"] == positive_label or result["label"] not in spec.labels

        if "cells" in record:
            picks = [(c["box"], caption(c)) for c in record["cells"] if shown(c)][:2]
        elif "label" in record and shown(record):
            picks = [(None, caption(record))]
        else:
            picks = []
        if picks:
            self._last_thumbnail = now
        for box, caption in picks:
            self._add_thumbnail(bgr if rgb is None else rgb, box, f"frame {number}: {caption}", rgb is not None)

    def _add_thumbnail(self, image, box, caption: str, is_rgb: bool) -> None:
        if box is not None:
            x, y, width, height = box
            margin = max(width, height) // 2
            image = image[max(0, y - margin):y + height + margin, max(0, x - margin):x + width + margin]
        scale = THUMBNAIL_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        if is_rgb:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            with self._lock:
                self._thumbnail_count += 1
                self._thumbnails.append(({"id": self._thumbnail_count, "caption": caption, "time": _now_iso()},
                                         data.tobytes()))

    # -- the server's side ---------------------------------------------------------------------
    def thumbnail(self, number: int) -> bytes | None:
        with self._lock:
            return next((jpeg for info, jpeg in self._thumbnails if info["id"] == number), None)

    def status(self) -> dict:
        run = self.run
        with run.session_lock:
            session, summary, frames, fps = run.args.session, run.summary.as_dict(), run.frames, run.fps()
            totals = dict(run.totals)
            focus = run.focus_history[-1] if run.focus_history else None
            peak = max(run.focus_history) if run.focus_history else None
        stages = {stage: list(values)[-STATUS_FRAMES:] for stage, values in list(run.stage_ms.items())}
        with self._lock:
            events = list(reversed(self._events))
            thumbnails = [info for info, _ in reversed(self._thumbnails)]
            state, viewers = self.source_state, self.viewers
        status = {"frames": frames, "fps": round(fps, 2),
                  "latency_ms": {stage: round(sorted(v)[len(v) // 2], 2) for stage, v in stages.items() if v},
                  "session": session, "summary": summary, "labels": list(run.classifier.labels),
                  "names": {code: run.classifier.spec.display_name(code)
                            for code in (*run.classifier.labels, "uncertain", "out_of_domain", "rejected")},
                  "threshold": round(run.classifier.spec.threshold, 4),
                  "source": {"name": str(run.source), "state": state}, "model": run.classifier.model_path.name,
                  "mode": run.args.mode,
                  "focus": None if focus is None else {"value": round(focus, 1), "peak": round(peak, 1)},
                  "thumbnails": thumbnails, "events": events, "viewers": viewers, "stream_fps": 1 / self.frames.interval}
        if run.args.mode == "field":
            status["totals"] = totals
        return status


def _session_request(body: bytes) -> tuple[str | None, str | None]:
    """-> (new session name or None to end the current one, error or None)."""
    try:
        request = json.loads(body)
    except ValueError:
        return None, "the body is not JSON"
    if not isinstance(request, dict):
        return None, 'send {"name": "slide-12"} or {"end": true}'
    if request.get("end") is True and "name" not in request:
        return None, None
    name = request.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_SESSION_NAME \
            or not name.strip().isprintable():
        return None, f'"name" must be 1-{MAX_SESSION_NAME} printable characters (or send {{"end": true}})'
    return name.strip(), None


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "edge-live"
    sys_version = ""
    timeout = 15  # a viewer that stops reading is dropped, not kept forever

    def log_message(self, format, *args) -> None:
        pass  # quiet: a request line can carry the token

    def _headers(self, status: int, content_type: str, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                            "Referrer-Policy": "no-referrer", **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        self.wfile.write(body)

    def _json(self, status: int, data: dict, extra: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode() + b"\n", "application/json", extra)

    def _authorized(self, url) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        offered = [header[7:].strip()] if header.startswith("Bearer ") else []
        offered += parse_qs(url.query).get("token", [])[:1]
        if any(hmac.compare_digest(given.encode(), token.encode()) for given in offered):
            return True
        self._json(401, {"error": "this page needs its token: ?token=... or Authorization: Bearer ..."},
                   {"WWW-Authenticate": 'Bearer realm="edge-live"'})
        return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._authorized(url):
            return
        if url.path in ("/", "/index.html"):
            self._send(200, PAGE.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_POLICY})
        elif url.path == "/stream.mjpg":
            self._stream()
        elif url.path == "/api/status":
            self._json(200, self.server.status())
        elif url.path == "/api/log":
            self._log()
        elif match := THUMBNAIL_PATH.fullmatch(url.path):
            jpeg = self.server.thumbnail(int(match[1]))
            if jpeg is None:
                self._json(404, {"error": "no such thumbnail (only the latest are kept)"})
            else:
                self._send(200, jpeg, "image/jpeg", {"Cache-Control": "private, max-age=600"})  # one id, one image
        elif url.path == "/api/session":
            self._json(405, {"error": 'POST {"name": "..."} or {"end": true}'}, {"Allow": "POST"})
        else:
            self._json(404, {"error": f"no such page: {url.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._authorized(url):
            return
        if url.path != "/api/session":
            self._json(404, {"error": f"nothing to post to at {url.path}"})
            return
        # JSON only: a cross-site form cannot send it without the browser asking first (no CORS here)
        if self.headers.get_content_type() != "application/json":
            self._json(415, {"error": "send Content-Type: application/json"})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or not 0 < int(length) <= 4096:
            self._json(400, {"error": "send a JSON body of at most 4096 bytes"})
            return
        name, error = _session_request(self.rfile.read(int(length)))
        if error:
            self._json(400, {"error": error})
            return
        self._json(200, self.server.run.change_session(name))

    def _stream(self) -> None:
        self._headers(200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", extra={"Pragma": "no-cache", "Age": "0"})
        frames, stopping, number = self.server.frames, self.server.stopping, 0
        with self.server._lock:
            self.server.viewers += 1
        try:
            while not stopping.is_set():
                got = frames.jpeg(number, timeout=1.0)
                if got is None:
                    continue
                sent = time.monotonic()
                number, jpeg = got
                self.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                 % (BOUNDARY.encode(), len(jpeg), jpeg))
                stopping.wait(max(0.0, frames.interval - (time.monotonic() - sent)))
        except OSError:  # the viewer went away (BrokenPipe, ConnectionReset, a send timeout)
            pass
        finally:
            self.close_connection = True
            with self.server._lock:
                self.server.viewers -= 1

    def _log(self) -> None:
        run = self.server.run
        if not run.args.log:
            self._json(404, {"error": "edge-live runs without --log: there is no results log"})
            return
        with run.session_lock:
            session, offset = run.args.session, run.session_offset
        needle = b'"session":' + json.dumps(session).encode()
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", session or "no-session")[:60]
        try:
            handle = open(run.args.log, "rb")
        except OSError as error:
            self._json(404, {"error": f"cannot read the log ({error.strerror or error})"})
            return
        with handle:
            end = os.fstat(handle.fileno()).st_size
            if offset > end:  # the file was truncated or rotated since
                offset = 0
            handle.seek(offset)
            self._headers(200, "application/x-ndjson",
                          extra={"Content-Disposition": f'attachment; filename="{name}.jsonl"'})
            chunk, size, read = [], 0, offset
            for line in handle:  # line by line, as far as the file went when asked: bounded memory
                read += len(line)
                if read > end or not line.endswith(b"\n"):
                    break
                if needle not in line:
                    continue
                try:
                    if json.loads(line).get("session") != session:
                        continue
                except ValueError:
                    continue
                chunk.append(line)
                size += len(line)
                if size >= 1 << 16:
                    self.wfile.write(b"".join(chunk))
                    chunk, size = [], 0
            self.wfile.write(b"".join(chunk))
        self.close_connection = True


PAGE_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

PAGE = (resources.files("edge") / "static" / "index.html").read_text(encoding="utf-8")  # package data

