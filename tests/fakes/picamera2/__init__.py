"""A stand-in for picamera2 (which installs only on a Raspberry Pi), following its real API and the
behaviour that matters to a caller (picamera2/picamera2.py of raspberrypi/picamera2):

- ``Picamera2.global_camera_info()`` lists the attached cameras (empty: none attached);
- ``Picamera2(camera_num)``; ``sensor_modes``, ``camera_properties`` and ``camera_controls`` as an
  imx708 (Camera Module 3) reports them;
- ``create_preview_configuration`` and ``create_video_configuration`` with the real signatures and
  defaults: main XBGR8888 640x480 (preview) or 1280x720 (video), lores (when asked) YUV420 at the
  main size, buffer_count 4 or 6; only "format" and "size" accepted in a stream (ValueError
  otherwise); sizes rounded down to even (align_stream(optimal=False)); the controls given laid over
  the defaults (preview: NoiseReductionMode Minimal, FrameDurationLimits (100, 83333); video:
  NoiseReductionMode Fast, FrameDurationLimits (33333, 33333));
- ``configure`` checks the configuration as picamera2 does (a stream is a dict with a string format
  and an even (width, height) tuple; the lores stream must be YUV420 and no larger than main),
  records each stream's stride and keeps it in ``camera_config``; ``start``; ``capture_array(name)``;
  ``stop``; ``close``;
- an "RGB888" stream delivers H x W x 3 arrays in B, G, R byte order;
- a "YUV420" stream delivers planar I420 as a (H * 3 / 2) x stride array, each row padded to a
  multiple of 64 bytes, as the Pi's ISP pads it.

The picture is ``Picamera2.scene`` (an RGB uint8 array set by the test), resized to each stream.
``Picamera2.fail_after`` makes capture_array raise after that many frames, like an unplugged cable.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["Picamera2"]

NOISE_REDUCTION_MINIMAL, NOISE_REDUCTION_FAST = 3, 1  # libcamera.controls.draft.NoiseReductionModeEnum values
YUV_ROW_ALIGN = 64


class Picamera2:
    cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/fake/imx708@1a", "Num": 0}]
    scene = np.zeros((480, 640, 3), dtype=np.uint8)
    fail_after: int | None = None
    opened: list["Picamera2"] = []

    @staticmethod
    def global_camera_info() -> list[dict]:
        return list(Picamera2.cameras)

    def __init__(self, camera_num: int = 0, verbose_console=None, tuning=None, allocator=None):
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.camera_config = None
        self.started = False
        self.closed = False
        self.frames = 0
        self.camera_properties = {"Model": self.cameras[camera_num]["Model"], "PixelArraySize": (4608, 2592),
                                  "ColorFilterArrangement": 0, "Rotation": self.cameras[camera_num]["Rotation"]}
        self.camera_controls = {"FrameDurationLimits": (8333, 10_000_000, 33333), "NoiseReductionMode": (0, 4, 0)}
        self.sensor_modes = [
            {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (1536, 864), "fps": 120.13,
             "crop_limits": (768, 432, 3072, 1728), "exposure_limits": (9, None)},
            {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (2304, 1296), "fps": 56.03,
             "crop_limits": (0, 0, 4608, 2592), "exposure_limits": (13, 77208384, None)},
            {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (4608, 2592), "fps": 14.35,
             "crop_limits": (0, 0, 4608, 2592), "exposure_limits": (26, 112015443, None)}]
        Picamera2.opened.append(self)

    @staticmethod
    def _stream(defaults: dict, updates: dict | None) -> dict | None:
        if updates is None:
            return None
        for key in updates:
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
        stream = {**defaults, **updates}
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)  # align_stream(optimal=False)
        return stream

    def _configuration(self, use_case: str, main, lores, raw, buffer_count, controls, display, encode, queue,
                       main_size, default_controls) -> dict:
        if self.closed:
            raise RuntimeError("Camera not opened")
        main = self._stream({"format": "XBGR8888", "size": main_size}, main)
        lores = self._stream({"format": "YUV420", "size": main["size"]}, lores)
        raw = self._stream({"format": "SRGGB10_CSI2P", "size": main["size"]}, raw)
        config = {"use_case": use_case, "buffer_count": buffer_count, "queue": queue, "main": main, "lores": lores,
                  "raw": raw, "controls": {**default_controls, **controls}}
        for name in (display, encode):
            if name is not None and config.get(name) is None:
                raise RuntimeError(f"Display stream {name} was not defined")
        config["display"], config["encode"] = display, encode
        return config

    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                     buffer_count=4, controls={}, display="main", encode="main", queue=True):
        return self._configuration("preview", main, lores, raw, buffer_count, controls, display, encode, queue,
                                   (640, 480), {"NoiseReductionMode": NOISE_REDUCTION_MINIMAL,
                                                "FrameDurationLimits": (100, 83333)})

    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=6, controls={}, display="main", encode="main", queue=True):
        return self._configuration("video", main, lores, raw, buffer_count, controls, display, encode, queue,
                                   (1280, 720), {"NoiseReductionMode": NOISE_REDUCTION_FAST,
                                                 "FrameDurationLimits": (33333, 33333)})

    @staticmethod
    def _check_stream(stream, name: str) -> None:
        if type(stream) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        if type(stream.get("format")) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        size = stream.get("size")
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def configure(self, camera_config) -> None:
        if self.closed:
            raise RuntimeError("Camera is closed")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        camera_config = dict(camera_config)
        self._check_stream(camera_config["main"], "main")
        lores = camera_config.get("lores")
        if lores is not None:
            self._check_stream(lores, "lores")
            main_w, main_h = camera_config["main"]["size"]
            if lores["size"][0] > main_w or lores["size"][1] > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
        limits = camera_config.get("controls", {}).get("FrameDurationLimits")
        if limits is not None and not (len(limits) == 2 and all(isinstance(v, int) and v > 0 for v in limits)):
            raise RuntimeError(f"FrameDurationLimits must be two positive whole microseconds, got {limits!r}")
        for name in ("main", "lores"):
            stream = camera_config.get(name)
            if stream is not None:
                width = stream["size"][0]
                stream = camera_config[name] = dict(stream)
                stream["stride"] = (-(-width // YUV_ROW_ALIGN) * YUV_ROW_ALIGN if stream["format"] == "YUV420"
                                    else width * (4 if stream["format"].startswith("X") else 3))
        self.camera_config = camera_config

    def start(self, config=None, show_preview=False) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera must be started before capture")
        if Picamera2.fail_after is not None and self.frames >= Picamera2.fail_after:
            raise RuntimeError("Device or resource busy: camera frontend has timed out")
        stream = self.camera_config[name]
        if stream is None:
            raise RuntimeError(f"stream {name} is not configured")
        self.frames += 1
        width, height = stream["size"]
        rgb = cv2.resize(self.scene, (width, height), interpolation=cv2.INTER_AREA)
        if stream["format"] == "RGB888":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        if stream["format"] == "YUV420":
            padded = np.zeros((height, stream["stride"], 3), np.uint8)
            padded[:, :width] = rgb
            return cv2.cvtColor(padded, cv2.COLOR_RGB2YUV_I420)
        raise RuntimeError(f"format {stream['format']} not supported by this fake")

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True
