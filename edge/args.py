"""Command-line argument types and output checks shared by edge-classify, edge-live and benchmark:
a bad value is refused by argparse in one line (exit 2), before any work."""
from __future__ import annotations

import argparse
import math
import os

MAX_THREADS = 64


def _checked(convert, accept, requirement: str):
    """An argparse type: convert the text, then accept(value) or refuse it with the requirement."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if convert is int else 'number'}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} {requirement}")
        return value
    return parse


thread_count = _checked(int, lambda v: 1 <= v <= MAX_THREADS, f"is not between 1 and {MAX_THREADS}")
positive_int = _checked(int, lambda v: v >= 1, "must be at least 1")
positive_number = _checked(float, lambda v: math.isfinite(v) and v > 0, "must be a finite number above 0")
frame_rate = _checked(float, lambda v: math.isfinite(v) and v >= 0, "must be a finite number, 0 or more (0: unpaced)")


def _cannot_create_in(folder: str) -> str | None:
    """Why new files cannot be created in an existing folder (os.access ignores read-only mounts)."""
    if not os.path.isdir(folder):
        return f"{folder} is not a directory"
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return f"{folder} is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create files in {folder}"
    return None


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def unwritable_file(path: str) -> str | None:
    """Why a file cannot be written at path (None when it can), checked without writing it."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
        return None if os.access(path, os.W_OK) else "permission denied"
    return _cannot_create_in(_nearest_existing(os.path.dirname(path)))


def unwritable_folder(path: str) -> str | None:
    """Why files cannot be created in the folder path, made if needed (None when they can)."""
    return _cannot_create_in(_nearest_existing(os.path.abspath(path)))


def host_port(text: str) -> tuple[str, int] | None:
    """HOST:PORT for edge-live --serve (an IPv6 host in brackets: [::1]:8080; port 0: any free port).
    An empty value is None, off: the service passes --serve "$EDGE_LIVE_SERVE" even when unset."""
    if not text.strip():
        return None
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port 0-65535 "
                                         "(e.g. 127.0.0.1:8080, or 0.0.0.0:8080 for other machines)")
    return host, int(port)
