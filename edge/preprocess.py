"""The one definition of how a pixel becomes model input, shared by training, conversion and the device.

A preprocessing spec is a small JSON-able dict stored with every model, e.g.
``{"name": "brain_mri", "size": 128}`` (``"crop": "none"`` keeps the whole slice) or ``{"name": "cnmc_cell", "size": 96, "crop": "tight"}``.
``preprocess(rgb, spec)`` turns an HxWx3 uint8 RGB array into a float32 (size, size, channels)
array in [0, 1]. Only numpy and Pillow are used, so it runs unchanged on a Raspberry Pi.

The device path (``preprocess_uint8``, which ``preprocess`` divides by 255) gives exactly the arrays
of the straightforward Pillow code (crop the whole window, resize it), at a fraction of the cost: the
window is cut from the numpy frame without converting the frame to a Pillow image, and the final
bilinear resize computes only the output pixels that non-black input reaches (``resize_bilinear``:
Pillow's own resampler on the needed part, with the coefficients of the whole resize). Tests compare
both on the real data with np.array_equal.
"""
from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageFilter

# Brain crop (the common "extreme points" crop of the Kaggle notebooks, in Pillow):
# blur, threshold, erode and dilate to drop specks, then the bounding box of the head.
BRAIN_THRESHOLD = 45
BRAIN_MORPH_SIZE = 5  # a 5x5 min/max filter = two 3x3 erosions/dilations
BRAIN_MASK_SIDE = 256  # the head mask is found on a copy at most this large (fast on a Pi)
# C-NMC cells are segmented onto pure black; anything brighter than this is cell.
CELL_THRESHOLD = 10
# "stain": "channel-mean" scales each colour channel of the cell so its mean over the cell equals
# the C-NMC average (measured over 200 random cells: R 69.3, G 29.9, B 80.0, each varying by
# 12-17% between images), removing stain intensity and tint differences between slides.
CELL_STAIN_MEANS = (69.3, 29.9, 80.0)
CELL_FIXED_SIDE = 384  # "fixed" crop window: covers 99% of C-NMC cells (measured: max side p99 = 311)
MAX_CROP_SIDE = 2048  # no square crop is larger than this (8 times a C-NMC cell image, above any MRI here)


def default_spec(task: str, size: int | None = None) -> dict:
    if task == "brain":
        return {"name": "brain_mri", "size": size or 128}
    if task == "leukemia":
        return {"name": "cnmc_cell", "size": size or 96, "crop": "tight"}
    raise ValueError(f"unknown task {task!r}")


PREPROCESSING_NAMES = ("brain_mri", "cnmc_cell")
CELL_CROPS = ("tight", "fixed")
BRAIN_CROPS = ("head", "none")  # head: the extreme-points crop (default); none: the whole slice, squared
STAIN_NORMALIZATIONS = ("channel-mean",)
MAX_INPUT_SIZE = 1024


