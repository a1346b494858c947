"""Build the offline bundle for a device: one .tar.gz with the project's wheel (which carries the
shipped int8 models and their metadata, once: there is no separate copy), the wheels of every
dependency for the device's platform, install.sh, the systemd unit and a SHA-256 manifest that
install.sh verifies before it installs anything.

    python deploy/build_bundle.py                                  # Raspberry Pi OS Bookworm 64-bit
    python deploy/build_bundle.py --runtime tflite-runtime --extras camera
    python deploy/build_bundle.py --platform host --out /tmp/b     # this machine (tests, a desktop)
    python deploy/build_bundle.py --platform host --no-index --find-links WHEELS --no-build-isolation

Needs the internet (PyPI) unless --no-index with --find-links. numpy is held below 2 unless
--allow-numpy2: picamera2 comes from the OS, and the OS's simplejpeg (imported by picamera2) is built
against numpy 1.x, so a venv that sees it must not carry numpy 2. Writes OUT/<bundle>.tar.gz and
OUT/<bundle>.tar.gz.sha256 and prints both.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_EXTRAS = ("edge", "camera", "dicom")  # never train/dev on a device
TFLITE_RUNTIME = "tflite-runtime==2.14.0"  # built against numpy 1.x, Python <= 3.11
GLIBC_MAX = {"aarch64": 36}  # Raspberry Pi OS / Debian Bookworm: glibc 2.36
# bundle path -> source path (relative to the repository)
FILES = {"install.sh": "deploy/install.sh", "systemd/edge-live.service": "deploy/edge-live.service",
         "etc/edge-live.env": "deploy/edge-live.env", "etc/config.json": "deploy/config.json",
         "systemd/edge-dicom.service": "deploy/edge-dicom.service", "etc/edge-dicom.env": "deploy/edge-dicom.env"}


class BuildError(Exception):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_bundle.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", default="aarch64", choices=("aarch64", "host"),
                        help="aarch64: Raspberry Pi OS Bookworm 64-bit; host: this machine's platform and Python")
    parser.add_argument("--python-version", default="3.11", help="the device's Python (aarch64 only; default 3.11)")
    parser.add_argument("--extras", default="edge,camera",
                        help="comma-separated extras from: edge, camera, dicom (default edge,camera; '' for none)")
    parser.add_argument("--runtime", default="ai-edge-litert", choices=("ai-edge-litert", "tflite-runtime"),
                        help="the TFLite interpreter: ai-edge-litert (the edge extra) or tflite-runtime 2.14")
    parser.add_argument("--allow-numpy2", action="store_true",
                        help="do not hold numpy below 2 (breaks the OS's picamera2 in the venv)")
    parser.add_argument("--out", default=str(ROOT / "build" / "bundles"), help="output folder (default build/bundles)")
    parser.add_argument("--find-links", action="append", default=[], metavar="DIR", help="extra wheel folder for pip")
    parser.add_argument("--no-index", action="store_true", help="use only --find-links folders, no package index")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="build the project wheel with the setuptools installed here (offline builds)")
    args = parser.parse_args(argv)
    args.extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    unknown = [e for e in args.extras if e not in DEVICE_EXTRAS]
    if unknown:
        parser.error(f"unknown or non-device extra {', '.join(unknown)}; choose from {', '.join(DEVICE_EXTRAS)}")
    if args.runtime == "tflite-runtime" and "edge" in args.extras:
        args.extras.remove("edge")  # the edge extra is ai-edge-litert
    if args.platform == "host":
        args.python_version = "%d.%d" % sys.version_info[:2]
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version {args.python_version!r}: expected 3.N")
    if args.runtime == "tflite-runtime" and int(args.python_version.split(".")[1]) > 11:
        parser.error(f"tflite-runtime 2.14 has no wheels for Python {args.python_version} (<= 3.11)")
    if args.no_index and not args.find_links:
        parser.error("--no-index needs --find-links")
    return args


def run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{tail}")


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def source_tree(work: Path) -> Path:
    """A copy of the checkout's files that git does not ignore (so stale build/ output and local
    runs never reach the wheel); the checkout itself when it is not a git repository."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if not listed:
        return ROOT
    tree = work / "src"
    for name in sorted(set(listed.split("\0")) - {""}):
        source = ROOT / name
        if source.is_file():  # deleted-but-tracked files are skipped
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def pip_index_options(args) -> list[str]:
    options = ["--no-index"] if args.no_index else []
    for folder in args.find_links:
        options += ["--find-links", str(Path(folder).resolve())]
    return options


