"""Read DICOM files (pydicom) into 8-bit RGB slices, or fail or skip with one clear reason.

This module owns the DICOM file format on the reading side. A file is DICOM by its content (the
"DICM" prefix after the 128-byte preamble), whatever its name. Each image frame becomes an HxWx3
uint8 array, as every other image does:

1. the modality LUT: rescale slope and intercept (or the Modality LUT Sequence);
2. the VOI: the VOI LUT Sequence when present, else the first window centre and width (LINEAR,
   LINEAR_EXACT or SIGMOID), else for 8-bit data with no rescale the stored values as they are,
   else a percentile window from the 0.5th to the 99.5th percentile of the frame (PERCENTILE_WINDOW);
3. MONOCHROME1 inverted, so that higher is brighter as in MONOCHROME2;
4. colour data (RGB, YBR) converted to RGB by pydicom; PALETTE COLOR through its palette.

Memory is bounded from the header before any pixel is decoded (rows x columns per frame, and
rows x columns x frames x samples in all), and frames are decoded one at a time from the file.
Non-image objects (SR, presentation states, raw data: no Pixel Data) raise DicomSkip. Compressed
transfer syntaxes are decoded by pydicom's plugins where one is installed (RLE and Deflate natively;
JPEG baseline and JPEG 2000 through Pillow); otherwise one line names the transfer syntax."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge.image_limits import MAX_PIXELS, ImageError

PREAMBLE = 128
MAGIC = b"DICM"
# Decoded samples of one file, summed over its frames: 512 slices of 512x512 (a large multi-frame
# study) fit; the 8-byte working copy exists for one frame at a time.
MAX_TOTAL_SAMPLES = 512 * 512 * 1024
MAX_FILE_BYTES = 1 << 30  # a file is read once to check it; larger ones are refused from their size
PERCENTILE_WINDOW = (0.5, 99.5)  # the window when the file gives none (and the data are not 8-bit)
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic", ".ima")


class DicomError(ImageError):
    """A DICOM file that cannot be used; the message is one line."""


class DicomSkip(DicomError):
    """A valid DICOM object that is not classified (not an image, another modality, a localizer...)."""


@dataclass(frozen=True)
class SliceInfo:
    """What the series grouping and the report need from one frame's header."""
    path: str
    frame: int | None  # 1-based frame number in a multi-frame object, None for a single frame
    frames: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    modality: str
    series_description: str
    series_number: int | None
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None  # ImageOrientationPatient, 6 direction cosines

    @property
    def instance(self) -> str:
        """The slice's name in reports: the InstanceNumber, with ':frame' for a multi-frame object."""
        number = "?" if self.instance_number is None else str(self.instance_number)
        return number if self.frame is None else f"{number}:{self.frame}"


def has_dicom_prefix(path: str | os.PathLike) -> bool:
    """True when the file has the DICOM Part 10 'DICM' prefix at byte 128 (the name does not matter)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(PREAMBLE)
            return handle.read(4) == MAGIC
    except OSError:
        return False


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM file by content, or a file named like one (which then fails with its reason if it is not)."""
    return str(path).lower().endswith(DICOM_EXTENSIONS) or has_dicom_prefix(path)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _first(value):
    """A multi-valued element's first value (DS/IS window centres can hold several)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _functional(ds, frame_index: int, sequence: str, attribute: str):
    """An attribute from an enhanced multi-frame object's per-frame, else shared, functional groups."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame_index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > index:
            macro = items[index].get(sequence)
            if macro is not None and len(macro) and attribute in macro[0]:
                return macro[0].get(attribute)
    return None


def _attr(ds, frame_index: int, sequence: str, attribute: str):
    value = ds.get(attribute)
    return _functional(ds, frame_index, sequence, attribute) if value is None else value


