"""What edge-live shows while it runs: the live loop (edge/live.py) writes it, the web page server
(edge/web.py) reads it, and neither sees the other (as in picamera2's mjpeg_server, where the camera
writes to an output object and the server reads only that object).

    LiveState   the run's fixed facts (model, classes, mode, source, log file) and, under one lock,
                what changes: frames, rate, timings, session and its summary, field totals, focus,
                source state, events, thumbnails; read as a Snapshot (copies)
    FrameBuffer the newest annotated frame, encoded to JPEG on the reader's thread

The loop hands over values it no longer changes (a fresh summary dict, a copy of the totals) and
references to frames it no longer draws on; JPEG encoding of the stream happens on the viewers'
threads, at most once per frame and at most max_fps times a second, so viewers never slow
classification. A thumbnail (a flagged or positive cell or frame) is cut at most once a second.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import cv2

# The focus meter (the page's bar, the overlay, --auto-capture): in focus within 10% of the latest peak.
IN_FOCUS_SHARE = 0.9

JPEG_QUALITY = 75
THUMBNAILS_KEPT = 8
THUMBNAIL_SIDE = 160
THUMBNAIL_INTERVAL_S = 1.0  # at most one flagged/positive frame's thumbnails a second
EVENTS_KEPT = 20
STATUS_FRAMES = 300  # the stage medians: over the latest frames


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


@dataclass(frozen=True)
class Snapshot:
    """What the loop had handed over when it was taken; nothing in it changes afterwards."""
    frames: int = 0
    fps: float = 0.0
    latency_ms: dict = field(default_factory=dict)  # stage -> median ms over the latest STATUS_FRAMES frames
    session: str | None = None
    session_offset: int = 0  # where the session's records start in the log file
    summary: dict = field(default_factory=dict)  # edge.summary.SessionSummary.as_dict() of the session
    totals: dict | None = None  # field mode: the session's cells, blasts and cells out of domain
    focus: float | None = None  # the latest frame's focus figure
    focus_peak: float | None = None  # the best of the latest frames
    source_state: str = "running"  # running, lost, ended or stopped
    events: tuple = ()  # {"time", "kind", "message"}, newest first
    thumbnails: tuple = ()  # {"id", "caption", "time"}, newest first


@dataclass
class LiveState:
    """One edge-live run as its page shows it. The fields are fixed for the run; what changes is
    written through the methods below (the loop's side) and read through snapshot(), thumbnail()
    and frames.jpeg() (the server's side)."""
    model: str  # the model file's name
    labels: tuple[str, str]  # (negative, positive) class codes
    names: dict[str, str]  # every class code and non-answer in plain words
    threshold: float
    mode: str  # cell or field
    source: str
    log: str | None  # the --log file: its current session's lines are served
    stream_fps: float = 10.0  # most JPEGs a second for viewers

    def __post_init__(self):
        self.frames = FrameBuffer(self.stream_fps)
        self._lock = threading.Lock()
        self._now = Snapshot()
        self._stage_ms: dict[str, deque[float]] = {}
        self._events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self._thumbnails: deque[tuple[dict, bytes]] = deque(maxlen=THUMBNAILS_KEPT)
        self._thumbnail_count = 0
        self._last_thumbnail = float("-inf")

    # -- the loop's side -----------------------------------------------------------------------
    def frame_done(self, *, frames: int, fps: float, timings: dict[str, float], focus: float, focus_peak: float,
                   summary: dict, totals: dict | None) -> None:
        """A frame classified (and logged): the counts, its stage timings, the session's running figures."""
        with self._lock:
            for stage, value in timings.items():
                self._stage_ms.setdefault(stage, deque(maxlen=STATUS_FRAMES)).append(value)
            self._now = replace(self._now, frames=frames, fps=fps, focus=focus, focus_peak=focus_peak,
                                summary=summary, totals=totals)

    def frame_failed(self, *, frames: int, fps: float) -> None:
        """A frame that failed after it was counted: the count and rate move on, nothing else changes."""
        with self._lock:
            self._now = replace(self._now, frames=frames, fps=fps)

    def session_changed(self, name: str | None, offset: int, summary: dict, totals: dict | None) -> None:
        """A session started (None: none) at `offset` in the log, with its summary and totals at zero."""
        with self._lock:
            self._now = replace(self._now, session=name, session_offset=offset, summary=summary, totals=totals)

    def add_event(self, kind: str, message: str) -> None:
        with self._lock:
            self._events.append({"time": _now_iso(), "kind": kind, "message": message})
            if kind == "source_lost":
                self._now = replace(self._now, source_state="lost")
            elif kind == "source_reopened":
                self._now = replace(self._now, source_state="running")

    def source_stopped(self, how: str) -> None:
        """The loop is over: "ended" (the source had no more frames) or "stopped"."""
        with self._lock:
            self._now = replace(self._now, source_state=how)

    def publish(self, bgr, record: dict, number: int, rgb=None) -> None:
        """The annotated frame, and thumbnails of flagged or positive cells cut from the frame as
        captured (rgb; at most once a second, a few small JPEGs)."""
        self.frames.put(bgr)
        now = time.monotonic()
        if now - self._last_thumbnail < THUMBNAIL_INTERVAL_S:
            return
        positive_label, positive_name = self.labels[1], self.names[self.labels[1]]

        def caption(result: dict) -> str:
            mark = "" if result["label"] in self.labels else "? "
            return f"{mark}{self.names.get(result['label'], result['label'])}, " \
                   f"P({positive_name}) {result['probability']:.0%}"

        def shown(result: dict) -> bool:
            return result["label"] == positive_label or result["label"] not in self.labels

        if "cells" in record:
            picks = [(c["box"], caption(c)) for c in record["cells"] if shown(c)][:2]
        elif "label" in record and shown(record):
            picks = [(None, caption(record))]
        else:
            picks = []
        if picks:
            self._last_thumbnail = now
        for box, text in picks:
            self._add_thumbnail(bgr if rgb is None else rgb, box, f"frame {number}: {text}", rgb is not None)

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
    def snapshot(self) -> Snapshot:
        with self._lock:
            stages = {stage: list(values) for stage, values in self._stage_ms.items()}
            now, events = self._now, tuple(reversed(self._events))
            thumbnails = tuple(info for info, _ in reversed(self._thumbnails))
        medians = {stage: round(sorted(v)[len(v) // 2], 2) for stage, v in stages.items() if v}
        return replace(now, latency_ms=medians, events=events, thumbnails=thumbnails)

    def thumbnail(self, number: int) -> bytes | None:
        with self._lock:
            return next((jpeg for info, jpeg in self._thumbnails if info["id"] == number), None)
