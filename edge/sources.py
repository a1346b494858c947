"""Frame sources for live classification: a Pi camera, an OpenCV camera or video, a folder replay.

Every source is a context manager that yields HxWx3 uint8 RGB frames from ``read()``:

    with open_source("0") as source:          # USB microscope camera /dev/video0
        rgb = source.read()

``open_source`` picks the source from a string: ``picamera2`` (or ``picamera2:1`` for a second
camera), a device index, a folder of images, or a video file or stream URL. Hardware libraries
are imported only when their source is opened: picamera2 for the Pi camera, cv2 for OpenCV.

A camera is set up from ``CameraSettings`` (edge-live's --camera-size, --camera-fps, --camera-stream,
--camera-fourcc): the picamera2 source passes them to picamera2's own configuration
(``create_video_configuration``: the stream read and its size, ``FrameDurationLimits`` for the rate);
an OpenCV camera gets CAP_PROP_FOURCC, the frame size and CAP_PROP_FPS, and both report what the
camera actually delivers (``describe()``). ``list_cameras()`` says what is attached.

``LatestFrame`` runs a source in a background thread and keeps only the newest frame, so a slow
model never works on stale frames, and it reopens a lost camera with backoff. A file or folder read
unpaced (fps 0) is the exception: nothing is stale there, so every frame is handed on.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from edge.images import ImageError, is_image_file, load_image


class SourceError(RuntimeError):
    """The source cannot be opened or a read failed (a lost camera); it may be reopened."""


class EndOfStream(Exception):
    """A finite source (a video file, a folder without --loop) has no more frames."""


@dataclass(frozen=True)
class CameraSettings:
    """How a camera is set up; None leaves the source's default."""
    size: tuple[int, int] | None = None  # (width, height) of the frames read
    fps: float | None = None  # frames a second the camera delivers
    stream: str | None = None  # picamera2: "main" (full field of view) or "lores" (small, YUV420)
    fourcc: str | None = None  # OpenCV camera: the pixel format asked of the driver, e.g. "MJPG"


