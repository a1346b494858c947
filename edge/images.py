"""Read image files of every format users have into 8-bit RGB arrays, or fail with one clear reason."""
from __future__ import annotations

import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.image_limits import MAX_PIXELS, ImageError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> HxWx3 uint8 RGB; transparency is composited onto black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a file to HxWx3 uint8 RGB with its EXIF orientation applied."""
    name = os.fspath(path)
    try:
        if os.path.getsize(name) == 0:
            raise ImageError(f"{name}: empty file")
        if _has_dicom_prefix(name):  # a DICOM file, whatever its name
            return _load_dicom(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file's warnings: its error line says enough
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{name}: too large ({width}x{height} = {width * height / 1e6:.1f} MP; "
                                     f"the limit is {MAX_PIXELS / 1e6:.1f} MP)")
                if getattr(image, "n_frames", 1) > 1:
                    raise ImageError(f"{name}: animated or multi-frame image ({image.n_frames} frames)")
                image.load()
                return to_rgb_array(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except MemoryError:
        raise ImageError(f"{name}: too large to decode in the memory available") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: too large (over Pillow's decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, ZeroDivisionError) as error:
        raise ImageError(f"{name}: damaged image ({_one_line(error)})") from None


def _has_dicom_prefix(name: str) -> bool:
    with open(name, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _load_dicom(name: str) -> np.ndarray:
    try:
        from edge.dicom import load_dicom_image  # imported on use: pydicom is an optional extra
        import pydicom  # noqa: F401
    except ImportError:
        raise ImageError(f"{name}: a DICOM file; reading DICOM needs the dicom extra "
                         "(pip install 'edge-medical[dicom]')") from None
    return load_dicom_image(name)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
