"""A stand-in for picamera2 (which installs only on a Raspberry Pi), following its real API and the
behaviour that matters to a caller:

- ``Picamera2.global_camera_info()`` lists the attached cameras (empty: none attached);
- ``Picamera2(camera_num)``; ``create_preview_configuration(main=..., lores=...)`` returns a dict
  of stream configurations; ``configure``; ``start``; ``capture_array(name)``; ``stop``; ``close``;
- an "RGB888" stream delivers H x W x 3 arrays in B, G, R byte order;
- a "YUV420" stream delivers planar I420 as a (H * 3 / 2) x W array;
- like a Pi 4, the lores stream must be YUV420 and no larger than main.

The picture is ``Picamera2.scene`` (an RGB uint8 array set by the test), resized to each stream.
``Picamera2.fail_after`` makes capture_array raise after that many frames, like an unplugged cable.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["Picamera2"]


class Picamera2:
    cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/fake/imx708@1a", "Num": 0}]
    scene = np.zeros((480, 640, 3), dtype=np.uint8)
    fail_after: int | None = None
    opened: list["Picamera2"] = []

    @staticmethod
    def global_camera_info() -> list[dict]:
        return list(Picamera2.cameras)

    def __init__(self, camera_num: int = 0, tuning=None):
        if camera_num >= len(self.cameras):
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.camera_config = None
        self.started = False
        self.closed = False
        self.frames = 0
        Picamera2.opened.append(self)

    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                     buffer_count=4, controls={}, display="main", encode="main", queue=True,
                                     sensor={}, use_case="preview"):
        main_config = {"format": "XBGR8888", "size": (640, 480), **main}
        lores_config = None if lores is None else {"format": "YUV420", "size": (320, 240), **lores}
        return {"use_case": use_case, "buffer_count": buffer_count, "main": main_config,
                "lores": lores_config, "raw": raw, "controls": controls, "display": display, "encode": encode}

    def configure(self, camera_config) -> None:
        if self.closed:
            raise RuntimeError("Camera is closed")
        lores = camera_config.get("lores")
        if lores is not None:
            if lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
            main_w, main_h = camera_config["main"]["size"]
            if lores["size"][0] > main_w or lores["size"][1] > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self.camera_config = camera_config

    def start(self) -> None:
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
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        raise RuntimeError(f"format {stream['format']} not supported by this fake")

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True
