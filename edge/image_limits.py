"""What every image reader (edge/images.py, edge/dicom.py) refuses, and the error it says so with;
here so that the two readers import it from below rather than from each other."""
from __future__ import annotations

# Larger images are refused from their header, before decoding: a 450x450 cell, a 2k MRI and a
# 12-megapixel camera frame are far below this, and decoding 16.8 MP stays under about 250 MB.
MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """An input file that cannot be used as an image; the message is one line."""
