"""edge-live: classify frames from a camera in real time, with or without a screen.

    edge-live --source picamera2                       # Pi camera, one segmented cell in view
    edge-live --source 0 --mode field --log run.jsonl  # USB microscope camera, count blasts per field
    edge-live --source video.mp4 --headless --max-frames 300
    edge-live --source picamera2 --mode field --camera-size 1280x960 --camera-fps 10   # Pi HQ camera, binned
    edge-live --source 0 --mode field --sessions ~/sessions --serve 127.0.0.1:8080 --auto-capture
    edge-live --list-cameras

SOURCE is picamera2[:N], a camera index (0 = /dev/video0), a video file or stream URL, or a folder
of images (replayed at --fps). Capture runs in its own thread and only the newest frame is
classified, except from a file or folder read with --fps 0: then every frame is. A lost camera is
reopened with backoff. Ctrl-C or SIGTERM stop cleanly.
With a window: `s` saves a snapshot, `c` captures (--sessions), `q` quits. Headless: SIGUSR1 saves a
snapshot (--snapshots) and captures (--sessions); from a terminal, a line `c` (c, then Enter) captures.
--serve HOST:PORT serves a web page with the live view, the session and a focus meter (edge/web.py).
--sessions DIR keeps each session's captured fields or cells for review (edge/bench.py); a capture is
asked for by a key above, the page's button or key, POST /api/capture, or --auto-capture (a new
view, settled and in focus: edge/auto_capture.py).

Exit status: 0 on a normal stop, 1 when the source cannot be opened, 2 for a usage or model error.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import signal
import statistics
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone

import numpy as np

from edge.args import frame_rate, host_port, positive_int, positive_number, thread_count, unwritable_file, unwritable_folder
from edge.classifier import NON_ANSWERS, STAGES, Classifier, thread_report
from edge.interpreter import RUNTIMES, RuntimeUnavailable
from edge.metadata import ModelError
from edge.sources import (CameraSettings, FolderSource, LatestFrame, SourceError, list_cameras, open_source,
                          parse_fourcc, parse_size)
from edge.summary import SessionSummary, summary_line

STATUS_INTERVAL_S = 2.0
SCALE_HISTORY = 50  # field mode: the red-cell scale is the median estimate of the latest frames
STAGE_HISTORY = 1000  # the summary's medians are over at most this many latest frames
POSITIVE_SNAPSHOT_INTERVAL_S = 1.0  # at most one snapshot a second when saving every positive
FOCUS_HISTORY = 150  # the focus bar is full at the best figure of the latest frames (5 s at 30 fps)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="picamera2[:N], a camera index, a video file/URL, or a folder")
    parser.add_argument("--list-cameras", action="store_true", help="list the attached cameras and exit")
    parser.add_argument("--camera-size", type=_argument(parse_size), metavar="WxH",
                        help="camera frame size (picamera2: the size of the stream read; default 640x480 main, "
                             "320x240 lores; OpenCV camera: asked of the driver)")
    parser.add_argument("--camera-fps", type=positive_number, help="frames a second asked of the camera "
                                                                   "(picamera2: FrameDurationLimits; OpenCV: CAP_PROP_FPS)")
    parser.add_argument("--camera-stream", choices=("main", "lores"),
                        help="picamera2 stream read (default: main in field mode, lores in cell mode)")
    parser.add_argument("--camera-fourcc", type=_argument(parse_fourcc), metavar="CODE",
                        help="OpenCV camera pixel format, e.g. MJPG (more frames a second over USB 2) or YUYV")
    parser.add_argument("--model", help="a .tflite path or a shipped name (default: the device's configured model)")
    parser.add_argument("--mode", choices=("cell", "field"), default="cell",
                        help="cell: the frame is one cell or scan; field: find and classify every white cell")
    parser.add_argument("--threads", type=thread_count, help="interpreter threads (1-64)")
    parser.add_argument("--runtime", choices=RUNTIMES, help="force a TFLite runtime")
    parser.add_argument("--max-frames", type=positive_int, help="stop after classifying this many frames")
    parser.add_argument("--duration", type=positive_number, help="stop after this many seconds")
    parser.add_argument("--fps", type=frame_rate,
                        help="replay rate of a folder or video file (0: as fast as possible, every frame classified)")
    parser.add_argument("--loop", action="store_true", help="replay a folder or video file forever")
    parser.add_argument("--log", help="append one JSON line per frame (and per camera event) to this file")
    parser.add_argument("--snapshots", help="folder for snapshots (key s, SIGUSR1, or --snapshot-positives)")
    parser.add_argument("--snapshot-positives", action="store_true", help="save a snapshot of positive frames (<= 1/s)")
    parser.add_argument("--include-edge-cells", action="store_true",
                        help="field mode: also classify cells cut by the frame border")
    parser.add_argument("--um-per-pixel", type=positive_number,
                        help="field mode: the camera's micrometres per pixel (default: estimated from the red cells)")
    parser.add_argument("--headless", action="store_true", help="no window even when a display exists")
    parser.add_argument("--no-quality", action="store_true", help="skip the input quality gates")
    parser.add_argument("--label-all", action="store_true",
                        help="give every input a class, even one that is uncertain, out of domain or rejected")
    parser.add_argument("--session", default="session",
                        help="name of this session (a slide, a patient), in every log record with its running summary")
    parser.add_argument("--sessions", metavar="DIR",
                        help="keep each session in a folder under DIR: captured fields or cells (the page's capture "
                             "button, POST /api/capture, SIGUSR1), their answers, reviews and report (edge/bench.py)")
    parser.add_argument("--auto-capture", action="store_true",
                        help="with --sessions: capture a view by itself once it has changed since the last capture, "
                             "is steady and in focus (edge/auto_capture.py)")
    parser.add_argument("--serve", type=host_port, metavar="HOST:PORT",
                        help="serve the live page, stream and API (127.0.0.1:8080: this device only; any other "
                             "address needs a token; empty: off)")
    parser.add_argument("--serve-fps", type=positive_number, default=10.0,
                        help="most frames a second streamed to viewers (default 10)")
    parser.add_argument("--token-file", help="the token that --serve asks every request for (default beyond "
                                             "127.0.0.1: one generated and printed once at start)")
    args = parser.parse_args(argv)
    if not args.source and not args.list_cameras:
        parser.error("the following arguments are required: --source")
    if args.snapshot_positives and not args.snapshots:
        parser.error("--snapshot-positives needs --snapshots DIR")
    if args.auto_capture and not args.sessions:
        parser.error("--auto-capture needs --sessions DIR")
    return args


def _argument(parse):
    """An argparse type from a parser raising ValueError with a one-line message."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return convert