def _quiet_pydicom() -> None:
    """Odd values (an IS of '1A', a DS too long) are read as they are, without a warning per element."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE


def read_header(path: str | os.PathLike):
    """-> the pydicom Dataset, its pixel data left in the file (raises DicomError)."""
    import pydicom

    from pydicom.errors import InvalidDicomError

    _quiet_pydicom()

    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
    except FileNotFoundError:
        raise DicomError(f"{name}: no such file") from None
    except OSError as error:
        raise DicomError(f"{name}: cannot read ({error.strerror or error})") from None
    if size == 0:
        raise DicomError(f"{name}: empty file")
    if size > MAX_FILE_BYTES:
        raise DicomError(f"{name}: too large ({size / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB)")
    if not has_dicom_prefix(name):
        raise DicomError(f"{name}: not a DICOM file (no 'DICM' prefix after the 128-byte preamble)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd but readable headers
            # large elements (the pixel data above all) stay in the file until they are used
            return pydicom.dcmread(name, defer_size=1024)
    except InvalidDicomError as error:
        raise DicomError(f"{name}: not a DICOM file ({_one_line(error)})") from None
    except MemoryError:
        raise DicomError(f"{name}: damaged DICOM header (too large to read)") from None
    except IsADirectoryError:
        raise DicomError(f"{name}: is a directory") from None
    except PermissionError:
        raise DicomError(f"{name}: permission denied") from None
    except Exception as error:  # pydicom raises many types on a truncated or malformed header
        raise DicomError(f"{name}: damaged DICOM header ({_one_line(error)})") from None


def _orientation(ds, index: int) -> tuple[float, ...] | None:
    value = _attr(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient")
    try:
        cosines = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return cosines if len(cosines) == 6 and all(np.isfinite(cosines)) else None


def slice_infos(ds, path: str) -> list[SliceInfo]:
    """One SliceInfo per frame of an image object (raises DicomSkip for an object without pixels)."""
    from pydicom.uid import UID

    sop_class = str(ds.get("SOPClassUID", ""))
    if not sop_class:
        raise DicomError(f"{path}: incomplete or damaged DICOM object (no SOP Class UID)")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = UID(sop_class).name if sop_class else "no SOP Class UID"
        raise DicomSkip(f"{path}: not an image ({kind}; no Pixel Data)")
    if "PixelData" not in ds:
        raise DicomSkip(f"{path}: float pixel data (parametric map) is not classified")
    check_pixel_header(ds, path)  # before a SliceInfo per frame is made for a header claiming 1000 frames
    frames = _int(ds.get("NumberOfFrames"), 1) or 1
    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
    common = dict(path=path, frames=frames, study_uid=str(ds.get("StudyInstanceUID", "")),
                  series_uid=str(ds.get("SeriesInstanceUID", "")), sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                  sop_class_uid=sop_class, instance_number=_int(ds.get("InstanceNumber")),
                  modality=str(ds.get("Modality", "")).upper(), series_description=str(ds.get("SeriesDescription", "")),
                  series_number=_int(ds.get("SeriesNumber")), image_type=image_type)
    return [SliceInfo(frame=None if frames == 1 else index + 1, orientation=_orientation(ds, index), **common)
            for index in range(frames)]


def check_pixel_header(ds, path: str, pixel_length: int | None = None) -> None:
    """Refuse, from the header alone, images too large to decode or described inconsistently."""
    from pydicom.uid import UID

    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    frames = _int(ds.get("NumberOfFrames"), 1) or 1
    samples = _int(ds.get("SamplesPerPixel"), 1) or 1
    bits = _int(ds.get("BitsAllocated"), 0)
    if rows <= 0 or columns <= 0:
        raise DicomError(f"{path}: no image size in the header (Rows {rows}, Columns {columns})")
    if rows * columns > MAX_PIXELS:
        raise DicomError(f"{path}: too large ({columns}x{rows} = {rows * columns / 1e6:.1f} MP per frame; "
                         f"the limit is {MAX_PIXELS / 1e6:.1f} MP)")
    if frames < 1 or rows * columns * frames * samples > MAX_TOTAL_SAMPLES:
        raise DicomError(f"{path}: too large ({columns}x{rows}x{frames} frames x {samples} samples; the limit is "
                         f"{MAX_TOTAL_SAMPLES / 1e6:.0f} M samples per file)")
    if bits not in (8, 16) or samples not in (1, 3):
        raise DicomError(f"{path}: unsupported pixel layout ({bits} bits allocated, {samples} samples per pixel; "
                         "8 or 16 bits, 1 or 3 samples are read)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not UID(str(syntax)).is_compressed:
        expected = rows * columns * frames * samples * bits // 8
        if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
            expected = expected * 2 // 3  # two chroma samples shared by each pair of pixels
        if pixel_length is not None and pixel_length < expected:
            raise DicomError(f"{path}: pixel data is {pixel_length} bytes, shorter than the {expected} bytes the header's "
                             f"{columns}x{rows}x{frames} {bits}-bit image needs")


def _pixel_data_length(ds, path: str) -> int | None:
    """The bytes of native Pixel Data really in the file (None when encapsulated), without loading them."""
    element = ds.get_item("PixelData", keep_deferred=True)
    if element is None:
        return None
    value = element.value
    undefined = element.is_undefined_length if hasattr(element, "is_undefined_length") else element.length == 0xFFFFFFFF
    if undefined:
        return None
    if value is not None:
        return len(value)
    length, tell = getattr(element, "length", None), getattr(element, "value_tell", None)
    if length is None or tell is None:
        return None
    return max(0, min(length, os.path.getsize(path) - tell))  # deferred: what the file holds after its tag


def _voi(frame: np.ndarray, ds, index: int, bits_stored: int, rescaled: bool) -> np.ndarray:
    """Modality values -> display values in [0, 1] (PS3.3 C.11.2.1.2 for windows)."""
    from pydicom.pixels import apply_voi_lut

    voi_sequence = _attr(ds, index, "FrameVOILUTSequence", "VOILUTSequence")
    if voi_sequence is not None and len(voi_sequence) and "LUTDescriptor" in voi_sequence[0]:
        out = apply_voi_lut(frame, ds, index=0, prefer_lut=True).astype(np.float64)
        bits = _int(voi_sequence[0].LUTDescriptor[2], 16)
        return np.clip(out / float((1 << bits) - 1), 0.0, 1.0)
    centre = _first(_attr(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _first(_attr(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    function = str(_attr(ds, index, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR").upper()
    try:
        centre, width = float(centre), float(width)
    except (TypeError, ValueError):
        centre = width = None
    if centre is not None and np.isfinite(centre) and np.isfinite(width) and width >= 1:
        if function == "SIGMOID":
            return 1.0 / (1.0 + np.exp(-4.0 * (frame - centre) / width))
        if function == "LINEAR_EXACT":
            return np.clip((frame - centre) / width + 0.5, 0.0, 1.0)
        if width > 1:
            return np.clip((frame - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if bits_stored <= 8 and not rescaled:
        return frame / 255.0
    low, high = np.percentile(frame, PERCENTILE_WINDOW)
    if high <= low:
        return np.zeros_like(frame)
    return np.clip((frame - low) / (high - low), 0.0, 1.0)


def _to_rgb(raw: np.ndarray, ds, index: int) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds).astype(np.float64)
        top = float(rgb.max()) if rgb.size else 0.0
        return np.clip(np.rint(rgb * (255.0 / (65535.0 if top > 255 else 255.0))), 0, 255).astype(np.uint8)
    if raw.ndim == 3:  # RGB (pydicom converted YBR to RGB)
        if raw.dtype == np.uint8:
            return np.ascontiguousarray(raw)
        bits = _int(ds.get("BitsStored"), 16)
        return np.clip(np.rint(raw * (255.0 / ((1 << bits) - 1))), 0, 255).astype(np.uint8)
    slope = _attr(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _attr(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    rescaled = "ModalityLUTSequence" in ds or (slope is not None and float(slope) != 1) or \
        (intercept is not None and float(intercept) != 0)
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(raw, ds).astype(np.float64)
    else:
        values = raw.astype(np.float64) * (1.0 if slope is None else float(slope)) + \
            (0.0 if intercept is None else float(intercept))
    shown = _voi(values, ds, index, _int(ds.get("BitsStored"), 16), rescaled)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    gray = np.clip(np.rint(shown * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


DEFLATED = "1.2.840.10008.1.2.1.99"


def _read_whole(name: str):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(name)


def iter_frames(path: str | os.PathLike, ds=None) -> Iterator[tuple[SliceInfo, np.ndarray]]:
    """(SliceInfo, HxWx3 uint8 RGB) per frame, decoded one frame at a time (raises DicomError, DicomSkip)."""
    from pydicom.pixels import iter_pixels
    from pydicom.uid import UID

    name = os.fspath(path)
    ds = read_header(name) if ds is None else ds
    infos = slice_infos(ds, name)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    check_pixel_header(ds, name, None if syntax == DEFLATED else _pixel_data_length(ds, name))
    # frames are read one at a time from the file; a deflated file must be inflated whole first
    frames = iter_pixels(_read_whole(name) if syntax == DEFLATED else name)
    for index, info in enumerate(infos):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = next(frames)
            rgb = _to_rgb(raw, ds, index)
        except StopIteration:
            raise DicomError(f"{name}: frame {index + 1} of {len(infos)} is missing from the pixel data") from None
        except MemoryError:
            raise DicomError(f"{name}: too large to decode in the memory available") from None
        except (NotImplementedError, RuntimeError) as error:
            if syntax.is_compressed and ("plugin" in str(error) or "decoder" in str(error).lower()):
                raise DicomError(f"{name}: compressed with {syntax.name} ({syntax}), which no installed "
                                 "pixel-data plugin decodes") from None
            raise DicomError(f"{name}: cannot decode the pixel data ({_one_line(error)})") from None
        except Exception as error:
            raise DicomError(f"{name}: cannot decode the pixel data ({_one_line(error)})") from None
        yield info, rgb


def load_dicom_image(path: str | os.PathLike) -> np.ndarray:
    """A single-frame DICOM image -> HxWx3 uint8 RGB (load_image's route for DICOM files)."""
    name = os.fspath(path)
    ds = read_header(name)
    frames = _int(ds.get("NumberOfFrames"), 1) or 1
    if frames > 1 and "PixelData" in ds:
        raise DicomError(f"{name}: multi-frame DICOM ({frames} frames); edge-classify classifies each frame")
    for _, rgb in iter_frames(name, ds):
        return rgb
    raise DicomError(f"{name}: no frames in the pixel data")