def parse_size(text: str) -> tuple[int, int]:
    """"1280x960" -> (1280, 960); ValueError (one line) otherwise."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and 16 <= int(width) <= 8192 and 16 <= int(height) <= 8192):
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT (16 to 8192 each, e.g. 1280x960)")
    return int(width), int(height)


def parse_fourcc(text: str) -> str:
    if len(text) != 4 or not text.isascii() or not text.isprintable():
        raise ValueError(f"{text!r} is not a four-character code (e.g. MJPG, YUYV)")
    return text


class FrameSource:
    """Base class: ``open()``, ``read() -> RGB uint8``, ``close()``; a context manager.

    ``keeps_every_frame``: True for a recording read as fast as it decodes (a video file or a folder
    at fps 0), whose frames must all be classified: LatestFrame then reads it on demand instead of
    replacing frames nobody took."""

    name = "source"
    keeps_every_frame = False

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str | None:
        """What the source delivers once open (a camera's size, rate and format), or None."""
        return None


class Pacer:
    """Sleeps so that successive frames are at least 1/fps apart (no pacing when fps is 0 or None)."""

    def __init__(self, fps: float | None):
        self.interval = 1.0 / fps if fps else 0.0
        self.next_time = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_time > now:
            time.sleep(self.next_time - now)
        self.next_time = max(now, self.next_time) + self.interval


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise SourceError("OpenCV is not installed: pip install 'edge-medical[camera]'") from None
    return cv2


@contextmanager
def _opencv_quiet(cv2, stderr_too: bool):
    """OpenCV's own log lines off; with stderr_too, FFmpeg's as well (FFmpeg writes straight to file
    descriptor 2, so that points at /dev/null meanwhile: used only while opening a file, before any
    other thread writes)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    saved_stderr = None
    if stderr_too:
        try:
            sys.stderr.flush()
            saved_stderr = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no stderr to silence
            pass
    try:
        yield
    finally:
        if saved_stderr is not None:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        cv2.utils.logging.setLogLevel(level)


class OpenCVSource(FrameSource):
    """A V4L2/UVC camera (device index), a video file or a stream URL, through cv2.VideoCapture.

    A video file stands in for a camera: it is played at its own frame rate (``fps`` overrides it;
    0 plays as fast as it decodes, every frame kept) and ends with EndOfStream, or with ``loop``
    starts again. Opening a file reads its first frame, so a file that is not a video fails there,
    quietly (one SourceError, no OpenCV or FFmpeg lines). A camera or stream that stops delivering
    raises SourceError, so it can be reopened.
    """

    def __init__(self, target: int | str, fps: float | None = None, size: tuple[int, int] | None = None,
                 loop: bool = False, camera: CameraSettings | None = None):
        self.target = target
        self.is_file = isinstance(target, str) and os.path.isfile(target)
        self.fps = fps
        self.camera = camera or CameraSettings(size=size)
        self.size = self.camera.size
        self.loop = loop
        self.delivered: dict | None = None  # a camera's size, fps and fourcc as the driver reports them
        self.capture = None
        self.first_frame = None  # read when a file is opened, handed out by the first read()
        self.pacer = Pacer(None)
        self.name = f"camera {target}" if isinstance(target, int) else str(target)

    @property
    def keeps_every_frame(self) -> bool:
        return self.is_file and not self.pacer.interval

    def open(self) -> None:
        cv2 = _import_cv2()
        with _opencv_quiet(cv2, stderr_too=self.is_file):
            capture = cv2.VideoCapture(self.target)
            ok, first = capture.read() if capture.isOpened() and self.is_file else (True, None)
        if not capture.isOpened() or not ok:
            capture.release()
            if self.is_file:
                raise SourceError(f"{self.name}: cannot open as a video (not a video file, or a codec OpenCV lacks)")
            raise SourceError(f"{self.name}: cannot open (not connected, busy, or not a video)")
        self.first_frame = first
        if isinstance(self.target, int):
            self.delivered = set_up_opencv_camera(cv2, capture, self.camera)
        fps = self.fps
        if fps is None and self.is_file:
            fps = capture.get(cv2.CAP_PROP_FPS) or None
        self.pacer = Pacer(fps)
        self.capture = capture

    def read(self) -> np.ndarray:
        if self.capture is None:
            raise SourceError(f"{self.name}: not open")
        cv2 = _import_cv2()
        self.pacer.wait()
        if self.first_frame is not None:
            ok, bgr, self.first_frame = True, self.first_frame, None
        else:
            ok, bgr = self.capture.read()
        if not ok and self.is_file and self.loop:  # start the file again
            self.capture.release()
            self.capture = cv2.VideoCapture(self.target)
            ok, bgr = self.capture.read()
        if not ok:
            if self.is_file:
                raise EndOfStream(self.name)
            raise SourceError(f"{self.name}: read failed (camera unplugged or stream ended)")
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.first_frame = None
        if self.capture is not None:
            self.capture.release()
            self.capture = None

    def describe(self) -> str | None:
        if not self.delivered:
            return None
        found = self.delivered
        return f"{self.name}: {found['width']}x{found['height']}, {found['fps']:g} fps, {found['fourcc'] or 'format ?'}"


def _fourcc_text(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    return text if code and text.isprintable() else ""


def set_up_opencv_camera(cv2, capture, camera: CameraSettings) -> dict:
    """Ask a V4L2/UVC camera for the settings (fourcc first: it decides which sizes and rates the
    driver offers, then the size, then the rate) with a buffer of one frame; -> what it delivers."""
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2 queues several frames; keep the newest
    if camera.fourcc:
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*camera.fourcc))
    if camera.size:
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, camera.size[0])
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.size[1])
    if camera.fps:
        capture.set(cv2.CAP_PROP_FPS, camera.fps)
    return {"width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(capture.get(cv2.CAP_PROP_FPS) or 0.0), "fourcc": _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))}


class FolderSource(FrameSource):
    """The images of a folder in name order, replayed at ``fps`` (0: as fast as they load).

    An unreadable image is skipped and its one-line reason appended to ``skipped``, so one bad
    file does not stop a run.
    """

    def __init__(self, folder: str, fps: float | None = 10.0, loop: bool = False):
        self.folder = folder
        self.fps = fps
        self.loop = loop
        self.paths: list[str] = []
        self.position = 0
        self.bad_paths: set[str] = set()
        self.skipped: list[str] = []  # "path: reason" of each unreadable image, once
        self.pacer = Pacer(fps)
        self.name = folder

    @property
    def keeps_every_frame(self) -> bool:
        return not self.pacer.interval

    def open(self) -> None:
        if not os.path.isdir(self.folder):
            raise SourceError(f"{self.folder}: no such folder")
        self.paths = sorted(os.path.join(self.folder, name) for name in os.listdir(self.folder)
                            if is_image_file(name))
        if not self.paths:
            raise SourceError(f"{self.folder}: no image files")
        self.position = 0

    def read(self) -> np.ndarray:
        while True:
            if self.position >= len(self.paths):
                if not self.loop or len(self.bad_paths) >= len(self.paths):
                    raise EndOfStream(self.name)
                self.position = 0
            path = self.paths[self.position]
            self.position += 1
            try:
                rgb = load_image(path)
            except ImageError as error:
                if path not in self.bad_paths:
                    self.bad_paths.add(path)
                    self.skipped.append(str(error))
                continue
            self.pacer.wait()
            return rgb


class PiCameraSource(FrameSource):
    """A Raspberry Pi camera through picamera2 (installed from the OS: apt install python3-picamera2).

    ``stream`` picks what is read: "main" (the full field of view at ``main_size``, RGB888, which
    picamera2 delivers in BGR order: field mode, where a white cell's chromatin needs the pixels) or
    "lores" (``lores_size``, near the model's input size, YUV420, the only lores format a Pi 4 has:
    a single cell). The camera is configured with picamera2's ``create_video_configuration``
    (continuous frames, 6 buffers), only the stream read besides the main one it always has, and
    ``fps`` as ``FrameDurationLimits`` (the frame duration in microseconds, both limits). picamera2
    rounds odd sizes down to even; libcamera may adjust a size: ``describe()`` tells the one in use.
    """

    DEFAULT_MAIN = (640, 480)
    DEFAULT_LORES = (320, 240)

    def __init__(self, camera_num: int = 0, main_size=None, lores_size=None, stream: str = "lores",
                 fps: float | None = None):
        if stream not in ("main", "lores"):
            raise ValueError(f"stream must be 'main' or 'lores', not {stream!r}")
        self.camera_num = camera_num
        self.lores_size = tuple(lores_size or self.DEFAULT_LORES)
        main = tuple(main_size or self.DEFAULT_MAIN)
        if stream == "lores":  # the lores stream may not be larger than main
            main = (max(main[0], self.lores_size[0]), max(main[1], self.lores_size[1]))
        self.main_size = main
        self.stream = stream
        self.fps = fps
        self.camera = None
        self.configured: dict | None = None  # the configuration picamera2 applied
        self.name = f"picamera2:{camera_num}"

    @classmethod
    def from_settings(cls, camera_num: int, settings: CameraSettings, default_stream: str = "lores") -> "PiCameraSource":
        stream = settings.stream or default_stream
        if stream == "main":
            return cls(camera_num, main_size=settings.size, stream="main", fps=settings.fps)
        return cls(camera_num, lores_size=settings.size, stream="lores", fps=settings.fps)

    def configuration(self, camera) -> dict:
        """The configuration asked of picamera2 (its own create_video_configuration)."""
        controls = {}
        if self.fps:
            duration = max(1, round(1_000_000 / self.fps))
            controls["FrameDurationLimits"] = (duration, duration)
        lores = {"size": self.lores_size, "format": "YUV420"} if self.stream == "lores" else None
        return camera.create_video_configuration(main={"size": self.main_size, "format": "RGB888"}, lores=lores,
                                                 controls=controls)

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError("picamera2 is not installed: on a Raspberry Pi, apt install python3-picamera2 "
                              "and create the venv with --system-site-packages") from None
        if self.camera_num >= len(Picamera2.global_camera_info()):
            raise SourceError(f"{self.name}: no camera found (check the ribbon cable and `rpicam-hello --list-cameras`)")
        camera = None
        try:
            camera = Picamera2(self.camera_num)
            camera.configure(self.configuration(camera))
            camera.start()
        except (RuntimeError, OSError, IndexError, ValueError) as error:
            if camera is not None:
                try:
                    camera.close()
                except (RuntimeError, OSError):
                    pass
            raise SourceError(f"{self.name}: cannot start the camera ({' '.join(str(error).split())[:160]})") from None
        self.camera = camera
        self.configured = getattr(camera, "camera_config", None)

    def _stream_size(self) -> tuple[int, int]:
        stream = (self.configured or {}).get(self.stream) or {}
        return tuple(stream.get("size") or (self.lores_size if self.stream == "lores" else self.main_size))

    def describe(self) -> str | None:
        if self.configured is None:
            return None
        width, height = self._stream_size()
        limits = (self.configured.get("controls") or {}).get("FrameDurationLimits")
        rate = f", {1_000_000 / limits[0]:.3g} fps" if limits and limits[0] == limits[1] else ""
        return f"{self.name}: {self.stream} stream {width}x{height}{rate}"

    def read(self) -> np.ndarray:
        if self.camera is None:
            raise SourceError(f"{self.name}: not open")
        try:
            array = self.camera.capture_array(self.stream)
        except (RuntimeError, OSError) as error:
            raise SourceError(f"{self.name}: capture failed ({error})") from None
        cv2 = _import_cv2()
        if self.stream == "main":  # "RGB888" is B, G, R in memory
            return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
        # libcamera YUV420 is planar I420 (Y, then U, then V); OpenCV's "YUV420p" names mean YV12
        rgb = cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420)  # rows may be padded to a stride
        width = self._stream_size()[0]
        return rgb if rgb.shape[1] == width else np.ascontiguousarray(rgb[:, :width])

    def close(self) -> None:
        if self.camera is not None:
            try:
                self.camera.stop()
            finally:
                self.camera.close()
                self.camera = None


def open_source(spec: str, fps: float | None = None, loop: bool = False, camera: CameraSettings | None = None,
                default_stream: str = "lores") -> FrameSource:
    """A source from a command-line string (not yet opened): picamera2[:N], a device index, a folder,
    or a video file / stream URL. ``camera`` sets up a camera (ignored by files and folders);
    ``default_stream``: the picamera2 stream read when camera.stream is None."""
    camera = camera or CameraSettings()
    if spec == "picamera2" or spec.startswith("picamera2:"):
        number = spec.partition(":")[2] or "0"
        if not number.isdigit():
            raise SourceError(f"{spec}: expected picamera2 or picamera2:N")
        return PiCameraSource.from_settings(int(number), camera, default_stream)
    if spec.isdigit():
        return OpenCVSource(int(spec), fps=fps, camera=camera)
    if os.path.isdir(spec):
        return FolderSource(spec, fps=10.0 if fps is None else fps, loop=loop)
    if "://" not in spec and not os.path.exists(spec):
        raise SourceError(f"{spec}: no such file, folder or camera")
    return OpenCVSource(spec, fps=fps, loop=loop)


def _picamera2_lines() -> list[str]:
    try:
        from picamera2 import Picamera2
    except ImportError:
        return ["picamera2: not installed (a Raspberry Pi camera needs apt install python3-picamera2)"]
    cameras = Picamera2.global_camera_info()
    if not cameras:
        return ["picamera2: no camera attached"]
    lines = []
    for index, info in enumerate(cameras):
        line = f"picamera2:{info.get('Num', index)}  {info.get('Model', '?')}  ({info.get('Id', '')})"
        try:
            camera = Picamera2(index)
            try:
                modes = [f"{mode['size'][0]}x{mode['size'][1]} up to {mode['fps']:.0f} fps" for mode in camera.sensor_modes]
            finally:
                camera.close()
            line += "; sensor modes: " + (", ".join(modes) or "none reported")
        except (RuntimeError, OSError, IndexError, KeyError, TypeError) as error:
            line += f"; sensor modes not read ({' '.join(str(error).split())[:80]})"
        lines.append(line)
    return lines


def _v4l2_lines(sysfs: str = "/sys/class/video4linux") -> list[str]:
    try:
        names = sorted(os.listdir(sysfs), key=lambda name: int(name[5:]) if name[5:].isdigit() else 1 << 30)
    except OSError:
        return ["V4L2: no /sys/class/video4linux (no USB or CSI camera driver)"]
    devices = [name for name in names if name.startswith("video") and name[5:].isdigit()]
    if not devices:
        return ["V4L2: no video device"]
    try:
        cv2 = _import_cv2()
    except SourceError:
        cv2 = None
    lines = []
    for name in devices:
        try:
            with open(os.path.join(sysfs, name, "name")) as handle:
                label = handle.read().strip()
        except OSError:
            label = "?"
        line = f"{name[5:]}  /dev/{name}  {label}"
        if cv2 is not None:
            with _opencv_quiet(cv2, stderr_too=True):
                capture = cv2.VideoCapture(int(name[5:]))
                opened = capture.isOpened()
                found = set_up_opencv_camera(cv2, capture, CameraSettings()) if opened else None
                capture.release()
            line += (f"; now {found['width']}x{found['height']}, {found['fps']:g} fps, {found['fourcc'] or '?'}"
                     if found else "; not a capture device (or busy)")
        lines.append(line)
    return lines


def list_cameras() -> list[str]:
    """One line per attached camera: Pi cameras (picamera2, with their sensor modes) and V4L2
    devices (the index --source takes, and what OpenCV reads from it now)."""
    return _picamera2_lines() + _v4l2_lines()


@dataclass
class Frame:
    rgb: np.ndarray
    number: int  # 1, 2, ... in capture order; gaps are frames replaced before anyone took them
    captured: float  # time.monotonic() when the read returned


class LatestFrame:
    """Reads a source in a background thread and keeps only the newest frame. A source that
    ``keeps_every_frame`` is read on demand instead: each frame when ``get()`` asks for it, none dropped.

    ``get()`` returns a frame newer than the last one it returned, or None when the source has
    ended or ``stop()`` was called. A SourceError closes the source and reopens it with
    exponential backoff; ``on_event(kind, message)`` hears of losses and reopenings. Pass
    ``opened=True`` for a source the caller has already opened (to fail fast at start-up).
    """

    def __init__(self, source: FrameSource, on_event=None, backoff=(0.5, 10.0), opened: bool = False):
        self.source = source
        self.on_event = on_event or (lambda kind, message: None)
        self.backoff_min, self.backoff_max = backoff
        self._opened = opened
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._last_taken = 0  # number of the last frame get() returned
        self._asking = 0  # get() calls waiting for a frame
        self._ended = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture {source}", daemon=True)
        self.captured = 0
        self.taken = 0
        self.reopened = 0

    def start(self) -> "LatestFrame":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def ended(self) -> bool:
        """The capture thread has finished (end of stream, or stopped)."""
        return self._ended

    @property
    def dropped(self) -> int:
        """Frames captured but replaced by a newer one before anyone took them."""
        waiting = 1 if self._frame is not None and self._frame.number > self._last_taken else 0
        return self.captured - self.taken - waiting

    def get(self, timeout: float | None = None) -> Frame | None:
        with self._condition:
            self._asking += 1
            self._condition.notify_all()  # a source read on demand reads now
            try:
                self._condition.wait_for(self._fresh_or_done, timeout)
            finally:
                self._asking -= 1
            frame = self._frame
            if frame is None or frame.number <= self._last_taken:
                return None
            self._last_taken = frame.number
            self.taken += 1
            return frame

    def _fresh_or_done(self) -> bool:
        fresh = self._frame is not None and self._frame.number > self._last_taken
        return fresh or self._ended or self._stopping.is_set()

    def _wait_until_asked(self) -> None:
        """Until the last frame was taken and get() asks for the next (or stop() is called)."""
        with self._condition:
            self._condition.wait_for(lambda: self._stopping.is_set() or (
                self._asking and (self._frame is None or self._frame.number <= self._last_taken)))

    def _publish(self, rgb: np.ndarray) -> None:
        with self._condition:
            self.captured += 1
            self._frame = Frame(rgb, self.captured, time.monotonic())
            self._condition.notify_all()

    def _run(self) -> None:
        delay = self.backoff_min
        is_open, lost = self._opened, False
        try:
            while not self._stopping.is_set():
                try:
                    if not is_open:
                        self.source.open()
                        is_open = True
                        if lost:
                            lost = False
                            self.reopened += 1
                            self.on_event("source_reopened", str(self.source))
                    if self.source.keeps_every_frame:
                        self._wait_until_asked()
                        if self._stopping.is_set():
                            break
                    self._publish(self.source.read())
                    delay = self.backoff_min
                except EndOfStream:
                    break
                except SourceError as error:
                    lost = True
                    self.on_event("source_lost", f"{error}; retrying in {delay:g} s")
                    self.source.close()
                    is_open = False
                    if self._stopping.wait(delay):
                        break
                    delay = min(delay * 2, self.backoff_max)
        finally:
            self.source.close()
            with self._condition:
                self._ended = True
                self._condition.notify_all()
