"""Field mode: find the white cells in a whole microscope field and present each as a C-NMC cell.

A microscope camera sees several white cells (purple-stained nuclei) among many red cells on a
light background. The leukemia model was trained on single segmented cells on pure black
(C-NMC 2019), so field mode finds the white cells, masks each onto black and classifies the crops:

    cells = find_white_cells(frame_rgb)
    crops = cell_crops(frame_rgb, cells)
    results = classifier.classify_batch(crops)

How a white cell is found (thresholds measured on the 200 Taleqani fields, see
benchmarks/FIELD_COUNT.md):
- Stain score (R + B) / 2 - G: the purple/violet of nuclei and blast cytoplasm is high in red and
  blue and low in green (40 to 130); the pale blue-grey or lavender red cells score about 0 to 30
  (their rims up to ~30), the light background about 0. Over all pixels of the 200 fields the
  histogram has its valley at 30 to 40.
- Hysteresis: a cell is a connected region of score > CELL_THRESHOLD (30) that holds a core of
  score > CORE_THRESHOLD (45), so faint red-cell rims that brush a cell never start one, while
  the paler rim of the cell (cytoplasm, the edge blurred by the optics) joins the cell.
- Opening, hole filling and a minimum area drop platelets, specks and ring-shaped red-cell rims.
- Touching cells are split at their necks: peaks of the distance transform become seeds when the
  distance-transform ridge between two peaks dips (a neck); each pixel goes to the seed whose
  inscribed circle edge is nearest (|p - c| - r smallest), which splits unequal cells fairly.
- Each cell's mask is grown by CYTOPLASM_GROWTH px into non-background pixels it does not share
  with another cell, to take in a little of the pale cytoplasm that C-NMC's segmentation keeps.

Detection runs on a copy whose short side is WORK_SIDE (224, the size of the Taleqani fields), so
the size limits keep their meaning and the finder stays a few ms at 640x480; boxes and masks are
returned in full-frame coordinates. The sizes assume a field of view like the Taleqani fields
(a white cell ~ 15 to 35 px across at 224 px); another magnification needs `scale`.
Only numpy and OpenCV (the `camera` extra) are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.preprocess import CELL_THRESHOLD as BLACK_THRESHOLD

WORK_SIDE = 224  # detection resolution (short side)
CELL_THRESHOLD = 30  # stain score of a cell pixel
CORE_THRESHOLD = 45  # stain score a cell must reach somewhere
MIN_AREA = 70  # px at WORK_SIDE: smaller purple specks are platelets and debris
MAX_AREA = 3000  # px at WORK_SIDE: larger single cells do not occur at this magnification
MIN_RADIUS = 3.0  # a seed's inscribed radius, px at WORK_SIDE
NECK = 0.75  # two seeds are two cells when the ridge between them dips below NECK * smaller radius
CYTOPLASM_GROWTH = 2  # px at WORK_SIDE
BACKGROUND_MARGIN = 25  # a pixel darker than the background by this much is not background
CROP_MARGIN = 4  # black margin around a crop, px of the full frame


@dataclass
class Cell:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    mask: np.ndarray  # bool, h x w: the cell's pixels inside box
    area: int  # pixels in mask
    touches_edge: bool  # the cell is cut by the frame border

    @property
    def centre(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return self.box[0] + float(xs.mean()), self.box[1] + float(ys.mean())


def stain_score(rgb: np.ndarray) -> np.ndarray:
    """(R + B) / 2 - G clipped to 0..255, uint8: purple/violet stain high, red cells and background low."""
    r, g, b = cv2.split(rgb)
    purple = cv2.addWeighted(r, 0.5, b, 0.5, 0)  # uint8, rounds
    return cv2.subtract(purple, g)  # saturates at 0


def _working_copy(rgb: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """The frame resized so its short side is WORK_SIDE * scale (never enlarged); -> (copy, factor)."""
    factor = min(1.0, WORK_SIDE * scale / min(rgb.shape[:2]))
    if factor == 1.0:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def stain_mask(rgb: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask of stained (white-cell) pixels of a working-size RGB frame, holes filled."""
    score = cv2.GaussianBlur(stain_score(rgb), (3, 3), 0)
    low = (score > CELL_THRESHOLD).astype(np.uint8)
    low = cv2.morphologyEx(low, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels = cv2.connectedComponents(low)
    cores = np.unique(labels[(score > CORE_THRESHOLD) & (low > 0)])
    keep = np.zeros(count, dtype=np.uint8)
    keep[cores[cores > 0]] = 1
    return _fill_holes(keep[labels])


def _seeds(distance: np.ndarray, scale: float) -> list[tuple[int, int, float]]:
    """Seeds (x, y, radius) of one blob: distance-transform peaks separated by a neck."""
    peaks = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (distance >= MIN_RADIUS * scale)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-distance[ys, xs], kind="stable")
    seeds: list[tuple[int, int, float]] = []
    for y, x in zip(ys[order], xs[order]):
        radius = float(distance[y, x])
        separate = True
        for sx, sy, sr in seeds:
            gap = np.hypot(x - sx, y - sy)
            if gap < max(sr, radius):  # within the accepted seed's own disc: the same cell
                separate = False
                break
            steps = np.linspace(0.0, 1.0, max(3, int(gap) + 1))
            ridge = distance[np.rint(sy + (y - sy) * steps).astype(int), np.rint(sx + (x - sx) * steps).astype(int)]
            if ridge.min() >= NECK * radius:  # no neck between them: one elongated cell
                separate = False
                break
        if separate:
            seeds.append((int(x), int(y), radius))
    return seeds


