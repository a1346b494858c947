"""The one definition of how a pixel becomes model input, shared by training, conversion and the device.

A preprocessing spec is a small JSON-able dict stored with every model, e.g.
``{"name": "brain_mri", "size": 128}`` (``"crop": "none"`` keeps the whole slice) or ``{"name": "cnmc_cell", "size": 96, "crop": "tight"}``.
``preprocess(rgb, spec)`` turns an HxWx3 uint8 RGB array into a float32 (size, size, channels)
array in [0, 1]. Only numpy and Pillow are used, so it runs unchanged on a Raspberry Pi.
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
    if crop == "tight":
        side = max(right - left, bottom - top) + 4
    elif crop == "fixed":
        side = max(CELL_FIXED_SIDE, right - left, bottom - top)
    else:
        raise ValueError(f"unknown cell crop {crop!r}")
    return _square_crop(rgb, (left + right) / 2, (top + bottom) / 2, side)


def normalize_stain(rgb: Image.Image) -> Image.Image:
    pixels = np.asarray(rgb, dtype=np.float32)
    mask = cell_mask(pixels)
    if not mask.any():
        return rgb
    gains = np.array(CELL_STAIN_MEANS) / np.maximum(pixels[mask].mean(axis=0), 1.0)
    return Image.fromarray(np.clip(np.rint(pixels * gains), 0, 255).astype(np.uint8))


def preprocess(rgb: np.ndarray, spec: dict) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 (size, size, channels) in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
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
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[:, :, None] if array.ndim == 2 else array