def build_project_wheel(args, work: Path) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
               *pip_index_options(args), str(source_tree(work))]
    if args.no_build_isolation:
        command.insert(4, "--no-build-isolation")
    run(command, "building the project wheel")
    wheels = list((work / "dist").glob("edge_medical-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one edge_medical wheel, found {[w.name for w in wheels]}")
    return wheels[0]


def platform_options(args) -> list[str]:
    if args.platform == "host":
        return []
    machine = args.platform
    tags = ["manylinux2014_" + machine] + [f"manylinux_2_{v}_{machine}" for v in range(17, GLIBC_MAX[machine] + 1)]
    options = ["--implementation", "cp", "--python-version", args.python_version]
    for tag in tags:
        options += ["--platform", tag]
    return options


def requirements(args, version: str) -> list[str]:
    extras = f"[{','.join(args.extras)}]" if args.extras else ""
    lines = [f"edge-medical{extras}=={version}"]
    if args.runtime == "tflite-runtime":
        lines.append(TFLITE_RUNTIME)
    if not args.allow_numpy2 or args.runtime == "tflite-runtime":
        lines.append("numpy<2")
    return lines


def download_wheels(args, project_wheel: Path, lines: list[str], wheels: Path) -> None:
    """pip resolves the project wheel with its extras and the pins for the target platform."""
    extras = f"[{','.join(args.extras)}]" if args.extras else ""
    wanted = [f"{project_wheel}{extras}", *lines[1:]]
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(wheels),
         *platform_options(args), *pip_index_options(args), *wanted], "downloading the wheels")
    names = sorted(p.name for p in wheels.iterdir())
    if not any(n.startswith("edge_medical-") for n in names) or not all(n.endswith(".whl") for n in names):
        raise BuildError(f"unexpected download result: {names}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle: Path) -> None:
    """SHA256SUMS in sha256sum's format, every file but itself, sorted."""
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    lines = [f"{sha256(bundle / name)}  {name}\n" for name in files if name != "SHA256SUMS"]
    (bundle / "SHA256SUMS").write_text("".join(lines))


def build(args) -> Path:
    out = Path(args.out).resolve()
    machine = platform.machine() if args.platform == "host" else args.platform
    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        work = Path(tmp)
        project_wheel = build_project_wheel(args, work)
        version = project_wheel.name.split("-")[1]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
        bundle_id = f"{version}-{stamp}-{commit}"
        name = f"edge-medical-{bundle_id}-{machine}"
        bundle = work / name
        (bundle / "wheels").mkdir(parents=True)
        lines = requirements(args, version)
        download_wheels(args, project_wheel, lines, bundle / "wheels")

        with zipfile.ZipFile(project_wheel) as wheel:
            if not any(n.startswith("edge/models/") and n.endswith(".tflite") for n in wheel.namelist()):
                raise BuildError(f"{project_wheel.name} carries no edge/models/*.tflite")
        for target, source in FILES.items():
            (bundle / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, bundle / target)
        os.chmod(bundle / "install.sh", 0o755)
        (bundle / "requirements.txt").write_text("\n".join(lines) + "\n")
        dirty = "yes" if git("status", "--porcelain") else "no"
        info = {"name": "edge-medical", "version": version, "id": bundle_id, "machine": machine,
                "python": args.python_version, "extras": ",".join(args.extras), "runtime": args.runtime,
                "commit": commit, "dirty": dirty, "built": stamp,
                "built_with": f"Python {platform.python_version()} on {platform.machine()}"}
        (bundle / "BUNDLE.txt").write_text("".join(f"{k}={v}\n" for k, v in info.items()))
        write_manifest(bundle)

        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            tar.add(bundle, arcname=name)
    digest = sha256(archive)
    Path(f"{archive}.sha256").write_text(f"{digest}  {archive.name}\n")
    with tarfile.open(archive) as tar:
        wheels = sorted(n for n in tar.getnames() if n.endswith(".whl"))
    print(f"bundle   {archive} ({archive.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels)")
    for wheel in wheels:
        print(f"  {Path(wheel).name}")
    print(f"sha256   {digest}  (also in {archive.name}.sha256: compare it on the device)")
    print(f"install  tar xzf {archive.name} && sudo ./{name}/install.sh --service")
    return archive


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        build(args)
    except BuildError as error:
        print(f"build_bundle.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
