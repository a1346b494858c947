"""Input quality gates: reasons an image should not be trusted to the model.

Measured on the real data (see benchmarks/studies/quality_thresholds.py and README): every brain MRI and
C-NMC cell passes its own model's gates; a grey image is refused by the colour cell model, a
colour image by the MRI model, and blank, saturated and strongly blurred images by both.

The figures are taken on the analysis copy (the image at most ANALYSIS_SIDE on its long side,
Pillow's bilinear resize), made by edge.preprocess.resize_bilinear: exactly that copy, but only
where the image is not black, and measured only there, in integer arithmetic (black pixels add
nothing but their count). A frame with a cell on black costs a fraction of the whole-frame work;
the figures equal those of the float32 code before (benchmarks/studies/quality_thresholds.py) to within
float32 rounding.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edge.preprocess import brightness_profile, content_box, resize_bilinear

ANALYSIS_SIDE = 256  # measured on a copy at most this large, so the gates cost little on a Pi

# Thresholds, from the distributions over the real data (python -m benchmarks.studies.quality_thresholds,
# 300 sampled images per set; the figures are in README.md "Input quality gates").
MIN_CELL_COLOUR = 15.0  # mean channel gap of non-black pixels: C-NMC cells min 32.9, brain MRI max 7.2
MAX_MRI_COLOUR = 15.0
MIN_CONTRAST = 5.0  # std of grey levels: MRI min 30.3, cells min 12.9; a blank frame is ~0
MAX_SATURATED = 0.5  # share of pixels >= 250 in every channel: MRI max 0.21, cells 0.0
# variance of the Laplacian at analysis size: sharp min 139 (MRI) / 92 (cells);
# after a radius-2 Gaussian blur max 67 (MRI) / 4.9 (cells)
MIN_SHARPNESS = {"brain_mri": 100.0, "cnmc_cell": 30.0}
FOREGROUND_SUM = 30  # grey level (R + G + B) / 3 above 10: R + G + B above 30
SATURATED_LEVEL = 250


def analysis_size(width: int, height: int) -> tuple[int, int]:
    """The analysis copy's (width, height): at most ANALYSIS_SIDE on the long side, never enlarged."""
    scale = max(width, height) / ANALYSIS_SIDE
    if scale <= 1:
        return width, height
    return max(1, round(width / scale)), max(1, round(height / scale))


def analysis_copy(rgb: np.ndarray) -> Image.Image:
    """The image at the size the gates analyse it (at most ANALYSIS_SIDE on its long side)."""
    return Image.fromarray(analysis_pixels(rgb))


def analysis_pixels(rgb: np.ndarray, profile=None) -> np.ndarray:
    """The analysis copy as an HxWx3 uint8 array (rgb itself when it is small enough)."""
    height, width = rgb.shape[:2]
    size = analysis_size(width, height)
    if size == (width, height):
        return rgb
    content = content_box(profile=profile if profile is not None else brightness_profile(rgb))
    return resize_bilinear(rgb, size, content) if content else np.zeros((size[1], size[0], 3), np.uint8)


def _figures(small: np.ndarray) -> dict[str, float]:
    """The gate figures of an analysis copy, from integer sums over its non-black part."""
    height, width = small.shape[:2]
    total = height * width
    box = content_box(small)
    if box is None:
        return {"colour": 0.0, "contrast": 0.0, "saturated": 0.0, "sharpness": 0.0}
    x0, y0, x1, y1 = box
    # one pixel of black margin where the image has one, for the Laplacian at the content's edge
    x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, width), min(y1 + 1, height)
    part = small[y0:y1, x0:x1].astype(np.int16)
    red, green, blue = part[:, :, 0], part[:, :, 1], part[:, :, 2]
    summed = red + green + blue  # 3 x the grey level, exact
    foreground = summed > FOREGROUND_SUM
    count = int(np.count_nonzero(foreground))
    gaps = np.abs(red - green) + np.abs(green - blue)  # 2 x the channel gap
    colour = int(gaps[foreground].sum(dtype=np.int64)) / (2 * count) if count else 0.0
    level_sum = int(summed.sum(dtype=np.int64))
    squares = int(np.square(summed, dtype=np.int64).sum())
    contrast = float(np.sqrt(max(total * squares - level_sum * level_sum, 0))) / total / 3
    saturated = int(np.count_nonzero(np.minimum(np.minimum(red, green), blue) >= SATURATED_LEVEL)) / total
    # the 4-neighbour Laplacian, in 3 x grey level units, at the foreground pixels off the image border:
    # all inside the margin-grown part (one on its edge is on the image border or is not foreground)
    sharpness = 0.0
    laplacian = (summed[1:-1, :-2] + summed[1:-1, 2:] + summed[:-2, 1:-1] + summed[2:, 1:-1]
                 - 4 * summed[1:-1, 1:-1]).astype(np.int64)
    values = laplacian[foreground[1:-1, 1:-1]]
    if values.size > 16:
        n, first, second = values.size, int(values.sum()), int(np.square(values).sum())
        sharpness = (n * second - first * first) / (n * n) / 9
    return {"colour": float(colour), "contrast": contrast, "saturated": float(saturated), "sharpness": float(sharpness)}


def measure(rgb: np.ndarray, profile=None) -> dict[str, float]:
    """The figures the gates look at, for an HxWx3 uint8 RGB image (profile: its
    edge.preprocess.brightness_profile, when the caller has it already)."""
    return _figures(analysis_pixels(rgb, profile))


def quality_issues(rgb: np.ndarray, preprocessing: str, profile=None) -> list[str]:
    """Reasons (empty when none) why this image is unlikely to be a fair input for the model."""
    figures = measure(rgb, profile)
    issues = []
    if figures["contrast"] < MIN_CONTRAST:
        issues.append(f"blank image (contrast {figures['contrast']:.1f} < {MIN_CONTRAST})")
    if figures["saturated"] > MAX_SATURATED:
        issues.append(f"saturated image ({figures['saturated']:.0%} of pixels white)")
    if preprocessing == "cnmc_cell" and figures["colour"] < MIN_CELL_COLOUR:
        issues.append(f"greyscale image, a stained colour cell is expected (colour {figures['colour']:.1f})")
    if preprocessing == "brain_mri" and figures["colour"] > MAX_MRI_COLOUR:
        issues.append(f"colour image, a greyscale MRI is expected (colour {figures['colour']:.1f})")
    if not issues and figures["sharpness"] < MIN_SHARPNESS[preprocessing]:
        issues.append(f"out of focus (sharpness {figures['sharpness']:.1f} < {MIN_SHARPNESS[preprocessing]})")
    return issues