def check_preprocessing(spec) -> None:
    """ValueError (one line) unless spec is a preprocessing spec this module can apply."""
    if not isinstance(spec, dict):
        raise ValueError(f"must be an object, got {json.dumps(spec)[:60]}")
    name = spec.get("name")
    if name not in PREPROCESSING_NAMES:
        raise ValueError(f"unknown name {json.dumps(name)[:40]}; expected one of {', '.join(PREPROCESSING_NAMES)}")
    size = spec.get("size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= MAX_INPUT_SIZE):
        raise ValueError(f"size must be an integer from 8 to {MAX_INPUT_SIZE}, got {json.dumps(size)[:40]}")
    allowed = {"name", "size", "crop"} | ({"stain"} if name == "cnmc_cell" else set())
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for {name}")
    crops = CELL_CROPS if name == "cnmc_cell" else BRAIN_CROPS
    if spec.get("crop", crops[0]) not in crops:
        raise ValueError(f"unknown crop {json.dumps(spec['crop'])[:40]}; expected one of {', '.join(crops)}")
    if spec.get("stain") is not None and spec["stain"] not in STAIN_NORMALIZATIONS:
        raise ValueError(f"unknown stain {json.dumps(spec['stain'])[:40]}; expected one of "
                         f"{', '.join(STAIN_NORMALIZATIONS)}")


def channels(spec: dict) -> int:
    return 1 if spec["name"] == "brain_mri" else 3


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _square_crop(image: Image.Image, center_x: float, center_y: float, side: int) -> Image.Image:
    """A side x side window centred on a point; outside the image is black. A window longer than
    MAX_CROP_SIDE is cut from a copy reduced by a whole factor, so memory stays bounded whatever
    the image's shape (a 30000x10 strip would otherwise become a 900-megapixel square)."""
    if side > MAX_CROP_SIDE:
        factor = -(-side // MAX_CROP_SIDE)
        image = image.reduce(factor)
        center_x, center_y, side = center_x / factor, center_y / factor, max(1, side // factor)
    left = int(round(center_x - side / 2))
    top = int(round(center_y - side / 2))
    return image.crop((left, top, left + side, top + side))  # Pillow pads with black


def whole_square(gray: Image.Image) -> Image.Image:
    """The whole slice, centred in a square with black padding."""
    return _square_crop(gray, gray.width / 2, gray.height / 2, max(gray.size))


def brain_crop(gray: Image.Image) -> Image.Image:
    """Crop an MRI slice to the head, squared with black padding."""
    scale = max(1.0, max(gray.size) / BRAIN_MASK_SIDE)
    small = gray.resize((max(1, round(gray.width / scale)), max(1, round(gray.height / scale))),
                        Image.Resampling.BILINEAR)
    mask_image = small.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 if v > BRAIN_THRESHOLD else 0)
    mask_image = mask_image.filter(ImageFilter.MinFilter(BRAIN_MORPH_SIZE))
    mask_image = mask_image.filter(ImageFilter.MaxFilter(BRAIN_MORPH_SIZE))
    box = _bounding_box(np.asarray(mask_image) > 0)
    if box is None:
        box = (0, 0, small.width, small.height)
    left, top, right, bottom = (v * scale for v in box)
    side = max(right - left, bottom - top)
    return _square_crop(gray, (left + right) / 2, (top + bottom) / 2, round(side))


# -- exact, bounded bilinear resizing --------------------------------------------------------------
# Pillow's BILINEAR resize (libImaging/Resample.c) is two one-axis passes with 8-bit rounding between
# them. Each gives output pixel X the taps [trunc(c - s + 0.5), trunc(c + s + 0.5)) clipped to the
# image, c = in0 + (X + 0.5) * scale, scale = (double)(in1 - in0) / out, s = max(scale, 1), with in0
# and in1 passed as C floats. A one-axis resize of a box (a*scale, b*scale) of a sub-image that holds
# every tap of outputs a..b-1 therefore gives exactly those outputs, as long as every one of those
# numbers is exact: true when length / out is exact in binary (450 / 256, 640 / 256, 384 / 96 ...) and
# small. Along any other axis the whole axis is resized. Outputs whose taps are all black (0) are 0.
# Which pass runs first is Pillow's choice (older versions: always horizontal; Pillow 13 runs the
# vertical one first for some sizes, by a rule of its own), so it is measured on a random image of the
# shape (_pass_order) and the two passes are then run one at a time in that order; a shape where
# neither order reproduces Pillow is resized whole. The measurement costs about three resizes, so it is
# made for a shape seen before (a camera's frames, the model's crop window), never for a one-off shape
# (an MRI of its own size, a field crop enlarged to its cell): those are resized whole.
_EXACT_LIMIT = 1 << 14
_BILINEAR = Image.Resampling.BILINEAR
_PASS_ORDERS: dict[tuple, str | None] = {}
_SHAPES_SEEN: dict[tuple, int] = {}
_PASS_ORDER_SHAPES = 64  # shapes remembered (a camera or a model has a few)
_WORTH_IT = 0.5  # resize whole when the content box covers more than this share of the image


def _resize_axis(length: int, out: int, low: int, high: int):
    """One axis of resize_bilinear, input [low, high) holding every non-zero pixel: -> None when no
    output is reached, else (first output, end output, first input, end input, box start, box end),
    the box relative to the first input."""
    if high <= low:
        return None
    scale = length / out
    if length == out or scale * out != length or length >= _EXACT_LIMIT or out >= _EXACT_LIMIT:
        return 0, out, 0, length, 0.0, float(length)
    support = max(scale, 1.0)
    centres = (np.arange(out) + 0.5) * scale
    starts = np.maximum(np.trunc(centres - support + 0.5), 0.0)
    stops = np.minimum(np.trunc(centres + support + 0.5), float(length))
    reached = np.flatnonzero((stops > low) & (starts < high))
    if reached.size == 0:
        return None
    first, end = int(reached[0]), int(reached[-1]) + 1
    box_start, box_end = first * scale, end * scale
    if float(np.float32(box_start)) != box_start or float(np.float32(box_end)) != box_end:
        return 0, out, 0, length, 0.0, float(length)
    in_start, in_end = int(starts[first]), int(stops[end - 1])
    return first, end, in_start, in_end, box_start - in_start, box_end - in_start


def _one_axis(pixels: np.ndarray, axis: int, out: int, box_start: float, box_end: float) -> np.ndarray:
    """Pillow's pass along one axis (1: horizontal, 0: vertical) of box [box_start, box_end) to out
    pixels; the array unchanged where the whole axis keeps its length."""
    height, width = pixels.shape[:2]
    length = width if axis == 1 else height
    if out == length and box_start == 0 and box_end == length:
        return pixels
    image = Image.fromarray(pixels)
    if axis == 1:
        return np.asarray(image.resize((out, height), _BILINEAR, box=(box_start, 0, box_end, height)))
    return np.asarray(image.resize((width, out), _BILINEAR, box=(0, box_start, width, box_end)))


def _two_passes(pixels: np.ndarray, order: str, x_plan, y_plan) -> np.ndarray:
    """The two passes of a resize run one at a time, horizontal first for "HV"."""
    (xa, xb, _, _, bx0, bx1), (ya, yb, _, _, by0, by1) = x_plan, y_plan
    if order == "HV":
        return _one_axis(_one_axis(pixels, 1, xb - xa, bx0, bx1), 0, yb - ya, by0, by1)
    return _one_axis(_one_axis(pixels, 0, yb - ya, by0, by1), 1, xb - xa, bx0, bx1)


def _pass_order(shape: tuple, size: tuple[int, int]) -> str | None:
    """"HV" or "VH": the order in which this Pillow runs the passes of a resize of an array of this
    shape to size, found by reproducing a resize of random pixels both ways (once per shape, from its
    second use); None when neither reproduces it, or the shape is new."""
    key = (shape, size)
    if key not in _PASS_ORDERS:
        if len(_SHAPES_SEEN) >= _PASS_ORDER_SHAPES * 4:
            _SHAPES_SEEN.clear()
        _SHAPES_SEEN[key] = _SHAPES_SEEN.get(key, 0) + 1
        if _SHAPES_SEEN[key] < 2:
            return None
        if len(_PASS_ORDERS) >= _PASS_ORDER_SHAPES:
            _PASS_ORDERS.clear()
        probe = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        whole = np.asarray(Image.fromarray(probe).resize(size, _BILINEAR))
        x_plan = (0, size[0], 0, shape[1], 0.0, float(shape[1]))
        y_plan = (0, size[1], 0, shape[0], 0.0, float(shape[0]))
        _PASS_ORDERS[key] = next((order for order in ("HV", "VH")
                                  if np.array_equal(whole, _two_passes(probe, order, x_plan, y_plan))), None)
    return _PASS_ORDERS[key]


def brightness_profile(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(largest value of each row, largest value of each column) over every channel: two vectorised
    reductions, from which content_box finds the box for any threshold without a mask image."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1).max(axis=1) if pixels.size else np.zeros(height, np.uint8)
    columns = pixels.max(axis=0) if pixels.size else np.zeros(pixels.shape[1:2], np.uint8)
    return rows, (columns.max(axis=1) if columns.ndim == 2 else columns)


def content_box(pixels: np.ndarray | None = None, above: int = 0,
                profile: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around the pixels brighter than `above` in any channel (of pixels, or of
    the image whose brightness_profile is given), or None when there are none."""
    rows_max, columns_max = profile if profile is not None else brightness_profile(pixels)
    rows = np.flatnonzero(rows_max > above)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(columns_max > above)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def resize_bilinear(pixels: np.ndarray, size: tuple[int, int], content=None) -> np.ndarray:
    """Exactly ``np.asarray(Image.fromarray(pixels).resize(size, BILINEAR))`` for an HxW or HxWx3
    uint8 array, computed only where the pixels inside ``content`` (x0, y0, x1, y1; every pixel
    outside it is 0; default: content_box(pixels)) reach; the other outputs are 0."""
    height, width = pixels.shape[:2]
    out_w, out_h = size
    zeros = (out_h, out_w) + pixels.shape[2:]
    if content is None:
        content = content_box(pixels)
        if content is None:
            return np.zeros(zeros, np.uint8)
    x0, y0, x1, y1 = content
    if (x1 - x0) * (y1 - y0) > _WORTH_IT * width * height:
        return np.asarray(Image.fromarray(pixels).resize(size, _BILINEAR))
    x_plan = _resize_axis(width, out_w, x0, x1)
    y_plan = _resize_axis(height, out_h, y0, y1)
    if x_plan is None or y_plan is None:
        return np.zeros(zeros, np.uint8)
    order = _pass_order(pixels.shape, size)
    if order is None:
        return np.asarray(Image.fromarray(pixels).resize(size, _BILINEAR))
    xa, xb, xi0, xi1 = x_plan[:4]
    ya, yb, yi0, yi1 = y_plan[:4]
    part = _two_passes(np.ascontiguousarray(pixels[yi0:yi1, xi0:xi1]), order, x_plan, y_plan)
    if (xa, xb, ya, yb) == (0, out_w, 0, out_h):
        return part
    result = np.zeros(zeros, np.uint8)
    result[ya:yb, xa:xb] = part
    return result


def _window(pixels: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """pixels[top:top + side, left:left + side] with black beyond the image (Image.crop's padding):
    a view when the window lies inside the image, else a new array."""
    height, width = pixels.shape[:2]
    if left >= 0 and top >= 0 and left + side <= width and top + side <= height:
        return pixels[top:top + side, left:left + side]
    window = np.zeros((side, side) + pixels.shape[2:], np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 > x0 and y1 > y0:
        window[y0 - top:y1 - top, x0 - left:x1 - left] = pixels[y0:y1, x0:x1]
    return window


def _square(box: tuple[float, float, float, float], side: int) -> tuple[int, int]:
    """(left, top) of a side x side window centred on box, as _square_crop places it."""
    left, top, right, bottom = box
    return int(round((left + right) / 2 - side / 2)), int(round((top + bottom) / 2 - side / 2))


def _shifted(content, left: int, top: int, side: int):
    """content (x0, y0, x1, y1) in window coordinates, clipped to the window; None when outside."""
    if content is None:
        return None
    x0, y0 = max(content[0] - left, 0), max(content[1] - top, 0)
    x1, y1 = min(content[2] - left, side), min(content[3] - top, side)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _cell_uint8(rgb: np.ndarray, crop: str, size: int, profile=None) -> np.ndarray | None:
    """cell_crop + resize on the numpy frame, or None where the Pillow path must run (a window over
    MAX_CROP_SIDE)."""
    profile = profile if profile is not None else brightness_profile(rgb)
    box = content_box(above=CELL_THRESHOLD, profile=profile)
    if box is None:
        box = (0, 0, rgb.shape[1], rgb.shape[0])
    side = cell_window_side(box, crop)
    if side > MAX_CROP_SIDE:
        return None
    x, y = _square(box, side)
    content = _shifted(content_box(profile=profile), x, y, side)
    if content is None:
        return np.zeros((size, size, 3), np.uint8)
    return resize_bilinear(_window(rgb, x, y, side), (size, size), content)


def _brain_uint8(rgb: np.ndarray, spec: dict, size: int) -> np.ndarray:
    """The brain path on numpy arrays: Pillow's grey conversion, the head mask on a copy of at most
    BRAIN_MASK_SIDE (Pillow filters), the window cut from the grey array, resize_bilinear."""
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    height, width = gray.shape
    content = content_box(gray)
    if content is None:
        return np.zeros((size, size), np.uint8)
    if spec.get("crop", "head") == "head":
        scale = max(1.0, max(width, height) / BRAIN_MASK_SIDE)
        small_size = (max(1, round(width / scale)), max(1, round(height / scale)))
        small = Image.fromarray(resize_bilinear(gray, small_size, content))
        mask_image = small.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 if v > BRAIN_THRESHOLD else 0)
        mask_image = mask_image.filter(ImageFilter.MinFilter(BRAIN_MORPH_SIZE))
        mask_image = mask_image.filter(ImageFilter.MaxFilter(BRAIN_MORPH_SIZE))
        box = _bounding_box(np.asarray(mask_image) > 0)
        if box is None:
            box = (0, 0, small_size[0], small_size[1])
        left, top, right, bottom = (v * scale for v in box)
        side = round(max(right - left, bottom - top))
        centre = (left, top, right, bottom)
    else:
        side = max(width, height)
        centre = (0, 0, width, height)
    if side > MAX_CROP_SIDE:
        return None
    x, y = _square(centre, side)
    window_content = _shifted(content, x, y, side)
    if window_content is None:
        return np.zeros((size, size), np.uint8)
    return resize_bilinear(_window(gray, x, y, side), (size, size), window_content)


def cell_mask(pixels: np.ndarray) -> np.ndarray:
    """Pixels brighter than the black background in any channel (np.maximum: 20x faster than .max(axis=2))."""
    return np.maximum(np.maximum(pixels[:, :, 0], pixels[:, :, 1]), pixels[:, :, 2]) > CELL_THRESHOLD


def cell_crop(rgb: Image.Image, crop: str) -> Image.Image:
    """Square window on the segmented cell: "tight" to its bounding box, "fixed" keeps scale."""
    mask = cell_mask(np.asarray(rgb))
    box = _bounding_box(mask)
    if box is None:
        box = (0, 0, rgb.width, rgb.height)
    left, top, right, bottom = box
    return _square_crop(rgb, (left + right) / 2, (top + bottom) / 2, cell_window_side(box, crop))


def cell_window_side(box, crop: str) -> int:
    """The side of the square window on a cell's bounding box: "tight" hugs it, "fixed" keeps the
    training magnification (CELL_FIXED_SIDE) unless the cell is larger."""
    left, top, right, bottom = box
    if crop == "tight":
        return max(right - left, bottom - top) + 4
    if crop == "fixed":
        return max(CELL_FIXED_SIDE, right - left, bottom - top)
    raise ValueError(f"unknown cell crop {crop!r}")


def normalize_stain(rgb: Image.Image) -> Image.Image:
    pixels = np.asarray(rgb, dtype=np.float32)
    mask = cell_mask(pixels)
    if not mask.any():
        return rgb
    gains = np.array(CELL_STAIN_MEANS) / np.maximum(pixels[mask].mean(axis=0), 1.0)
    return Image.fromarray(np.clip(np.rint(pixels * gains), 0, 255).astype(np.uint8))


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {getattr(rgb, 'dtype', type(rgb).__name__)} "
                         f"{getattr(rgb, 'shape', '')}")


def _pillow_uint8(rgb: np.ndarray, spec: dict) -> np.ndarray:
    """The straightforward Pillow path: the whole window as an image, then resized (the reference of
    the fast path, and what runs for a stain-normalised model or a window over MAX_CROP_SIDE)."""
    size = int(spec["size"])
    image = Image.fromarray(rgb)
    if spec["name"] == "brain_mri":
        crop = brain_crop if spec.get("crop", "head") == "head" else whole_square
        image = crop(image.convert("L"))
    elif spec["name"] == "cnmc_cell":
        image = cell_crop(image, spec.get("crop", "tight"))
        if spec.get("stain") == "channel-mean":
            image = normalize_stain(image)
    else:
        raise ValueError(f"unknown preprocessing {spec['name']!r}")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def preprocess_uint8(rgb: np.ndarray, spec: dict, profile=None) -> np.ndarray:
    """HxWx3 uint8 RGB -> uint8 (size, size, channels): the model input before it is scaled to
    [0, 1] (preprocess divides this by 255; a quantised model takes it through a lookup table).
    profile: rgb's brightness_profile, when the caller has it already (the quality gates use it too)."""
    _check_rgb(rgb)
    size = int(spec["size"])
    pixels = None
    if spec["name"] == "cnmc_cell" and spec.get("stain") is None:
        pixels = _cell_uint8(rgb, spec.get("crop", "tight"), size, profile)
    elif spec["name"] == "brain_mri":
        pixels = _brain_uint8(rgb, spec, size)
    if pixels is None:
        pixels = _pillow_uint8(rgb, spec)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def preprocess(rgb: np.ndarray, spec: dict) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 (size, size, channels) in [0, 1]."""
    return preprocess_uint8(rgb, spec).astype(np.float32) / 255.0
