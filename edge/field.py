"""Field mode: find the white cells in a whole microscope field and present each as a C-NMC cell.

A microscope camera sees several white cells (purple-stained nuclei) among many red cells on a
light background. The leukemia model was trained on single segmented cells on pure black
(C-NMC 2019), so field mode finds the white cells, masks each onto black and classifies the crops:

    cells = find_white_cells(frame_rgb)
    crops = cell_crops(frame_rgb, cells)
    results = classifier.classify_batch(crops)
    # or, with the field's scale, at the training magnification (each input resampled once from its crop):
    um_per_pixel = estimate_um_per_pixel(frame_rgb, cells)
    results = classifier.classify_batch(crops, lambda crop: model_input(crop, um_per_pixel, classifier.preprocessing))

How a white cell is found (thresholds measured on the 200 Taleqani fields, see
benchmarks/FIELD_COUNT.md):
- Stain score min((R + B) / 2, B) - G: the purple/violet of nuclei and blast cytoplasm is high in
  red and blue and low in green (40 to 130); the pale blue-grey or lavender red cells score about
  0 to 30 (their rims up to ~30), the light background about 0; min(.., B) keeps red and orange
  marks (a scale bar's red text) out. Over all pixels of the 200 fields the histogram of
  (R + B) / 2 - G has its valley at 30 to 40.
- Hysteresis: a cell is a connected region of score > CELL_THRESHOLD (30) that holds a core of
  score > CORE_THRESHOLD (45), so faint red-cell rims that brush a cell never start one, while
  the paler rim of the cell (cytoplasm, the edge blurred by the optics) joins the cell.
- Opening, hole filling and a minimum area drop platelets, specks and ring-shaped red-cell rims.
- Touching cells are split at their necks: peaks of the distance transform become seeds when the
  distance-transform ridge between two peaks dips (a neck); each pixel goes to the seed whose
  inscribed circle edge is nearest (|p - c| - r smallest), which splits unequal cells fairly.
- A detection whose stain (90th percentile of its score) is under FAINT_RATIO (0.6) of the
  frame's median detection is dropped: 28 detections over the 200 fields, by eye nearly all
  smudge cells, platelet clumps, debris and the scale bar beside well-stained cells.
- Each cell's mask is grown by CYTOPLASM_GROWTH (2) px into non-background pixels (darker than
  the frame's background) that no other cell reaches, to take in the pale rim of cytoplasm that the
  stain threshold misses and that C-NMC's segmentation keeps; a red cell pressed against the cell
  can lend it those 2 px too.

Known failures, measured on 24 fields counted by eye (benchmarks/FIELD_COUNT.md): smudge cells
(ruptured, pale, often in pieces) are found as cells; touching cells around a small enclosed gap
can merge; large pale vacuolated cells can split in two; platelet clumps and slivers of cells cut
by the frame border can be boxed (`touches_edge` marks the latter).

Detection and the red-cell scale run on one copy whose short side is WORK_SIDE (224, the size of
the Taleqani fields; working_copy), so the size limits keep their meaning and the time stays
bounded whatever the camera's size (benchmarks/studies/pipeline_speed.py: the fields at 224x224 and at
1280x960); boxes and masks are returned in full-frame coordinates. The sizes assume a field of view like the Taleqani fields (a white cell ~ 15 to 35 px
across at 224 px); another magnification needs `scale`.
numpy, OpenCV (the `camera` extra) and edge.preprocess are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from edge.preprocess import CELL_THRESHOLD as BLACK_THRESHOLD
from edge.preprocess import cell_window_side, content_box, normalize_stain
from edge.quality import analysis_size

WORK_SIDE = 224  # detection resolution (short side)
CELL_THRESHOLD = 30  # stain score of a cell pixel
CORE_THRESHOLD = 45  # stain score a cell must reach somewhere
MIN_AREA = 70  # px at WORK_SIDE: smaller purple specks are platelets and debris
MAX_AREA = 3000  # px at WORK_SIDE: a typical white cell is 300 to 600, a large one ~1500
MIN_RADIUS = 4.0  # a seed's inscribed radius, px at WORK_SIDE (a small lymphocyte is ~6)
NECK = 0.75  # two seeds are two cells when the ridge between them dips below NECK * smaller radius
FAINT_RATIO = 0.6  # drop a detection whose stain is under this share of the frame's median detection
FAINT_MIN_CELLS = 3  # ... when the frame has at least this many detections to take a median of
CYTOPLASM_GROWTH = 2  # px at WORK_SIDE
BACKGROUND_MARGIN = 25  # a pixel darker than the background (grey p90) by this much is not background
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
    """min((R + B) / 2, B) - G clipped to 0..255, uint8: purple/violet stain high, red cells and
    background low; min(.., B) keeps red or orange things (a scale bar's red text) out."""
    r, g, b = cv2.split(rgb)
    purple = cv2.min(cv2.addWeighted(r, 0.5, b, 0.5, 0), b)  # uint8, rounds
    return cv2.subtract(purple, g)  # saturates at 0


def working_copy(rgb: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """The frame resized so its short side is WORK_SIDE * scale (never enlarged); -> (copy, factor).
    A frame over twice that is first reduced by a whole factor (OpenCV's fast INTER_AREA path for
    an integer factor; 1280x960 -> 299x224 in half the time of one INTER_AREA step), then to the size."""
    factor = min(1.0, WORK_SIDE * scale / min(rgb.shape[:2]))
    if factor == 1.0:
        return rgb, 1.0
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    whole = int(1 / factor)
    if whole >= 2 and rgb.shape[0] % whole == 0 and rgb.shape[1] % whole == 0:
        rgb = cv2.resize(rgb, (rgb.shape[1] // whole, rgb.shape[0] // whole), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), factor


_working_copy = working_copy


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def stain_mask(score: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask of white-cell pixels from a (blurred) stain score: pixels over CELL_THRESHOLD,
    opened, kept where their region holds a core over CORE_THRESHOLD, holes filled."""
    low = (score > CELL_THRESHOLD).astype(np.uint8)
    low = cv2.morphologyEx(low, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    count, labels = cv2.connectedComponents(low)
    cores = np.unique(labels[(score > CORE_THRESHOLD) & (low > 0)])
    keep = np.zeros(count, dtype=np.uint8)
    keep[cores[cores > 0]] = 1
    return _fill_holes(keep[labels])


def _seeds(distance: np.ndarray, peaks: np.ndarray) -> list[tuple[int, int, float]]:
    """Seeds (x, y, radius) of one blob from its distance transform and candidate peaks: the
    highest peak first, then every peak outside the accepted seeds' discs with a neck (a dip of the
    distance ridge below NECK * its own radius) between it and each accepted seed."""
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-distance[ys, xs], kind="stable")
    seeds: list[tuple[int, int, float]] = []
    for y, x in zip(ys[order].tolist(), xs[order].tolist()):
        radius = float(distance[y, x])
        separate = True
        for sx, sy, sr in seeds:
            gap = ((x - sx) ** 2 + (y - sy) ** 2) ** 0.5
            if gap < max(sr, radius):  # inside an accepted seed's disc: the same cell
                separate = False
                break
            steps = np.arange(int(gap) + 2) / (int(gap) + 1)
            ridge = distance[np.rint(sy + (y - sy) * steps).astype(int), np.rint(sx + (x - sx) * steps).astype(int)]
            if ridge.min() >= NECK * radius:  # no neck between them: one elongated cell
                separate = False
                break
        if separate:
            seeds.append((x, y, radius))
    return seeds


def split_cells(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """int32 labels (0 background, 1..n cells) of a 0/1 mask, touching cells split at their necks:
    each pixel of a blob with several seeds goes to the seed whose disc edge is nearest."""
    count, blobs, stats, _ = cv2.connectedComponentsWithStats(mask)
    labels = np.zeros(mask.shape, dtype=np.int32)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    peaks = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (distance >= MIN_RADIUS * scale)
    next_label = 1
    for blob in range(1, count):
        x, y, w, h, area = stats[blob]
        if area < MIN_AREA * scale**2:
            continue
        inside = blobs[y:y + h, x:x + w] == blob
        seeds = _seeds(np.where(inside, distance[y:y + h, x:x + w], 0), peaks[y:y + h, x:x + w] & inside)
        if len(seeds) <= 1:
            labels[y:y + h, x:x + w][inside] = next_label
            next_label += 1
            continue
        yy, xx = np.nonzero(inside)
        cost = np.stack([np.hypot(xx - sx, yy - sy) - sr for sx, sy, sr in seeds])
        labels[y + yy, x + xx] = next_label + np.argmin(cost, axis=0)
        next_label += len(seeds)
    return labels


def _label_pixels(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ys, xs) of each label 1..max, in one pass."""
    ys, xs = np.nonzero(labels)
    values = labels[ys, xs]
    order = np.argsort(values, kind="stable")
    ys, xs, values = ys[order], xs[order], values[order]
    bounds = np.searchsorted(values, np.arange(1, int(labels.max()) + 2))
    return [(ys[a:b], xs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _percentile90(values: np.ndarray) -> float:
    k = int(0.9 * (values.size - 1))
    return float(np.partition(values, k)[k])


def _keep_cells(labels: np.ndarray, score: np.ndarray, scale: float) -> np.ndarray:
    """Labels renumbered 1..n, without those outside the area limits or faint beside the others."""
    pixels = _label_pixels(labels)
    sized = [i for i, (ys, _) in enumerate(pixels) if MIN_AREA * scale**2 <= ys.size <= MAX_AREA * scale**2]
    stain = {i: _percentile90(score[pixels[i]]) for i in sized}
    if len(sized) >= FAINT_MIN_CELLS:
        floor = FAINT_RATIO * float(np.median(list(stain.values())))
        sized = [i for i in sized if stain[i] >= floor]
    renumber = np.zeros(len(pixels) + 1, dtype=np.int32)
    renumber[np.array(sized, dtype=int) + 1] = np.arange(1, len(sized) + 1)
    return renumber[labels]


def _grow(labels: np.ndarray, rgb: np.ndarray, pixels: int) -> np.ndarray:
    """Each label grown by `pixels` into non-background pixels that no other label holds or reaches."""
    if pixels <= 0 or labels.max() == 0:
        return labels
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    background = int(np.searchsorted(np.cumsum(np.bincount(gray.ravel(), minlength=256)), 0.9 * gray.size))
    open_ground = (labels == 0) & (gray < background - BACKGROUND_MARGIN)  # background: grey level p90
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    highest = cv2.dilate(labels.astype(np.float32), kernel).astype(np.int32)
    lowest = -cv2.dilate(-np.where(labels > 0, labels, labels.max() + 1).astype(np.float32), kernel)
    alone = lowest.astype(np.int32) == highest  # reached by one label only
    return np.where(open_ground & alone & (highest > 0), highest, labels)


def find_white_cells(frame_rgb: np.ndarray, scale: float = 1.0, work=None) -> list[Cell]:
    """White cells of an HxWx3 uint8 RGB microscope field, top to bottom; boxes in frame pixels.

    `scale`: white-cell size relative to the Taleqani fields at WORK_SIDE (2.0 = cells twice as
    wide for the same frame size, e.g. a higher-power objective). `work`: working_copy(frame_rgb,
    scale) when the caller has it (estimate_um_per_pixel uses the same one)."""
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {frame_rgb.dtype} {frame_rgb.shape}")
    work, factor = work if work is not None else working_copy(frame_rgb, scale)
    score = cv2.GaussianBlur(stain_score(work), (3, 3), 0)
    labels = _keep_cells(split_cells(stain_mask(score), scale), score, scale)
    labels = _grow(labels, work, round(CYTOPLASM_GROWTH * scale))
    frame_h, frame_w = frame_rgb.shape[:2]
    to_x, to_y = frame_w / work.shape[1], frame_h / work.shape[0]  # working px -> frame px
    cells = []
    for label, (ys, xs) in enumerate(_label_pixels(labels), start=1):
        if ys.size == 0:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        mask = labels[y0:y1, x0:x1] == label
        if factor != 1.0:  # the mask brought to frame pixels, smoothed by the linear resize
            fx0, fy0 = round(x0 * to_x), round(y0 * to_y)
            size = (max(1, min(frame_w, round(x1 * to_x)) - fx0), max(1, min(frame_h, round(y1 * to_y)) - fy0))
            mask = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_LINEAR) > 127
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                continue
            mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            x0, y0 = fx0 + int(cols[0]), fy0 + int(rows[0])
            x1, y1 = x0 + mask.shape[1], y0 + mask.shape[0]
        touches = x0 == 0 or y0 == 0 or x1 == frame_w or y1 == frame_h
        cells.append(Cell((x0, y0, x1 - x0, y1 - y0), mask, int(mask.sum()), touches))
    cells.sort(key=lambda cell: (cell.box[1], cell.box[0]))
    return cells


def cell_crops(frame_rgb: np.ndarray, cells: list[Cell], margin: int = CROP_MARGIN) -> list[np.ndarray]:
    """Each cell as the leukemia model saw C-NMC cells: its pixels kept, everything else pure black,
    `margin` black pixels around its box. Cell pixels are raised to at least BLACK_THRESHOLD + 1, so
    edge.preprocess finds exactly the mask as the cell."""
    crops = []
    for cell in cells:
        x, y, w, h = cell.box
        crop = np.zeros((h + 2 * margin, w + 2 * margin, 3), dtype=np.uint8)
        # the cell's box only (a frame of any size costs its cells only), its pixels copied where the mask is
        np.copyto(crop[margin:margin + h, margin:margin + w], np.maximum(frame_rgb[y:y + h, x:x + w], BLACK_THRESHOLD + 1),
                  where=cell.mask[:, :, None])
        crops.append(crop)
    return crops


# -- scale: field crops brought to the training magnification -------------------------------------
RED_CELL_UM = 7.5  # diameter of a red blood cell (about 7.5 um), the ruler every smear carries
# C-NMC cells (the leukemia model's training data): normal (hem) cells have a median equivalent
# diameter of 179 px (blasts 214 px; python -m benchmarks.studies.field_scale). Taking a normal B-lymphoid
# cell as about 9 um across gives the training scale. The 9 um is an assumption from haematology
# texts (small lymphocytes 7-10 um), not a calibration: C-NMC publishes no micrometres per pixel.
CNMC_NORMAL_CELL_PX = 179.0
NORMAL_LYMPHOCYTE_UM = 9.0
CNMC_UM_PER_PIXEL = NORMAL_LYMPHOCYTE_UM / CNMC_NORMAL_CELL_PX
MIN_RED_CELLS = 5  # fewer red-cell regions than this: no estimate


def estimate_um_per_pixel(frame_rgb: np.ndarray, cells: list[Cell], work=None) -> float | None:
    """The field's micrometres per pixel from its red cells (RED_CELL_UM each), or None when too few
    are seen. Red cells are the non-background pixels outside the white cells; touching red cells
    form clumps, so each region's diameter is that of its largest inscribed circle (twice the peak of
    the distance transform), which is one red cell's in a clump too; the median over regions.
    Measured on the detector's working copy (a frame larger than the Taleqani fields is reduced to
    their scale first, so the cost stays bounded whatever the camera's size; the fields themselves are
    measured as they are). `work`: working_copy(frame_rgb) when the caller has it."""
    work, factor = work if work is not None else working_copy(frame_rgb, 1.0)
    grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    background = np.percentile(grey, 90)
    mask = (grey < background - BACKGROUND_MARGIN).astype(np.uint8)
    for cell in cells:  # white cells, with a little margin, are not red cells
        x, y, w, h = cell.box
        if factor != 1.0:  # the box in working pixels
            x, y, w, h = (int(x * factor), int(y * factor), int(np.ceil((x + w) * factor)) - int(x * factor),
                          int(np.ceil((y + h) * factor)) - int(y * factor))
        mask[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = 0
    mask = _fill_holes(cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))))
    count, labels = cv2.connectedComponents(mask)
    if count - 1 < MIN_RED_CELLS:
        return None
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    peaks = np.zeros(count, dtype=np.float32)
    np.maximum.at(peaks, labels.ravel(), distance.ravel())
    diameters = 2 * peaks[1:]
    diameters = diameters[diameters >= 4]  # specks and slivers
    if diameters.size < MIN_RED_CELLS:
        return None
    if factor != 1.0:  # a diameter of d working pixels is d / factor frame pixels
        return RED_CELL_UM * factor / float(np.median(diameters))
    return RED_CELL_UM / float(np.median(diameters))


def rescale_crops(crops: list[np.ndarray], um_per_pixel: float) -> list[np.ndarray]:
    """Each crop resized so one pixel is CNMC_UM_PER_PIXEL (the training magnification), bilinear
    (OpenCV; the black surround stays black). Bounded: no crop grows past 1024 px. What a session
    keeps of a captured cell (a C-NMC-like image for training); the model's input is model_input's."""
    resized = []
    for crop in crops:
        size, scale = _enlarged(crop, um_per_pixel)
        resized.append(cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA))
    return resized


def _enlarged(crop: np.ndarray, um_per_pixel: float) -> tuple[tuple[int, int], float]:
    """-> ((width, height), scale) of rescale_crops' crop."""
    height, width = crop.shape[:2]
    scale = min(um_per_pixel / CNMC_UM_PER_PIXEL, 1024 / max(height, width))
    return (max(1, round(width * scale)), max(1, round(height * scale))), scale


def model_input(crop: np.ndarray, um_per_pixel: float, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """A cell crop (cell_crops) -> (the model's uint8 input for a cnmc_cell spec, the quality gates'
    copy), each resampled once from the crop by OpenCV, never by way of a crop enlarged to the
    training magnification (about 10x on the Taleqani fields).

    The geometry is that of edge.preprocess on rescale_crops' crop: the spec's window ("fixed":
    CELL_FIXED_SIDE training pixels, or the cell if larger; "tight") centred on the cell, whose
    extent at the training magnification is its pixels' box grown by half a frame pixel on each side
    (as far as the linear enlargement reaches). The window is sampled at the model's size with
    cv2.warpAffine, INTER_LINEAR: on the 200 smear fields the input differs from preprocessing the
    enlarged crop by 0.78 of 255 levels per pixel on average (at most 2.3 for a cell), its centre by
    under 0.3 px. The gates' copy has the size and field of view of the analysis copy of
    rescale_crops' crop (edge.quality.analysis_size, at most 256 px), resized from the crop
    (INTER_LINEAR; INTER_AREA when smaller). benchmarks/studies/field_input.py measures both."""
    factor = um_per_pixel / CNMC_UM_PER_PIXEL
    height, width = crop.shape[:2]
    size = int(spec["size"])
    box = content_box(crop, above=BLACK_THRESHOLD) or (0, 0, width, height)
    x0, y0, x1, y1 = (v * factor for v in (box[0] - 0.5, box[1] - 0.5, box[2] + 0.5, box[3] + 0.5))
    side = cell_window_side((x0, y0, x1, y1), spec.get("crop", "tight"))  # training pixels
    step = side / size / factor  # crop pixels per model pixel
    left, top = ((x0 + x1) / 2 - side / 2) / factor, ((y0 + y1) / 2 - side / 2) / factor  # crop pixels
    # model pixel (u, v) samples the crop at the centre of its square of the window (pixel centres at integers)
    matrix = np.array([[step, 0.0, left + step / 2 - 0.5], [0.0, step, top + step / 2 - 0.5]])
    pixels = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if spec.get("stain") == "channel-mean":
        pixels = np.asarray(normalize_stain(Image.fromarray(pixels)))
    gates_size = analysis_size(*_enlarged(crop, um_per_pixel)[0])
    gates = cv2.resize(crop, gates_size, interpolation=cv2.INTER_LINEAR if gates_size[0] > width else cv2.INTER_AREA)
    return pixels, gates