def camera_settings(args: argparse.Namespace) -> CameraSettings:
    return CameraSettings(size=args.camera_size, fps=args.camera_fps, stream=args.camera_stream,
                          fourcc=args.camera_fourcc)


class ResultsLog:
    """Append-only JSON lines that survive a full disk and a power cut: each record goes to the file
    in one write() on an O_APPEND descriptor, and a write that fails or falls short is cut back off,
    so the file only ever holds whole lines. While writing fails, records are dropped (counted) and
    every later record retries; a half line left by a power cut is cut off at the next start."""

    def __init__(self, path: str, on_problem=None):
        self.path = path
        self.on_problem = on_problem or (lambda message: None)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.dropped = 0  # records not written since the last one that was
        self._cut_partial_line()

    def _cut_partial_line(self) -> None:
        size = os.fstat(self.fd).st_size
        if not size or os.pread(self.fd, 1, size - 1) == b"\n":
            return
        start = max(0, size - (1 << 20))
        tail = os.pread(self.fd, size - start, start)
        os.ftruncate(self.fd, start + tail.rfind(b"\n") + 1 if b"\n" in tail else start)

    def write(self, record: dict) -> bool:
        """-> True when the record is in the file, whole."""
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        size = os.fstat(self.fd).st_size
        try:
            written = os.write(self.fd, data)
            if written != len(data):
                raise OSError(28, f"short write ({written} of {len(data)} bytes)")
        except OSError as error:
            try:
                os.ftruncate(self.fd, size)
            except OSError:
                pass
            if not self.dropped:
                self.on_problem(f"cannot write the log {self.path} ({error.strerror or error}); "
                                "still classifying, retrying with every record")
            self.dropped += 1
            return False
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.write({"time": now_iso(), "event": "log_resumed", "records_lost": dropped})
            self.on_problem(f"writing the log {self.path} again; {dropped} records were lost")
        return True

    def close(self) -> None:
        os.close(self.fd)


