"""Draw live results onto a frame with OpenCV: the answer in plain words and the calibrated
probability, FPS and latency, and in field mode a box and probability on each cell. Frames are drawn in place, in BGR order (OpenCV's)."""
from __future__ import annotations

import cv2
import numpy as np

from edge.live_state import IN_FOCUS_SHARE

POSITIVE_BGR = (40, 40, 230)   # red: a positive call (tumour, blast)
NEGATIVE_BGR = (60, 190, 60)   # green
UNCLASSIFIED_BGR = (160, 160, 160)  # grey: found but not classified (cut by the frame border)
OUT_OF_DOMAIN_BGR = (0, 200, 255)  # amber: unlike the training data, not counted
TEXT_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(frame: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour=TEXT_BGR) -> None:
    """White-on-black text, readable on any background."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(frame, (x - 2, y - height - 3), (x + width + 2, y + baseline), (0, 0, 0), -1)
    cv2.putText(frame, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def _scale(frame: np.ndarray) -> float:
    return max(0.35, min(frame.shape[:2]) / 480 * 0.6)


def draw_status(frame: np.ndarray, lines: list[str]) -> None:
    """Status lines (FPS, latency, counts) in the top-left corner."""
    scale = _scale(frame)
    step = int(22 * scale / 0.6)
    for i, line in enumerate(lines):
        _text(frame, line, (6, step * (i + 1)), scale)


def draw_label(frame: np.ndarray, answer: str, probability: float, positive_name: str, positive: bool,
               withheld: bool = False) -> None:
    """The whole-frame answer in plain words and the calibrated probability of the positive class in
    the bottom-left corner: red when positive, amber and marked "?" when no class was given."""
    scale = _scale(frame) * 1.3
    text = f"{'? ' if withheld else ''}{answer}  P({positive_name}) {probability:.0%}"
    _text(frame, text, (6, frame.shape[0] - 10), scale,
          OUT_OF_DOMAIN_BGR if withheld else POSITIVE_BGR if positive else NEGATIVE_BGR)


def draw_cell(frame: np.ndarray, box: tuple[int, int, int, int], probability: float, positive: bool,
              withheld: bool = False) -> None:
    """A box (x, y, width, height) around one cell and the calibrated probability of the positive
    class above it; a dashed amber box and "?" for a cell given no class."""
    x, y, width, height = (int(v) for v in box)
    scale = _scale(frame) * 0.7
    if withheld:
        _dashed_rectangle(frame, x, y, width, height, OUT_OF_DOMAIN_BGR)
        _text(frame, "?", (x, max(12, y - 4)), scale, OUT_OF_DOMAIN_BGR)
        return
    colour = POSITIVE_BGR if positive else NEGATIVE_BGR
    cv2.rectangle(frame, (x, y), (x + width, y + height), colour, 2 if positive else 1)
    _text(frame, f"{probability:.0%}", (x, max(12, y - 4)), scale, colour)


def _dashed_rectangle(frame: np.ndarray, x: int, y: int, width: int, height: int, colour, dash: int = 4) -> None:
    for x0 in range(x, x + width, 2 * dash):
        cv2.line(frame, (x0, y), (min(x0 + dash, x + width), y), colour, 1)
        cv2.line(frame, (x0, y + height), (min(x0 + dash, x + width), y + height), colour, 1)
    for y0 in range(y, y + height, 2 * dash):
        cv2.line(frame, (x, y0), (x, min(y0 + dash, y + height)), colour, 1)
        cv2.line(frame, (x + width, y0), (x + width, min(y0 + dash, y + height)), colour, 1)


def draw_unclassified(frame: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """A thin grey box around a cell that was found but not classified."""
    x, y, width, height = (int(v) for v in box)
    cv2.rectangle(frame, (x, y), (x + width, y + height), UNCLASSIFIED_BGR, 1)


FOCUS_SIDE = 320  # the focus figure is measured on a copy at most this large (cheap on a Pi)


def focus_measure(rgb: np.ndarray, boxes=()) -> float:
    """Sharpness: the variance of the Laplacian of the grey frame, over the boxes (x, y, width,
    height) when there are any (field mode: the cells), else over the whole frame. It peaks when
    the frame is in focus; its scale depends on the scene, so compare it with itself while focusing."""
    height, width = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    scale = min(1.0, FOCUS_SIDE / max(height, width))
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F)
    mask = None
    if len(boxes):
        mask = np.zeros(laplacian.shape, dtype=np.uint8)
        for x, y, box_width, box_height in boxes:
            mask[int(y * scale):int(np.ceil((y + box_height) * scale)),
                 int(x * scale):int(np.ceil((x + box_width) * scale))] = 1
        if not mask.any():
            mask = None
    _, std = cv2.meanStdDev(laplacian, mask=mask)
    return float(std[0, 0]) ** 2


def draw_focus(frame: np.ndarray, value: float, peak: float) -> None:
    """A focus bar in the top-right corner: full at the highest figure of the last seconds, green
    within 10% of it, so the focus knob is turned until the bar is full."""
    scale = _scale(frame)
    share = min(1.0, value / peak) if peak > 0 else 0.0
    bar_width, bar_height = int(120 * scale / 0.6), max(6, int(10 * scale / 0.6))
    x = frame.shape[1] - bar_width - 8
    label = f"focus {value:.0f}"
    (text_width, text_height), _ = cv2.getTextSize(label, FONT, scale, 1)
    _text(frame, label, (frame.shape[1] - text_width - 8, text_height + 6), scale)
    y = text_height + 14
    cv2.rectangle(frame, (x - 1, y - 1), (x + bar_width + 1, y + bar_height + 1), (0, 0, 0), -1)
    cv2.rectangle(frame, (x, y), (x + bar_width, y + bar_height), (80, 80, 80), -1)  # the empty track
    cv2.rectangle(frame, (x, y), (x + int(bar_width * share), y + bar_height),
                  NEGATIVE_BGR if share >= IN_FOCUS_SHARE else TEXT_BGR, -1)
