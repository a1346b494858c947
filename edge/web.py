"""edge-live --serve HOST:PORT: a web page for a device without a screen, from the standard library.

    /                   the page: live view, frame rate and latency, the session summary, focus meter,
                        the latest flagged or positive cells, recent events; it polls /api/status
    /stream.mjpg        the annotated frames, multipart/x-mixed-replace JPEG (picamera2's mjpeg_server)
    /api/status         JSON: frames, fps, median ms per stage, session and its summary, source state,
                        model, focus
    /api/session        POST {"name": "slide-12"} starts a new session, {"end": true} ends the current one
    /api/log            the current session's lines of the --log file (404 without --log)
    /api/thumbnail/N.jpg  one of the latest flagged or positive cells or frames

The server never sees the live loop: it reads the run's state (edge/live_state.py: snapshots, the
newest frame, thumbnails), encodes the stream there on the viewers' threads, and asks the loop only
what its Commands allow (change the session, capture the next frame, the open bench session). Bound
beyond the loopback address, every request needs the token (?token=... or Authorization: Bearer
...). Nothing here writes a file.

A busy bench cannot stop it: at most MAX_CONNECTIONS connections at once (fewer when the file
descriptor limit is low: FD_RESERVE descriptors are always left for the camera, the images and the
log), the rest answered 503 and closed at once; every request (line, headers and body) must arrive
within REQUEST_DEADLINE_S, however slowly it trickles; JSON bodies nest at most MAX_JSON_DEPTH
deep; the Host header must name this server (a loopback bind answers only loopback names, so a
web page on the device cannot reach it through DNS rebinding).
"""
from __future__ import annotations

import errno
import hmac
import io
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from edge.live_state import IN_FOCUS_SHARE

BOUNDARY = "FRAME"
MAX_SESSION_NAME = 100
MIN_TOKEN_LENGTH = 16
THUMBNAIL_PATH = re.compile(r"/api/thumbnail/(\d{1,9})\.jpg")
CELL_PATH = re.compile(r"/api/cells/(\d{1,9})")
CELL_IMAGE_PATH = re.compile(r"/api/cells/(\d{1,9})\.png")
CAPTURE_WAIT_S = 5.0
MAX_CONNECTIONS = 64  # open at once (viewers included); more are answered 503 and closed
FD_RESERVE = 64  # file descriptors never taken by connections: the camera, images, the log, snapshots
FDS_PER_CONNECTION = 2  # its socket, and a file it may read (/api/log)
REQUEST_DEADLINE_S = 10.0  # the whole request, however slowly it trickles in
LISTEN_BACKLOG = 128
MAX_JSON_DEPTH = 8
BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
              b"Connection: close\r\nContent-Length: 52\r\n\r\n"
              b'{"error": "too many connections; try again later"}\r\n')


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_descriptors() -> int:
    """File descriptors this process has open now (Linux: /proc/self/fd; elsewhere a guess of 32)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


def connection_cap(reserve: int = FD_RESERVE) -> int:
    """MAX_CONNECTIONS, or fewer so that connections can never take the descriptors the camera, the
    images and the log need (RLIMIT_NOFILE minus those open now minus `reserve`); at least 2."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(2, min(MAX_CONNECTIONS, (limit - open_descriptors() - reserve) // FDS_PER_CONNECTION))


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings not counted), without
    parsing it: json.loads recurses, and 2,000 nested arrays would raise RecursionError."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_json(body: bytes):
    """The JSON value of a request body; ValueError when it is not JSON or nests too deep."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON nests more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(body)
    except RecursionError:  # not reachable after the depth check; never a dead request
        raise ValueError("the JSON nests too deep") from None


def split_host(value: str) -> str | None:
    """The host name or address of a Host header (port and IPv6 brackets removed, lower case), or
    None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end, rest = value.find("]"), value[value.find("]") + 1:]
        if end < 0 or rest and not re.fullmatch(r":\d{1,5}", rest):
            return None
        return value[1:end]
    if value.count(":") > 1:  # an IPv6 address without brackets is no Host header
        return None
    host, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return host.rstrip(".") or None


def allowed_host(host: str | None, bound: str, names: frozenset[str]) -> bool:
    """Whether a request's Host names this server. Bound to a loopback address: only loopback names
    and addresses (a hostile page's own name, rebound to 127.0.0.1, is refused). Bound to one
    address: that address, loopback, or one of this device's names. Bound to every address: any
    address literal or one of this device's names."""
    if host is None:
        return False
    loopback = host == "localhost" or host.endswith(".localhost") or is_loopback(host)
    if is_loopback(bound):
        return loopback
    if loopback or host in names:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return bound in ("0.0.0.0", "::") or address == ipaddress.ip_address(bound)


def device_names(extra=()) -> frozenset[str]:
    """This device's names as a browser may type them: its host name, with .local (mDNS), and extra."""
    name = socket.gethostname().lower().rstrip(".")
    short = name.split(".")[0]
    return frozenset(n for n in (name, short, f"{short}.local", *(e.lower() for e in extra)) if n)


