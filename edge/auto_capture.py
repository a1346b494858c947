"""edge-live --auto-capture: capture a field or cell by itself once the technician has moved to a new
view, let it settle and focused it; the view of the last capture is not captured again.

The view is compared on a small grey copy (VIEW_SIDE px on its long side, area-averaged, so camera
noise averages away): the share of its pixels whose grey level changed by more than CHANGE_LEVEL.
A frame is captured when all of these hold:
  - changed: at least CHANGED_SHARE of the copy differs from the last capture (any capture: the
    page's button, a key, SIGUSR1 or this); the first view of a run counts as changed;
  - steady: at most STEADY_SHARE differs from the previous frame classified (the slide is not moving);
  - in focus: the focus figure is within the focus bar's green band of its running peak
    (edge.live_state.IN_FOCUS_SHARE), and the quality gates found nothing (cell mode: the frame; field
    mode: at least one cell, and none of them blank, saturated or out of focus).
Measured on 640x480 views of a generated smear (noise std 4, JPEG; as in tests/test_bench.py):
camera noise and a 10-level change of exposure change none of the copy; a drift of 1-3 px per frame
changes under 0.4% (steady), 5 px 4% and 10 px 14% (moving); a new field changes about 40%, another
single cell on black 3-5% (changed). A difference cannot measure overlap: moving the slide by a few cells'
widths changes as much as moving it by a whole field, so, as in a manual count, the technician moves
by a whole field before letting it settle; every capture is reviewed.
"""
from __future__ import annotations

import cv2
import numpy as np

from edge.live_state import IN_FOCUS_SHARE

VIEW_SIDE = 64  # the compared copy's long side: 64x48 for a 4:3 camera (one copy pixel = 10x10 at 640x480)
CHANGE_LEVEL = 16  # grey levels (0-255) a copy pixel must change by to count as changed
CHANGED_SHARE = 0.02  # a new view: at least 2% of the copy changed since the last capture
STEADY_SHARE = 0.01  # settled: at most 1% of the copy changed since the previous frame


def small_view(rgb: np.ndarray) -> np.ndarray:
    """The frame as a small grey copy, at most VIEW_SIDE px on its long side."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    scale = min(1.0, VIEW_SIDE / max(height, width))
    return cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def changed_share(view: np.ndarray, other: np.ndarray) -> float:
    """The share of the copy's pixels that changed by more than CHANGE_LEVEL (1.0 for another size)."""
    if view.shape != other.shape:
        return 1.0
    return float(np.count_nonzero(cv2.absdiff(view, other) > CHANGE_LEVEL)) / view.size


def passed_gates(record: dict) -> bool:
    """The frame's quality gates found nothing: no issue on the frame (cell mode), or at least one
    cell and no issue on any (field mode)."""
    if "cells" in record:
        return bool(record["cells"]) and not any(cell.get("issues") for cell in record["cells"])
    return not record.get("issues")


class AutoCapture:
    """Decides, frame by frame, whether the frame just classified is to be captured (see above)."""

    def __init__(self):
        self.previous = None  # the latest frame's copy
        self.last_captured = None  # the copy of the last capture

    def ready(self, rgb: np.ndarray, record: dict, focus: float, focus_peak: float) -> bool:
        """Called for every frame classified; True: capture this frame."""
        view = small_view(rgb)
        previous, self.previous = self.previous, view
        in_focus = focus_peak > 0 and focus >= IN_FOCUS_SHARE * focus_peak and passed_gates(record)
        steady = previous is not None and changed_share(view, previous) <= STEADY_SHARE
        changed = self.last_captured is None or changed_share(view, self.last_captured) >= CHANGED_SHARE
        return in_focus and steady and changed

    def captured(self) -> None:
        """The frame last given to ready() was captured (by this or by hand)."""
        self.last_captured = self.previous
