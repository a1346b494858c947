"""Input quality gates: reasons an image should not be trusted to the model.

Measured on the real data (see benchmarks/studies/quality_thresholds.py and README): every brain MRI and
C-NMC cell passes its own model's gates; a grey image is refused by the colour cell model, a
colour image by the MRI model, and blank, saturated and strongly blurred images by both.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

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

def analysis_copy(rgb: np.ndarray) -> Image.Image:
    """The image at the size the gates analyse it (at most ANALYSIS_SIDE on its long side)."""
    image = Image.fromarray(rgb)
    scale = max(image.size) / ANALYSIS_SIDE
    if scale > 1:
        image = image.resize((max(1, round(image.width / scale)), max(1, round(image.height / scale))),
                             Image.Resampling.BILINEAR)
    return image


def measure(rgb: np.ndarray) -> dict[str, float]:
    """The figures the gates look at, for an HxWx3 uint8 RGB image."""
    small = np.asarray(analysis_copy(rgb), dtype=np.float32)
    red, green, blue = small[:, :, 0], small[:, :, 1], small[:, :, 2]  # (per-channel ops: much faster
    gray = (red + green + blue) / 3                                      # than reducing over axis 2)
    foreground = gray > 10
    channel_gaps = (np.abs(red - green) + np.abs(green - blue)) / 2
    laplacian = (gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1])
    inner = foreground[1:-1, 1:-1]
    return {
        "colour": float(channel_gaps[foreground].mean()) if foreground.any() else 0.0,
        "contrast": float(gray.std()),
        "saturated": float((np.minimum(np.minimum(red, green), blue) >= 250).mean()),
        "sharpness": float(laplacian[inner].var()) if inner.sum() > 16 else 0.0,
    }


def quality_issues(rgb: np.ndarray, preprocessing: str) -> list[str]:
    """Reasons (empty when none) why this image is unlikely to be a fair input for the model."""
    figures = measure(rgb)
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