def split_cells(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """int32 labels (0 background, 1..n cells) of a 0/1 mask, touching cells split at their necks."""
    count, blobs, stats, _ = cv2.connectedComponentsWithStats(mask)
    labels = np.zeros(mask.shape, dtype=np.int32)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    next_label = 1
    for blob in range(1, count):
        x, y, w, h, area = stats[blob]
        if area < MIN_AREA * scale**2:
            continue
        inside = blobs[y:y + h, x:x + w] == blob
        local = np.where(inside, distance[y:y + h, x:x + w], 0)
        seeds = _seeds(local, scale)
        if len(seeds) <= 1:
            labels[y:y + h, x:x + w][inside] = next_label
            next_label += 1
            continue
        yy, xx = np.nonzero(inside)
        cost = np.stack([np.hypot(xx - sx, yy - sy) - sr for sx, sy, sr in seeds])
        labels[y + yy, x + xx] = next_label + np.argmin(cost, axis=0)
        next_label += len(seeds)
    return labels


def _grow(labels: np.ndarray, rgb: np.ndarray, pixels: int) -> np.ndarray:
    """Each label grown by `pixels` into non-background pixels no other label holds or reaches."""
    if pixels <= 0 or labels.max() == 0:
        return labels
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    background = float(np.percentile(gray, 90))
    open_ground = (labels == 0) & (gray < background - BACKGROUND_MARGIN)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    grown = cv2.dilate(labels.astype(np.float32), kernel).astype(np.int32)
    # where two labels' dilations meet, max() picks one; give such pixels to neither
    lowest = -cv2.dilate(-np.where(labels > 0, labels, labels.max() + 1).astype(np.float32), kernel)
    contested = lowest.astype(np.int32) != grown
    return np.where(open_ground & ~contested & (grown > 0), grown, labels)


def find_white_cells(frame_rgb: np.ndarray, scale: float = 1.0) -> list[Cell]:
    """White cells of an HxWx3 uint8 RGB microscope field, top to bottom; boxes in frame pixels.

    `scale`: white-cell size relative to the Taleqani fields at WORK_SIDE (2.0 = cells twice as
    wide for the same frame size, e.g. a higher-power objective)."""
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {frame_rgb.dtype} {frame_rgb.shape}")
    work, factor = _working_copy(frame_rgb, scale)
    labels = split_cells(stain_mask(work), scale)
    labels = _grow(labels, work, round(CYTOPLASM_GROWTH * scale))
    labels_full = labels
    if factor != 1.0:
        labels_full = cv2.resize(labels.astype(np.float32), frame_rgb.shape[1::-1],
                                 interpolation=cv2.INTER_NEAREST).astype(np.int32)
    frame_h, frame_w = frame_rgb.shape[:2]
    cells = []
    for label, (x, y, w, h, work_area) in enumerate(_label_boxes(labels), start=1):
        if not MIN_AREA * scale**2 <= work_area <= MAX_AREA * scale**2:
            continue
        # the label's box in frame pixels, one working pixel wider each side for the resize
        x0, y0 = max(0, int((x - 1) / factor)), max(0, int((y - 1) / factor))
        x1, y1 = min(frame_w, int(np.ceil((x + w + 1) / factor))), min(frame_h, int(np.ceil((y + h + 1) / factor)))
        mask = labels_full[y0:y1, x0:x1] == label
        ys, xs = np.nonzero(mask)
        area = int(ys.size)
        bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        box = (x0 + bx0, y0 + by0, bx1 - bx0, by1 - by0)
        touches = box[0] == 0 or box[1] == 0 or box[0] + box[2] == frame_w or box[1] + box[3] == frame_h
        cells.append(Cell(box, mask[by0:by1, bx0:bx1], area, touches))
    cells.sort(key=lambda cell: (cell.box[1], cell.box[0]))
    return cells


def _label_boxes(labels: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(x, y, w, h, area) of labels 1..max; w = 0 for a label with no pixels."""
    count = int(labels.max())
    boxes = [(0, 0, 0, 0, 0)] * count
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        return boxes
    values = labels[ys, xs]
    order = np.argsort(values, kind="stable")
    ys, xs, values = ys[order], xs[order], values[order]
    starts = np.searchsorted(values, np.arange(1, count + 2))
    for label in range(1, count + 1):
        a, b = starts[label - 1], starts[label]
        if a == b:
            continue
        x0, x1, y0, y1 = int(xs[a:b].min()), int(xs[a:b].max()), int(ys[a:b].min()), int(ys[a:b].max())
        boxes[label - 1] = (x0, y0, x1 - x0 + 1, y1 - y0 + 1, int(b - a))
    return boxes
