"""Frame sources: a real OpenCV-written video, folder replay, the picamera2 API (faked: only a Pi has
it), reopening a lost camera, and keeping only the newest frame."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.sources import (CameraSettings, EndOfStream, FolderSource, FrameSource, LatestFrame, OpenCVSource,
                          PiCameraSource, SourceError, list_cameras, open_source, parse_fourcc, parse_size)

FAKES = Path(__file__).parent / "fakes"


def colour_frame(index: int, size=(640, 480)) -> np.ndarray:
    """An RGB frame whose colour encodes its index: red = 20 * index, green 200, blue 30."""
    frame = np.empty((size[1], size[0], 3), dtype=np.uint8)
    frame[:] = (min(20 * index, 255), 200, 30)
    return frame


def write_video(path: Path, count: int, fps: float = 30.0, size=(640, 480)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(count):
        writer.write(colour_frame(i, size)[:, :, ::-1].copy())  # VideoWriter takes BGR
    writer.release()
    return path


def test_opencv_source_reads_every_frame_of_a_video_in_rgb_order(tmp_path):
    video = write_video(tmp_path / "clip.avi", 8)
    frames = []
    with OpenCVSource(str(video), fps=0) as source:
        with pytest.raises(EndOfStream):
            while True:
                frames.append(source.read())
    assert len(frames) == 8
    assert frames[0].shape == (480, 640, 3) and frames[0].dtype == np.uint8
    for i, frame in enumerate(frames):  # MJPEG is lossy: compare the mean colour
        np.testing.assert_allclose(frame.reshape(-1, 3).mean(axis=0), (20 * i, 200, 30), atol=4)


def test_open_source_picks_the_source_from_its_string(tmp_path):
    video = write_video(tmp_path / "clip.avi", 2)
    assert isinstance(open_source(str(video)), OpenCVSource)
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source("0"), OpenCVSource) and open_source("0").target == 0
    assert isinstance(open_source("picamera2:1"), PiCameraSource)
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))


def test_unopenable_camera_and_non_video_file_are_source_errors(tmp_path, capfd):
    for name in ("notes.mp4", "fake.png"):  # FFmpeg opens the fake PNG as an image sequence, then fails to read it
        text = tmp_path / name
        text.write_text("not a video")
        with pytest.raises(SourceError, match="cannot open"):
            OpenCVSource(str(text)).open()
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource(63).open()  # /dev/video63 does not exist here
    assert capfd.readouterr().err == ""  # neither OpenCV's nor FFmpeg's own lines


def test_video_file_loop_starts_again(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3)
    with OpenCVSource(str(video), fps=0, loop=True) as source:
        reds = [round(source.read()[..., 0].mean() / 20) for _ in range(7)]
    assert reds == [0, 1, 2, 0, 1, 2, 0]


def test_folder_replay_in_name_order_at_the_chosen_rate_skipping_bad_files(tmp_path):
    for i in (2, 0, 1):
        Image.fromarray(colour_frame(i, (64, 48))).save(tmp_path / f"frame{i}.png")
    (tmp_path / "frame1b.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "readme.txt").write_text("not an image")
    fps = 20.0
    source = FolderSource(str(tmp_path), fps=fps)
    started = time.monotonic()
    with source:
        reds = []
        with pytest.raises(EndOfStream):
            while True:
                reds.append(int(source.read()[0, 0, 0]))
    elapsed = time.monotonic() - started
    assert reds == [0, 20, 40]
    assert len(source.skipped) == 1 and "frame1b.png" in source.skipped[0]
    assert elapsed >= (len(reds) - 1) / fps * 0.9  # paced, not as fast as possible (a lower bound only)


def test_folder_loop_replays_and_empty_folder_is_an_error(tmp_path):
    Image.fromarray(colour_frame(1, (32, 32))).save(tmp_path / "a.png")
    with FolderSource(str(tmp_path), fps=0, loop=True) as source:
        assert [int(source.read()[0, 0, 0]) for _ in range(3)] == [20, 20, 20]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        FolderSource(str(empty)).open()


@pytest.fixture
def fake_picamera2(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("picamera2", None)
    import picamera2
    scene = np.zeros((480, 640, 3), dtype=np.uint8)
    scene[:, :320] = (200, 40, 40)   # left half red
    scene[:, 320:] = (40, 40, 200)   # right half blue
    monkeypatch.setattr(picamera2.Picamera2, "scene", scene)
    monkeypatch.setattr(picamera2.Picamera2, "fail_after", None)
    monkeypatch.setattr(picamera2.Picamera2, "opened", [])
    yield picamera2
    sys.modules.pop("picamera2", None)


@pytest.mark.parametrize("stream, size", [("lores", (240, 320)), ("main", (480, 640))])
def test_picamera_source_follows_the_real_api_and_returns_rgb(fake_picamera2, stream, size):
    with PiCameraSource(stream=stream) as source:
        rgb = source.read()
        camera = fake_picamera2.Picamera2.opened[-1]
        assert camera.started
        config = camera.camera_config
        assert config["use_case"] == "video" and config["main"]["format"] == "RGB888"
        # only the stream read besides main: lores (YUV420, rows padded to 64 bytes) for a single cell
        assert (config["lores"] or {}).get("format") == ("YUV420" if stream == "lores" else None)
    assert camera.closed and not camera.started
    assert rgb.shape == (*size, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, : size[1] // 4].reshape(-1, 3).mean(0), rgb[:, -size[1] // 4:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(left, (200, 40, 40), atol=6)  # red stays red: BGR and YUV handled
    np.testing.assert_allclose(right, (40, 40, 200), atol=6)


@pytest.mark.parametrize("stream, size, fps", [("main", (1280, 960), 10.0), ("lores", (336, 252), 30.0),
                                               ("main", (1023, 767), None)])
def test_camera_options_reach_the_picamera2_configuration(fake_picamera2, stream, size, fps):
    """--camera-size/--camera-fps/--camera-stream become picamera2's own create_video_configuration
    arguments and FrameDurationLimits; the frames read have the configured stream's size."""
    source = open_source("picamera2", camera=CameraSettings(size=size, fps=fps, stream=stream))
    with source:
        rgb = source.read()
        config = fake_picamera2.Picamera2.opened[-1].camera_config
        described = source.describe()
    even = (size[0] - size[0] % 2, size[1] - size[1] % 2)  # picamera2 rounds a size down to even
    assert config["use_case"] == "video" and config["buffer_count"] == 6
    assert config[stream]["size"] == even and rgb.shape == (even[1], even[0], 3)
    if stream == "lores":
        assert config["lores"]["format"] == "YUV420" and config["main"]["size"] == (640, 480)
        assert config["lores"]["stride"] > even[0]  # a padded row: the picture's columns are kept, not the padding
    else:
        assert config["main"]["format"] == "RGB888" and config["lores"] is None
    duration = config["controls"]["FrameDurationLimits"]
    assert duration == ((round(1e6 / fps),) * 2 if fps else (33333, 33333))  # without --camera-fps: video's default
    assert described.startswith(f"picamera2:0: {stream} stream {even[0]}x{even[1]}")
    np.testing.assert_allclose(rgb[:, : even[0] // 4].reshape(-1, 3).mean(0), (200, 40, 40), atol=6)


def test_the_picamera2_stream_follows_the_mode_unless_chosen(fake_picamera2):
    assert open_source("picamera2", default_stream="main").stream == "main"  # field mode: the full field of view
    assert open_source("picamera2").stream == "lores"  # cell mode
    assert open_source("picamera2", camera=CameraSettings(stream="lores"), default_stream="main").stream == "lores"


def test_camera_options_are_opencv_properties(monkeypatch):
    """An OpenCV camera is asked for the fourcc first, then the size, then the rate, with a one-frame
    buffer; describe() reports what the driver says it delivers."""
    calls = []

    class FakeCapture:
        def __init__(self, target, *args):
            self.target, self.values = target, {}

        def isOpened(self):
            return True

        def set(self, prop, value):
            calls.append((prop, value))
            self.values[prop] = value
            return True

        def get(self, prop):
            return self.values.get(prop, 0.0)

        def read(self):
            return True, np.zeros((960, 1280, 3), np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    source = open_source("0", camera=CameraSettings(size=(1280, 960), fps=15.0, fourcc="MJPG"))
    source.open()
    try:
        assert source.read().shape == (960, 1280, 3)
    finally:
        source.close()
    assert calls == [(cv2.CAP_PROP_BUFFERSIZE, 1), (cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")),
                     (cv2.CAP_PROP_FRAME_WIDTH, 1280), (cv2.CAP_PROP_FRAME_HEIGHT, 960), (cv2.CAP_PROP_FPS, 15.0)]
    assert source.describe() == "camera 0: 1280x960, 15 fps, MJPG"


def test_camera_option_values_are_checked():
    assert parse_size("1280x960") == (1280, 960) and parse_size("320X240") == (320, 240)
    for bad in ("1280", "1280x", "x960", "0x0", "1280x960x3", "-1x5", "99999x10"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)
    assert parse_fourcc("MJPG") == "MJPG"
    with pytest.raises(ValueError, match="four-character"):
        parse_fourcc("MJPEG")


def test_list_cameras_names_the_pi_camera_and_its_sensor_modes(fake_picamera2):
    lines = list_cameras()
    assert lines[0].startswith("picamera2:0  imx708") and "1536x864 up to 120 fps" in lines[0]
    assert len(lines) >= 2  # then the V4L2 devices, or a line saying there are none


def test_picamera_source_reports_a_missing_camera(fake_picamera2, monkeypatch):
    monkeypatch.setattr(fake_picamera2.Picamera2, "cameras", [])
    with pytest.raises(SourceError, match="no camera found"):
        PiCameraSource().open()


def test_picamera_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 raises ImportError
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        PiCameraSource().open()


class CountingSource(FrameSource):
    """Frames numbered 1, 2, ... as fast as asked; fails after `fail_after` reads of each opening
    (a camera that drops out), and can refuse to reopen a number of times."""

    def __init__(self, fail_after=None, refuse_reopen=0, delay=0.0):
        self.fail_after, self.refuse_reopen, self.delay = fail_after, refuse_reopen, delay
        self.count = 0
        self.opens = 0
        self.reads_since_open = 0
        self.is_open = False

    def open(self):
        self.opens += 1
        if self.opens > 1 and self.refuse_reopen:
            self.refuse_reopen -= 1
            raise SourceError("camera 9: cannot open")
        self.is_open = True
        self.reads_since_open = 0

    def read(self):
        if self.fail_after is not None and self.reads_since_open >= self.fail_after:
            raise SourceError("camera 9: read failed")
        time.sleep(self.delay)
        self.count += 1
        self.reads_since_open += 1
        return np.full((4, 4, 3), self.count % 256, dtype=np.uint8)

    def close(self):
        self.is_open = False


def test_a_lost_camera_is_reported_and_reopened_with_backoff():
    source = CountingSource(fail_after=3, refuse_reopen=1, delay=0.001)
    events = []
    with LatestFrame(source, on_event=lambda kind, message: events.append(kind), backoff=(0.01, 0.05)) as frames:
        deadline = time.monotonic() + 10
        while frames.reopened < 2 and time.monotonic() < deadline:
            frames.get(timeout=0.1)
    assert frames.reopened >= 2
    assert events.count("source_lost") >= 3  # the failed reopen is a loss too
    assert "source_reopened" in events
    assert not source.is_open  # closed when stopped


def test_only_the_newest_frame_is_handed_out():
    source = CountingSource(delay=0.001)
    with LatestFrame(source) as frames:
        numbers = []
        for _ in range(5):
            frame = frames.get(timeout=2)
            numbers.append(frame.number)
            time.sleep(0.03)  # a slow model: the camera keeps capturing meanwhile
            newest = frames._frame.number
            assert newest > frame.number  # frames kept coming...
        captured = frames.captured
    assert numbers == sorted(set(numbers))  # never the same frame twice, never an older one
    assert numbers[-1] - numbers[0] > 5  # ...and the stale ones in between were skipped
    assert frames.dropped > 0 and frames.taken == 5 and captured >= numbers[-1]


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_unpaced_file_sources_hand_on_every_frame_to_a_slow_reader(kind, tmp_path):
    if kind == "folder":
        for i in range(8):
            Image.fromarray(colour_frame(i, (32, 32))).save(tmp_path / f"frame{i}.png")
        source = FolderSource(str(tmp_path), fps=0)
    else:
        source = OpenCVSource(str(write_video(tmp_path / "clip.avi", 8)), fps=0)
    source.open()
    with LatestFrame(source, opened=True) as frames:
        reds = []
        while (frame := frames.get(timeout=10)) is not None:
            reds.append(round(frame.rgb[..., 0].mean() / 20))
            time.sleep(0.02)  # a slow model: an unpaced reader would have replaced this frame meanwhile
    assert reds == list(range(8))
    assert frames.captured == frames.taken == 8 and frames.dropped == 0


def test_get_returns_none_when_a_finite_source_ends(tmp_path):
    Image.fromarray(colour_frame(0, (16, 16))).save(tmp_path / "only.png")
    source = FolderSource(str(tmp_path), fps=0)
    source.open()
    with LatestFrame(source, opened=True) as frames:
        first = frames.get(timeout=2)
        assert first is not None and first.number == 1
        assert frames.get(timeout=2) is None
        assert frames.ended


def test_stop_interrupts_a_waiting_reader_promptly():
    source = CountingSource(fail_after=0)  # every read fails: the thread sits in its backoff
    frames = LatestFrame(source, backoff=(30, 30)).start()
    time.sleep(0.05)
    stopped = threading.Event()
    started = time.monotonic()
    frames.stop()
    stopped.set()
    assert time.monotonic() - started < 5
    assert frames.ended