def _answer_fields(result) -> dict:
    """A result in a log record: the answer (class code or non-answer), why, the calibrated probability."""
    return {"label": result.label, **({"reason": result.reason} if result.reason else {}),
            "probability": round(result.probability, 6), "model_label": result.model_label}


def _domain_fields(result) -> dict:
    if result.domain_score is None:
        return {}
    return {"domain_score": round(result.domain_score, 3), "out_of_domain": result.out_of_domain}


def say(message: str) -> None:
    """One line on stderr (a closed stderr is not a reason to stop classifying)."""
    try:
        print(f"edge-live: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def read_terminal_captures(fd: int, capture: threading.Event, stop: threading.Event) -> None:
    """A line `c` typed on the terminal (fd) sets `capture`; any other line is ignored. Run in a thread:
    it waits on the terminal at most 0.5 s at a time, so neither the loop nor the stop ever waits for
    it. It ends at `stop`, at the end of input or on a read error, and reads nothing while edge-live
    is a background job of that terminal (a read would stop the process: SIGTTIN)."""
    pending = b""
    while not stop.is_set():
        try:
            try:
                background = os.tcgetpgrp(fd) != os.getpgrp()
            except OSError:  # not this process's controlling terminal: reading it never stops the process
                background = False
            if background:
                stop.wait(0.5)
                continue
            if not select.select([fd], [], [], 0.5)[0]:
                continue
            data = os.read(fd, 1024)
        except OSError:
            return
        if not data:
            return
        *lines, pending = (pending + data).split(b"\n")
        pending = pending[-64:]  # a line is a key, not a document
        if any(line.strip() == b"c" for line in lines):
            capture.set()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LiveRun:
    """One run of the capture -> classify -> overlay -> log loop. With --serve it writes what the page
    shows into `state` (edge.live_state.LiveState) and knows nothing of the server."""

    def __init__(self, args: argparse.Namespace, classifier, source, log: ResultsLog | None, state):
        self.args, self.classifier, self.source, self.log, self.state = args, classifier, source, log, state
        self.session = args.session  # changed by change_session (args stay as given)
        self.positive_label = classifier.labels[1]
        self.stop_requested = threading.Event()
        self.snapshot_requested = threading.Event()
        self.capture_requested = threading.Event()  # --sessions: the next frame classified enters the session
        self.bench = None  # the session's folder (edge.bench.Bench) with --sessions
        self.auto_capture = None  # --auto-capture: decides when a frame is captured by itself
        if args.auto_capture:
            from edge.auto_capture import AutoCapture
            self.auto_capture = AutoCapture()
        self.last_crops = None  # field mode: the latest frame's cell crops and its micrometres per pixel
        self.frame_times: deque[float] = deque(maxlen=30)
        # the latest STAGE_HISTORY timings per stage (a service runs for weeks: bounded memory)
        self.stage_ms: dict[str, deque[float]] = {}
        self.frames = 0
        self.totals = {"cells": 0, "blasts": 0, "out_of_domain": 0}
        self.scale_estimates: deque[float] = deque(maxlen=SCALE_HISTORY)
        self.summary = SessionSummary(classifier.labels, classifier.spec.session_rule)
        self.last_positive_snapshot = 0.0
        self.window = None if args.headless else self._open_window()
        self.skipped_reported = 0
        self.failed_frames = 0
        self.focus_history: deque[float] = deque(maxlen=FOCUS_HISTORY)
        # session, summary and totals change together (a frame, or a session started from the web page)
        self.session_lock = threading.Lock()
        self._publish_session(os.fstat(log.fd).st_size if log else 0)  # where this run's session starts in the log

    # -- events and output ------------------------------------------------------------------
    def event(self, kind: str, message: str) -> None:
        say(message)
        if self.state:
            self.state.add_event(kind, message)
        if self.log:
            self.log.write({"time": now_iso(), "event": kind, "source": str(self.source), "message": message})

    def _open_window(self):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return None
        import cv2
        try:
            cv2.namedWindow("edge-live", cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            print("edge-live: this OpenCV build has no window support; running headless", file=sys.stderr)
            return None
        return "edge-live"

    # -- one frame ----------------------------------------------------------------------------
    def classify_cell_frame(self, rgb: np.ndarray):
        """-> (log record, draw(frame), stage timings, positive?)"""
        result = self.classifier.classify(rgb)
        record = {**_answer_fields(result), **_domain_fields(result)}
        if result.issues:
            record["issues"] = result.issues
        positive = result.label == self.positive_label
        self.summary.add(result.label, result.probability)
        spec = self.classifier.spec

        def draw(frame):
            from edge.overlay import draw_label
            draw_label(frame, spec.display_name(result.label), result.probability, spec.display_name(spec.labels[1]),
                       positive, not result.answered)

        timings = {stage: ms for stage, ms in result.timings_ms.items() if stage != "decode"}
        return record, draw, timings, positive

    def classify_field_frame(self, rgb: np.ndarray):
        from edge.field import cell_crops, find_white_cells, model_input, working_copy
        started = time.perf_counter()
        work = working_copy(rgb)  # one reduced copy for the cell finder and the red-cell scale
        found = find_white_cells(rgb, work=work)
        # A cell cut by the frame border is not a whole cell as in training: drawn, not classified
        # (unless --include-edge-cells), the way a manual count takes only whole cells of a field.
        include_cut = self.args.include_edge_cells
        cells = [c for c in found if include_cut or not c.touches_edge]
        cut = [c for c in found if c.touches_edge and not include_cut]
        um_per_pixel, scale_source = self.field_scale(rgb, found, work)
        crops = cell_crops(rgb, cells)
        self.last_crops = (crops, um_per_pixel)
        detected = time.perf_counter()
        # at the training magnification, each cell's input is resampled once from its crop
        prepare = None if um_per_pixel is None else (
            lambda crop: model_input(crop, um_per_pixel, self.classifier.preprocessing))
        results = self.classifier.classify_batch(crops, prepare)
        share = {stage: sum(r.timings_ms.get(stage, 0.0) for r in results) for stage in STAGES if stage != "decode"}
        flagged = sum(r.label in ("out_of_domain", "rejected") for r in results)
        count = len(results) - flagged  # a cell out of domain is neither a blast nor a normal cell
        blasts = sum(r.label == self.positive_label for r in results)
        for r in results:
            self.summary.add(r.label, r.probability)
        self.totals["cells"] += count
        self.totals["blasts"] += blasts
        self.totals["out_of_domain"] += flagged
        record = {"cells": [{"box": [int(v) for v in cell.box], **_answer_fields(r),
                             **_domain_fields(r), **({"issues": r.issues} if r.issues else {})}
                            for cell, r in zip(cells, results)],
                  "scale": {"um_per_pixel": None if um_per_pixel is None else round(um_per_pixel, 4),
                            "source": scale_source},
                  "counts": {"cells": count, "blasts": blasts, "out_of_domain": flagged, "edge_cells_skipped": len(cut),
                             "blast_ratio": round(blasts / count, 4) if count else None},
                  "totals": {**self.totals, "blast_ratio": round(self.totals["blasts"] / self.totals["cells"], 4)
                             if self.totals["cells"] else None}}

        def draw(frame):
            from edge.overlay import draw_cell, draw_unclassified
            for cell in cut:
                draw_unclassified(frame, cell.box)
            for cell, r in zip(cells, results):
                draw_cell(frame, cell.box, r.probability, r.label == self.positive_label, not r.answered)

        timings = {"detect": (detected - started) * 1000, **share}
        return record, draw, timings, blasts > 0

    def captured_crops(self) -> list[np.ndarray]:
        """The latest field frame's cells as a session keeps them: at the training magnification
        (C-NMC-like images, for review and training) when the scale is known."""
        from edge.field import rescale_crops
        crops, um_per_pixel = self.last_crops
        return crops if um_per_pixel is None else rescale_crops(crops, um_per_pixel)

    def field_scale(self, rgb: np.ndarray, cells, work=None) -> tuple[float | None, str]:
        """-> (micrometres per pixel, where it came from): the --um-per-pixel setting, else the median
        of the red-cell estimates of the latest frames, else None (crops left at the camera's scale)."""
        from edge.field import estimate_um_per_pixel
        if self.args.um_per_pixel:
            return self.args.um_per_pixel, "setting"
        estimate = estimate_um_per_pixel(rgb, cells, work)
        if estimate is not None:
            self.scale_estimates.append(estimate)
        if not self.scale_estimates:
            return None, "none (no red cells seen yet)"
        return float(np.median(self.scale_estimates)), f"red cells, median of {len(self.scale_estimates)} frames"

    def status_lines(self, latency_ms: float) -> list[str]:
        lines = [f"{self.fps():.1f} fps  {latency_ms:.0f} ms"]
        if self.args.mode == "field":
            ratio = self.totals["blasts"] / self.totals["cells"] if self.totals["cells"] else 0.0
            positive = self.classifier.spec.display_name(self.positive_label)
            lines.append(f"cells {self.totals['cells']}  {positive} {self.totals['blasts']} ({ratio:.0%})"
                         + (f"  ? {self.totals['out_of_domain']}" if self.totals["out_of_domain"] else ""))
        call = self.classifier.spec.display_name(self.summary.as_dict()["call"])
        name = self.session or "no session"  # the call first: a long name never hides it
        lines.append(f"{call}: {name if len(name) <= 24 else name[:21] + '...'}")
        return lines

    def change_session(self, name: str | None) -> dict:
        """End the current session (a session_end record with its final summary) and start `name`
        (session_start), or none: records then carry "session": null until one is started. The
        running summary and field totals start over."""
        with self.session_lock:
            ended, final = self.session, self.summary.as_dict()
            if self.log and ended is not None:
                self.log.write({"time": now_iso(), "event": "session_end", "session": ended, "summary": final,
                                **({"totals": dict(self.totals)} if self.args.mode == "field" else {})})
            offset = os.fstat(self.log.fd).st_size if self.log else 0
            if self.log and name is not None:
                self.log.write({"time": now_iso(), "event": "session_start", "session": name})
            self.session = name
            if self.args.sessions:
                from edge.bench import start_for_run
                start_for_run(self, name)
            self.summary = SessionSummary(self.classifier.labels, self.classifier.spec.session_rule)
            self.totals = dict.fromkeys(self.totals, 0)
            self._publish_session(offset)
        message = (f"session {ended!r} ended ({final['images']} inputs, call {final['call']}); " if ended is not None
                   else "") + (f"session {name!r} started" if name is not None else "no session until one is started")
        say(message)
        if self.state:
            self.state.add_event("session", message)
        return {"ended": ended, "ended_summary": final if ended is not None else None, "session": name}

    def _publish_session(self, offset: int) -> None:
        if self.state:
            self.state.session_changed(self.session, offset, self.summary.as_dict(), self._totals())

    def _totals(self) -> dict | None:
        """Field mode: a copy of the session's totals for the page; None in cell mode."""
        return dict(self.totals) if self.args.mode == "field" else None

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        return (len(self.frame_times) - 1) / max(self.frame_times[-1] - self.frame_times[0], 1e-9)

    def save_snapshot(self, bgr: np.ndarray, number: int, label: str) -> None:
        import cv2
        path = os.path.join(self.args.snapshots, f"{datetime.now():%Y%m%d-%H%M%S}_frame{number:06d}_{label}.png")
        try:
            os.makedirs(self.args.snapshots, exist_ok=True)
            saved = cv2.imwrite(path, bgr)
        except (OSError, cv2.error) as error:
            saved, path = False, f"{path} ({' '.join(str(error).split())[:80]})"
        if not saved:
            self.event("snapshot_failed", f"could not write {path}")
            return
        if self.log:
            self.log.write({"time": now_iso(), "event": "snapshot", "path": path, "frame": number})

    def process(self, frame, wait_ms: float) -> None:
        rgb = frame.rgb
        if self.args.mode == "field":
            record, draw, timings, positive = self.classify_field_frame(rgb)
        else:
            record, draw, timings, positive = self.classify_cell_frame(rgb)
        classified = time.monotonic()
        self.frames += 1
        self.frame_times.append(classified)
        drawing_started = time.perf_counter()
        from edge.overlay import focus_measure
        focus = focus_measure(rgb, [cell["box"] for cell in record.get("cells", ())])
        self.focus_history.append(focus)
        focus_peak = max(self.focus_history)
        label = "positive" if positive else "negative"
        snapshot_due = bool(self.args.snapshots) and (self.snapshot_requested.is_set() or (
            positive and self.args.snapshot_positives
            and classified - self.last_positive_snapshot >= POSITIVE_SNAPSHOT_INTERVAL_S))
        # the overlay is drawn on a BGR copy only when someone sees it: a window, the web page, a snapshot
        bgr = self.overlay(rgb, draw, focus, classified - frame.captured) if (
            self.window or self.state or snapshot_due) else None
        timings["overlay"] = (time.perf_counter() - drawing_started) * 1000
        timings = {"capture_wait": wait_ms, **timings, "end_to_end": (time.monotonic() - frame.captured) * 1000}
        for stage, value in timings.items():
            self.stage_ms.setdefault(stage, deque(maxlen=STAGE_HISTORY)).append(value)
        summary = self.summary.as_dict() if self.log or self.state else None
        if self.log:
            self.log.write({"time": now_iso(), "frame": frame.number, "source": str(self.source),
                            "mode": self.args.mode, "session": self.session, **record,
                            "focus": round(focus, 1), "summary": summary,
                            "latency_ms": {k: round(v, 3) for k, v in timings.items()}})
        if self.state:
            self.state.publish(bgr, record, frame.number, rgb)
            self.state.frame_done(frames=self.frames, fps=self.fps(), timings=timings, focus=focus,
                                  focus_peak=focus_peak, summary=summary, totals=self._totals())
        if self.auto_capture and self.auto_capture.ready(rgb, record, focus, focus_peak):
            self.capture_requested.set()
        if self.capture_requested.is_set():
            self.capture_requested.clear()
            from edge.bench import capture_for_run
            capture_for_run(self, rgb, record, frame.number, self.captured_crops() if "cells" in record else None)
            if self.auto_capture:
                self.auto_capture.captured()  # any capture: the same view is not captured again by itself
        if snapshot_due:
            if positive and not self.snapshot_requested.is_set():
                self.last_positive_snapshot = classified
            self.snapshot_requested.clear()
            self.save_snapshot(bgr, frame.number, label)
        if self.window:
            import cv2
            cv2.imshow(self.window, bgr)
            key = cv2.waitKey(1) & 0xFF
            if key == ord("q"):
                self.stop_requested.set()
            elif key == ord("s") and self.args.snapshots:
                self.save_snapshot(bgr, frame.number, label)
            elif key == ord("c"):
                self.capture_requested.set()  # the next frame (says why when there is no session)

    def overlay(self, rgb: np.ndarray, draw, focus: float, latency_s: float) -> np.ndarray:
        """The frame in BGR with the results, the status lines and the focus bar drawn on it."""
        import cv2
        from edge.overlay import draw_focus, draw_status
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        draw(bgr)
        draw_status(bgr, self.status_lines(latency_s * 1000))
        draw_focus(bgr, focus, max(self.focus_history))
        return bgr

    def frame_failed(self, number: int, error: Exception) -> None:
        self.failed_frames += 1
        if self.state:
            self.state.frame_failed(frames=self.frames, fps=self.fps())
        if self.failed_frames in (1, 10, 100) or self.failed_frames % 1000 == 0:  # bounded, whatever the rate
            reason = " ".join(str(error).split())[:120]
            self.event("frame_failed", f"frame {number} not classified ({type(error).__name__}: {reason}); "
                                       f"{self.failed_frames} so far")

    def report_skipped(self) -> None:
        if isinstance(self.source, FolderSource):
            for message in self.source.skipped[self.skipped_reported:]:
                self.event("image_skipped", message)
            self.skipped_reported = len(self.source.skipped)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict:
        started = time.monotonic()
        next_status = started + STATUS_INTERVAL_S
        with LatestFrame(self.source, on_event=self.event, opened=True) as frames:
            while not self.stop_requested.is_set():
                if self.args.duration and time.monotonic() - started >= self.args.duration:
                    break
                waiting = time.perf_counter()
                frame = frames.get(timeout=0.25)
                self.report_skipped()
                if frame is None:
                    if frames.ended:
                        break
                    continue
                try:
                    with self.session_lock:
                        self.process(frame, (time.perf_counter() - waiting) * 1000)
                except Exception as error:  # one bad frame is an event, never the end of the run
                    self.frame_failed(frame.number, error)
                if self.args.max_frames and self.frames >= self.args.max_frames:
                    break
                if time.monotonic() >= next_status and not self.window:
                    next_status += STATUS_INTERVAL_S
                    print(f"edge-live: {self.frames} frames, " + "; ".join(self.status_lines(
                        self.stage_ms["end_to_end"][-1])), file=sys.stderr, flush=True)
            elapsed = time.monotonic() - started
            summary = {"frames": self.frames, "failed": self.failed_frames, "captured": frames.captured,
                       "dropped": frames.dropped,
                       "reopened": frames.reopened, "seconds": round(elapsed, 3),
                       "fps": round(self.frames / elapsed, 2) if elapsed else 0.0,
                       "median_ms": {stage: round(statistics.median(values), 3)
                                     for stage, values in self.stage_ms.items()}}
            if self.state:
                self.state.source_stopped("ended" if frames.ended else "stopped")
        summary["session"] = self.session
        summary["summary"] = self.summary.as_dict()
        if self.args.mode == "field":
            summary["totals"] = {**self.totals, "blast_ratio": round(self.totals["blasts"] / self.totals["cells"], 4)
                                 if self.totals["cells"] else None}
        if self.window:
            import cv2
            cv2.destroyAllWindows()
        return summary


def print_summary(summary: dict, spec) -> None:
    stages = ", ".join(f"{stage} {value:.1f}" for stage, value in summary["median_ms"].items())
    print(f"edge-live: {summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps); "
          f"captured {summary['captured']}, dropped {summary['dropped']}, camera reopened {summary['reopened']} times",
          file=sys.stderr)
    if stages:
        print(f"edge-live: median ms per frame: {stages}", file=sys.stderr)
    if "totals" in summary:
        totals = summary["totals"]
        ratio = "n/a" if totals["blast_ratio"] is None else f"{totals['blast_ratio']:.1%}"
        print(f"edge-live: cells {totals['cells']}, blasts {totals['blasts']}, blast ratio {ratio}, "
              f"out of domain {totals['out_of_domain']}", file=sys.stderr)
    print(f"edge-live: session {summary['session'] or '(none)'}: {summary_line(summary['summary'], spec)}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_cameras:
        for line in list_cameras():
            print(line)
        return 0
    for option, path, problem in (("--log", args.log, args.log and unwritable_file(args.log)),
                                  ("--snapshots", args.snapshots, args.snapshots and unwritable_folder(args.snapshots))):
        if problem:
            print(f"edge-live: {option} {path}: {problem}", file=sys.stderr)
            return 2
    try:
        import cv2  # noqa: F401  (the overlay, video and USB cameras, field mode)
    except ImportError:
        print("edge-live: needs OpenCV: pip install 'edge-medical[camera]'", file=sys.stderr)
        return 2
    token = None
    if args.serve:
        from edge.web import is_loopback, read_token
        if args.token_file:
            try:
                token = read_token(args.token_file)
            except (OSError, ValueError) as error:
                print(f"edge-live: --token-file {args.token_file}: {getattr(error, 'strerror', None) or error}",
                      file=sys.stderr)
                return 2
        elif not is_loopback(args.serve[0]):
            token = secrets.token_urlsafe(24)  # printed once below, never logged
    try:
        classifier = Classifier(args.model, runtime=args.runtime, threads=args.threads,
                                check_quality=not args.no_quality, label_all=args.label_all)
    except (ModelError, RuntimeUnavailable) as error:
        print(f"edge-live: {error}", file=sys.stderr)
        return 2
    if args.mode == "field" and classifier.preprocessing["name"] != "cnmc_cell":
        print(f"edge-live: field mode needs a cell model; {classifier.model_path.name} is "
              f"{classifier.preprocessing['name']}", file=sys.stderr)
        return 2
    note = thread_report(classifier, args.threads)
    if note:
        say(note)
    try:
        source = open_source(args.source, fps=args.fps, loop=args.loop, camera=camera_settings(args),
                             default_stream="main" if args.mode == "field" else "lores")
        source.open()
    except SourceError as error:
        print(f"edge-live: {error}", file=sys.stderr)
        return 1
    delivered = source.describe()
    if delivered:
        say(delivered)
    web = state = None
    if args.serve:
        from edge.live_state import LiveState
        from edge.web import WebServer
        spec = classifier.spec
        state = LiveState(model=classifier.model_path.name, labels=classifier.labels,
                          names={code: spec.display_name(code) for code in (*classifier.labels, *NON_ANSWERS)},
                          threshold=spec.threshold, mode=args.mode, source=str(source), log=args.log,
                          stream_fps=args.serve_fps)
        try:
            web = WebServer(args.serve, state, token)
        except OSError as error:
            print(f"edge-live: --serve {args.serve[0]}:{args.serve[1]}: cannot listen there "
                  f"({error.strerror or error})", file=sys.stderr)
            source.close()
            return 2

    def log_problem(message: str) -> None:  # a full disk: said, and shown on the web page
        say(message)
        if state:
            state.add_event("log", message)
    try:
        log = ResultsLog(args.log, on_problem=log_problem) if args.log else None
    except OSError as error:
        print(f"edge-live: --log {args.log}: {error.strerror or error}", file=sys.stderr)
        source.close()
        if web:
            web.close()
        return 2
    run = LiveRun(args, classifier, source, log, state)
    if args.sessions:
        from edge.bench import start_for_run
        try:
            start_for_run(run, run.session)
        except OSError as error:
            print(f"edge-live: --sessions {args.sessions}: {error.strerror or error}", file=sys.stderr)
            source.close()
            if web:
                web.close()
            if log:
                log.close()
            return 2

    def request_stop(signum, _frame):
        run.stop_requested.set()

    handlers = {signal.SIGTERM: request_stop, signal.SIGINT: request_stop,
                signal.SIGUSR1: lambda *_: (run.snapshot_requested.set(), args.sessions and run.capture_requested.set())}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    if log:
        log.write({"time": now_iso(), "event": "start", "session": args.session, "source": str(source), "mode": args.mode,
                   "model": str(classifier.model_path), "runtime": classifier.runtime, "threads": classifier.threads,
                   **({"thread_ms": {str(k): round(v, 3) for k, v in classifier.thread_timings.items()}}
                      if classifier.thread_timings else {}),
                   **({"camera": delivered} if delivered else {}),
                   **({"serve": f"{args.serve[0]}:{web.server_address[1]}"} if web else {})})
    terminal = None
    if args.sessions and sys.stdin is not None and sys.stdin.isatty():
        terminal = threading.Thread(target=read_terminal_captures, name="terminal keys", daemon=True,
                                    args=(sys.stdin.fileno(), run.capture_requested, run.stop_requested))
        terminal.start()
        say("type c and Enter here to capture")
    if web:
        from edge.web import Commands
        web.start(Commands(change_session=run.change_session, capture=run.capture_requested.set,
                           bench=lambda: run.bench))
        if args.token_file:
            say(f"live page at {web.page_url(token_shown='<the token in ' + args.token_file + '>')}")
        else:
            say(f"live page at {web.page_url()}" + (" (the token is shown only here, never logged)" if token else ""))
    try:
        summary = run.run()
    finally:
        run.stop_requested.set()  # ends the terminal reader
        if terminal:
            terminal.join(timeout=1)
        if web:
            web.close()
        classifier.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if log:
        if not log.write({"time": now_iso(), "event": "stop", **summary}):
            say(f"the stop record could not be written to {args.log}")
        log.close()
    print_summary(summary, classifier.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