class DeadlineReader(io.RawIOBase):
    """A connection's reading side that gives up once the request's deadline has passed, however
    slowly bytes trickle in (a socket timeout is per read: one byte every 5 s would never hit it)."""

    def __init__(self, sock: socket.socket, handler: "Handler"):
        self.sock, self.handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took longer than its deadline")
        self.sock.settimeout(min(remaining, self.handler.timeout))
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.handler.timeout)  # writes keep the per-write timeout


def read_token(path: str) -> str:
    """The token in a file (surrounding whitespace ignored); ValueError when unfit."""
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise ValueError(f"needs one token of at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                         "(python3 -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


@dataclass(frozen=True)
class Commands:
    """All the page may ask of the live loop."""
    change_session: Callable[[str | None], dict]  # end the session, start this one (None: none) -> the reply
    capture: Callable[[], None]  # the next frame classified goes into the open bench session
    bench: Callable[[], object]  # the open bench session (edge.bench.Bench), None without one


class WebServer(ThreadingHTTPServer):
    """The HTTP server of one edge-live run, reading only its state (edge.live_state.LiveState) and
    asking only its Commands; binds in the constructor (OSError when it cannot)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], state, token: str | None, max_connections: int | None = None,
                 request_deadline: float = REQUEST_DEADLINE_S, names=()):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.token = token
        self.max_connections = max_connections or connection_cap()
        self.request_deadline = request_deadline
        self.names = device_names(names)
        self.connections = 0  # open now (the accepting thread adds, each handler's thread takes away)
        self.refused = 0  # connections answered 503 since start
        self.state = state
        self.commands: Commands | None = None  # set by start()
        self.stopping = threading.Event()
        self.viewers = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # HTTPServer's would look the host up in DNS (slow offline)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self):
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.05)  # out of descriptors: the pending connection stays queued; no busy loop
            raise

    def verify_request(self, request, client_address) -> bool:
        with self._lock:
            if self.connections < self.max_connections:
                self.connections += 1
                return True
            self.refused += 1
        try:  # a flood is told so and closed, never queued behind the bench
            request.setblocking(False)
            request.send(BUSY_REPLY)
        except OSError:
            pass
        return False

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.connections -= 1

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: the connection is dropped, the server goes on
            with self._lock:
                self.connections -= 1
            self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a viewer went away
        print(f"edge-live: web request from {client_address[0]} failed ({type(error).__name__}: {error})",
              file=sys.stderr, flush=True)

    # -- starting and stopping ----------------------------------------------------------------
    def start(self, commands: Commands) -> None:
        self.commands = commands
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="edge-live web", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.state.frames.close()  # the viewers waiting for a frame stop waiting
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

    def status(self) -> dict:
        state, now = self.state, self.state.snapshot()
        with self._lock:
            viewers = self.viewers
        status = {"frames": now.frames, "fps": round(now.fps, 2), "latency_ms": now.latency_ms,
                  "session": now.session, "summary": now.summary, "labels": list(state.labels),
                  "names": dict(state.names), "threshold": round(state.threshold, 4),
                  "source": {"name": state.source, "state": now.source_state}, "model": state.model,
                  "mode": state.mode,
                  "focus": None if now.focus is None else {"value": round(now.focus, 1),
                                                           "peak": round(now.focus_peak, 1),
                                                           "in_focus_share": IN_FOCUS_SHARE},
                  "thumbnails": list(now.thumbnails), "events": list(now.events), "viewers": viewers,
                  "stream_fps": 1 / state.frames.interval,
                  "connections": {"open": self.connections, "max": self.max_connections, "refused": self.refused},
                  "bench": self.commands.bench() is not None}
        if state.mode == "field":
            status["totals"] = now.totals
        return status


def _session_request(body: bytes) -> tuple[str | None, str | None]:
    """-> (new session name or None to end the current one, error or None)."""
    try:
        request = parse_json(body)
    except ValueError as error:
        return None, f"the body is not JSON ({error})" if "nests" in str(error) else "the body is not JSON"
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

    def setup(self) -> None:
        super().setup()
        self.deadline = time.monotonic() + self.server.request_deadline
        self.rfile.close()  # the socket's own reader: closed, or the socket would outlive shutdown_request
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self), 8192)

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self.server.request_deadline  # each request on a kept connection
        try:
            super().handle_one_request()
        except TimeoutError:
            self.close_connection = True  # a trickle past the deadline: dropped, nothing answered

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not allowed_host(split_host(self.headers.get("Host", "")), str(self.server.server_address[0]),
                            self.server.names):
            self.close_connection = True
            self._json(421, {"error": "the Host header does not name this server (use the address edge-live printed)"})
            return False
        return True

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
        scheme, _, credentials = self.headers.get("Authorization", "").strip().partition(" ")
        offered = [credentials.strip()] if scheme.lower() == "bearer" else []  # schemes are case-insensitive
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
            jpeg = self.server.state.thumbnail(int(match[1]))
            if jpeg is None:
                self._json(404, {"error": "no such thumbnail (only the latest are kept)"})
            else:
                self._send(200, jpeg, "image/jpeg", {"Cache-Control": "private, max-age=600"})  # one id, one image
        elif url.path == "/api/session":
            self._json(405, {"error": 'POST {"name": "..."} or {"end": true}'}, {"Allow": "POST"})
        elif url.path in ("/api/cells", "/api/report", "/api/report.csv", "/api/report.pdf") \
                or CELL_IMAGE_PATH.fullmatch(url.path):
            self._bench_get(url.path)
        else:
            self._json(404, {"error": f"no such page: {url.path}"})

    # -- the bench (--sessions): capture, review, report, export ------------------------------
    def _bench(self):
        bench = self.server.commands.bench()
        if bench is None:
            self._json(409, {"error": "no session folder: edge-live runs without --sessions DIR, or no session is open"})
        return bench

    def _bench_get(self, path: str) -> None:
        bench = self._bench()
        if bench is None:
            return
        from edge import report
        if path == "/api/cells":
            cells = [{"id": c["cell"], "capture": c["capture"], "label": c.get("label"),
                      "probability": c.get("probability"), "out_of_domain": c.get("out_of_domain"),
                      "review": c["review"], "thumbnail": f"api/cells/{c['cell']}.png"} for c in bench.cells()]
            self._json(200, {"session": bench.meta["name"], "id": bench.id, "labels": list(bench.labels),
                             "names": bench.meta["names"], "cells": cells, "summary": bench.summary()})
        elif match := CELL_IMAGE_PATH.fullmatch(path):
            crop = bench.crop_path(int(match[1]))
            if crop is None:
                self._json(404, {"error": "no such cell"})
                return
            self._send(200, crop.read_bytes(), "image/png", {"Cache-Control": "private, max-age=600"})
        elif path == "/api/report":
            self._json(200, report.report(bench))
        elif path == "/api/report.csv":
            self._send(200, report.report_csv(report.report(bench)), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="report-{bench.id}.csv"'})
        else:
            try:
                pdf = report.report_pdf(report.report(bench))
            except ImportError:
                self._json(501, {"error": "the PDF report needs fpdf2: pip install 'edge-medical[report]'"})
                return
            self._send(200, pdf, "application/pdf",
                       {"Content-Disposition": f'attachment; filename="report-{bench.id}.pdf"'})

    def _bench_post(self, path: str, body) -> None:
        from edge.bench import SessionLocked
        bench = self._bench()
        if bench is None:
            return
        try:
            if path == "/api/capture":
                before = bench.captures
                self.server.commands.capture()
                after = bench.wait_for_capture(before, CAPTURE_WAIT_S)
                if after <= before:
                    self._json(503, {"error": "no frame was captured (is the source running?)"})
                    return
                cells = [c["cell"] for c in bench.cells() if c["capture"] == after]
                self._json(200, {"capture": after, "cells": cells})
            elif match := CELL_PATH.fullmatch(path):
                label = body.get("label") if isinstance(body, dict) else None
                if not isinstance(label, str):
                    self._json(400, {"error": 'send {"label": "<class code or not_a_cell>"}'})
                    return
                by = body.get("by")
                record = bench.review(int(match[1]), label, by if isinstance(by, str) and by.isprintable() else None)
                self._json(200, {"review": record, "summary": bench.summary()})
            elif path == "/api/approve":
                by = body.get("by") if isinstance(body, dict) else None
                if not isinstance(by, str) or not by.strip() or len(by) > MAX_SESSION_NAME or not by.isprintable():
                    self._json(400, {"error": f'send {{"by": "<who approves, 1-{MAX_SESSION_NAME} characters>"}}'})
                    return
                self._json(200, {"approved": bench.approve(by.strip()), "summary": bench.summary()})
            else:  # /api/export
                self._json(200, bench.export())
        except SessionLocked as error:
            self._json(409, {"error": str(error)})
        except KeyError:
            self._json(404, {"error": "no such cell"})
        except ValueError as error:
            self._json(400, {"error": str(error)})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._authorized(url):
            return
        bench_post = url.path in ("/api/capture", "/api/approve", "/api/export") or CELL_PATH.fullmatch(url.path)
        if url.path != "/api/session" and not bench_post:
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
        if bench_post:
            try:
                body = parse_json(self.rfile.read(int(length)))
            except ValueError as error:
                self._json(400, {"error": f"the body is not JSON ({error})"})
                return
            self._bench_post(url.path, body)
            return
        name, error = _session_request(self.rfile.read(int(length)))
        if error:
            self._json(400, {"error": error})
            return
        self._json(200, self.server.commands.change_session(name))

    def _stream(self) -> None:
        self._headers(200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", extra={"Pragma": "no-cache", "Age": "0"})
        frames, stopping, number = self.server.state.frames, self.server.stopping, 0
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
        log = self.server.state.log
        if not log:
            self._json(404, {"error": "edge-live runs without --log: there is no results log"})
            return
        now = self.server.state.snapshot()
        session, offset = now.session, now.session_offset
        needle = b'"session":' + json.dumps(session).encode()
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", session or "no-session")[:60]
        try:
            handle = open(log, "rb")
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

PAGE = (resources.files("edge") / "live_page.html").read_text(encoding="utf-8")  # package data

