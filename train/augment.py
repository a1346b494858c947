"""Training-only augmentation for cells: stain jitter in haematoxylin-eosin-DAB space (scikit-image's
colour deconvolution, after Tellez et al. 2018), gamma and blur, on top of the Keras preprocessing
layers of train.model.augmentation. Background pixels (segmented black) stay black."""
from __future__ import annotations

import numpy as np
from skimage.color import hed2rgb, rgb2hed
from skimage.filters import gaussian

from edge.preprocess import CELL_THRESHOLD

HED_SCALE = 0.05  # each stain's concentration scaled by U(1-s, 1+s) ...
HED_SHIFT = 0.01  # ... and shifted by U(-t, t), per image and stain
GAMMA_RANGE = (0.8, 1.25)
BLUR_SIGMA = (0.0, 1.2)  # Gaussian sigma in pixels, per image: a camera a little out of focus


def stain_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 (n, h, w, 3) in [0, 1] -> the same with each image's stains and gamma jittered."""
    count = len(images)
    foreground = images.max(axis=-1, keepdims=True) > CELL_THRESHOLD / 255
    hed = rgb2hed(images)
    scale = rng.uniform(1 - HED_SCALE, 1 + HED_SCALE, (count, 1, 1, 3))
    shift = rng.uniform(-HED_SHIFT, HED_SHIFT, (count, 1, 1, 3))
    jittered = np.clip(hed2rgb(hed * scale + shift), 0, 1)
    gamma = rng.uniform(*GAMMA_RANGE, (count, 1, 1, 1))
    return np.where(foreground, jittered**gamma, 0).astype(np.float32)


def stain_blur_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """stain_jitter, then each image blurred by a Gaussian of sigma U(BLUR_SIGMA)."""
    jittered = stain_jitter(images, rng)
    sigmas = rng.uniform(*BLUR_SIGMA, len(images))
    return np.stack([gaussian(image, sigma=sigma, channel_axis=-1, preserve_range=True) if sigma > 0.3 else image
                     for image, sigma in zip(jittered, sigmas)]).astype(np.float32)
