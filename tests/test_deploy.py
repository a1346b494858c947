"""The offline bundle (deploy/build_bundle.py), its installer (deploy/install.sh) and the systemd unit.

No network: the host-platform bundle is built with --no-index from wheels re-packed from the
distributions installed in this environment (numpy, Pillow, ai-edge-litert and its dependencies),
and the project wheel is built with --no-build-isolation. The aarch64 bundle needs PyPI and is
checked by deploy/verify_arm64.sh instead.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import synthetic_cell

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
SKIP_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def requirement_names(dist: str, extras: set[str]) -> set[str]:
    """Names required by an installed distribution with the given extras (other markers ignored:
    a superset is harmless here)."""
    names = set()
    for line in metadata.requires(dist) or []:
        marker = line.split(";", 1)[1] if ";" in line else ""
        wanted = re.findall(r'extra\s*==\s*"([^"]+)"', marker)
        if wanted and not set(wanted) & extras:
            continue
        names.add(re.match(r"[A-Za-z0-9._-]+", line).group(0))
    return names


def closure(dist: str, extras: set[str]) -> list[metadata.Distribution]:
    found, todo, seen = [], [(dist, extras)], set()
    while todo:
        name, wanted = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            found.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            continue
        todo += [(n, set()) for n in requirement_names(name, wanted)]
    return found


def repack(dist: metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed distribution: its files under site-packages plus a fresh RECORD.
    Scripts outside site-packages are left out (pip regenerates console scripts)."""
    info = next(f for f in dist.files if f.parts[0].endswith(".dist-info") and f.name == "WHEEL")
    tags = [t.split("-") for t in re.findall(r"^Tag: (\S+)$", info.read_text(), re.M)]
    tag = "-".join(".".join(dict.fromkeys(part)) for part in zip(*tags))  # py2-none-any + py3-none-any: py2.py3-none-any
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel = out / f"{name}-{dist.version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for file in dist.files:
            path = Path(dist.locate_file(file))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not path.is_file():
                continue
            if file.parts[0].endswith(".dist-info") and file.name in SKIP_FILES:
                continue
            data = path.read_bytes()
            archive.writestr(file.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{file.as_posix()},sha256={digest},{len(data)}")
        record = f"{info.parts[0]}/RECORD"
        archive.writestr(record, "\n".join(records + [f"{record},,"]) + "\n")
    return wheel


def build_tools_missing() -> str | None:
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed here (the project wheel is built with --no-build-isolation)"
    setuptools_version = tuple(int(p) for p in metadata.version("setuptools").split(".")[:2])
    if setuptools_version < (70, 1) and importlib.util.find_spec("wheel") is None:
        return "setuptools < 70.1 needs the wheel package to build wheels"
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "ai-edge-litert is not installed here (pip install -e '.[edge]')"
    return None


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    reason = build_tools_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("bundle")
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for dist in closure("edge-medical", {"edge"}):
        if dist.metadata["Name"] != "edge-medical":
            repack(dist, wheelhouse)
    done = subprocess.run([sys.executable, str(DEPLOY / "build_bundle.py"), "--platform", "host", "--extras", "edge",
                           "--allow-numpy2", "--no-index", "--find-links", str(wheelhouse), "--no-build-isolation",
                           "--out", str(work / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return next((work / "out").glob("edge-medical-*.tar.gz"))


@pytest.fixture(scope="module")
def bundle(archive, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("extracted")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (top,) = folder.iterdir()
    return top


@pytest.fixture(scope="module")
def installed(bundle, tmp_path_factory) -> Path:
    """The bundle installed by install.sh into a fresh prefix (a fresh virtual environment)."""
    prefix = tmp_path_factory.mktemp("opt") / "edge-medical"
    done = run_install(bundle, "--prefix", str(prefix), "--python", BASE_PYTHON)
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


def run_install(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, timeout=300)


def bundle_info(bundle: Path) -> dict:
    return dict(line.split("=", 1) for line in (bundle / "BUNDLE.txt").read_text().splitlines())


def tampered_copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy made of hard links: files must be replaced (unlink, write), never edited in place."""
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy, copy_function=os.link)
    return copy


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def test_bundle_contents(archive, bundle):
    assert Path(f"{archive}.sha256").read_text().split()[0] == hashlib.sha256(archive.read_bytes()).hexdigest()
    info = bundle_info(bundle)
    assert info["machine"] == os.uname().machine and info["python"] == "%d.%d" % sys.version_info[:2]
    assert info["extras"] == "edge" and info["runtime"] == "ai-edge-litert"
    assert bundle.name == f"edge-medical-{info['id']}-{info['machine']}"
    assert os.access(bundle / "install.sh", os.X_OK)
    for name in ("systemd/edge-live.service", "etc/edge-live.env", "etc/config.json", "requirements.txt"):
        assert (bundle / name).is_file(), name
    assert (bundle / "requirements.txt").read_text().splitlines()[0] == f"edge-medical[edge]=={info['version']}"
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {"edge_medical", "numpy", "pillow", "ai_edge_litert"} <= wheels
    # the models travel once, inside the project wheel: int8 and metadata, no float32
    assert not (bundle / "models").exists()
    project_wheel = next((bundle / "wheels").glob("edge_medical-*.whl"))
    with zipfile.ZipFile(project_wheel) as wheel:
        names = set(wheel.namelist())
        for model in ("leukemia_int8", "brain_int8"):
            for suffix in (".tflite", ".json"):
                assert wheel.read(f"edge/models/{model}{suffix}") == (ROOT / "models" / f"{model}{suffix}").read_bytes()
    assert not [name for name in names if "float32" in name]
    # the manifest lists every other file with its SHA-256, in sha256sum's format
    listed = {}
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == files
    for name, digest in listed.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name


def test_verify_only_accepts_the_intact_bundle(bundle):
    done = run_install(bundle, "--verify-only")
    assert done.returncode == 0, done.stderr
    assert "files match SHA256SUMS" in done.stdout


@pytest.mark.parametrize("victim", ["wheels/numpy", "wheels/edge_medical", "requirements.txt"])
def test_tampered_file_is_refused(bundle, tmp_path, victim):
    copy = tampered_copy(bundle, tmp_path)
    path = next(copy.glob(victim + "*"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    replace(path, bytes(data))
    prefix = tmp_path / "opt"
    done = run_install(copy, "--prefix", str(prefix), "--python", BASE_PYTHON)
    assert done.returncode == 1
    message = done.stderr.strip()
    assert message.startswith("install.sh: refusing to install: SHA-256 mismatch in")
    assert path.relative_to(copy).as_posix() in message and "nothing installed" in message
    assert len(message.splitlines()) == 1 and not prefix.exists()


def test_unlisted_and_missing_files_are_refused(bundle, tmp_path):
    copy = tampered_copy(bundle, tmp_path)
    (copy / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"not listed")
    done = run_install(copy, "--prefix", str(tmp_path / "opt"))
    assert done.returncode == 1
    assert "files not in SHA256SUMS: wheels/evil-1.0-py3-none-any.whl" in done.stderr
    (copy / "wheels" / "evil-1.0-py3-none-any.whl").unlink()
    next(copy.glob("wheels/pillow-*.whl")).unlink()
    done = run_install(copy, "--prefix", str(tmp_path / "opt"))
    assert done.returncode == 1 and "SHA-256 mismatch in wheels/pillow-" in done.stderr
    (copy / "SHA256SUMS").unlink()
    done = run_install(copy, "--prefix", str(tmp_path / "opt"))
    assert done.returncode == 1 and "not a complete bundle" in done.stderr
    assert not (tmp_path / "opt").exists()


def test_wrong_python_or_machine_is_refused(bundle, tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 3.9 armv7l\n")
    fake.chmod(0o755)
    done = run_install(bundle, "--prefix", str(tmp_path / "opt"), "--python", str(fake))
    info = bundle_info(bundle)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"install.sh: this bundle is for Python {info['python']} on {info['machine']}; {fake} is Python 3.9 on armv7l")
    done = run_install(bundle, "--prefix", str(tmp_path / "opt"), "--extras", "camera")
    assert done.returncode == 1 and "extra 'camera' is not in this bundle (it has: edge)" in done.stderr
    done = run_install(bundle, "--bogus")
    assert done.returncode == 1 and "unknown option --bogus" in done.stderr
    assert not (tmp_path / "opt").exists()


def test_installer_builds_a_working_environment(bundle, installed, tmp_path):
    info = bundle_info(bundle)
    assert os.readlink(installed / "current") == info["id"]
    venv = installed / "current" / "venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    site = next(venv.glob("lib/python3*/site-packages"))  # pip and setuptools removed after installing
    installers = re.compile(r"(pip|setuptools|_distutils_hack|distutils-precedence)\b")
    assert not [path.name for path in site.iterdir() if installers.match(path.name)]
    assert not list((venv / "bin").glob("pip*"))
    assert (installed / "current" / "SHA256SUMS").read_bytes() == (bundle / "SHA256SUMS").read_bytes()
    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(3, blast=True)).save(image)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no EDGE_* settings, no repo on the path
    done = subprocess.run([str(venv / "bin" / "edge-classify"), "--model", "leukemia_int8", "--json", "--label-all", str(image)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the same model and interpreter as this environment give the same answer
    from edge.classifier import Classifier
    with Classifier("leukemia_int8") as classifier:
        expected = classifier.classify(str(image))
    assert result["label"] == expected.model_label and result["probability"] == expected.probability
    located = subprocess.run([str(venv / "bin" / "python"), "-c", "import edge, edge.models; print(edge.__file__, edge.models.__file__)"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    paths = [Path(path).resolve() for path in located.stdout.split()]
    assert len(paths) == 2 and all(path.is_relative_to((installed / info["id"] / "venv").resolve()) for path in paths)


def test_reinstall_needs_force(bundle, installed):
    done = run_install(bundle, "--prefix", str(installed), "--python", BASE_PYTHON)
    assert done.returncode == 1 and "exists (this bundle is installed); --force reinstalls it" in done.stderr
    assert (installed / bundle_info(bundle)["id"] / "venv" / "bin" / "python").exists()


def unit_exec_start(prefix: Path, state: Path) -> str:
    """The unit as install.sh --service writes it for this prefix, with the state folder moved."""
    text = (DEPLOY / "edge-live.service").read_text()
    return text.replace("/opt/edge-medical/", f"{prefix}/").replace("/var/lib/edge-medical", str(state))


def test_unit_file_is_valid(installed, tmp_path):
    unit = tmp_path / "edge-live.service"
    unit.write_text(unit_exec_start(installed, tmp_path / "state"))
    settings = dict(line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Restart"] == "always" and int(settings["RestartSec"]) > 0  # a clean stop too
    assert settings["RestartPreventExitStatus"] == "2"  # a usage or model error is not retried
    assert settings["User"] == "edge-medical" and settings["SupplementaryGroups"] == "video"
    assert settings["EnvironmentFile"] == "/etc/edge-medical/edge-live.env"
    assert settings["StateDirectory"] == "edge-medical" and settings["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not available here (the unit's keys were checked above)")
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_unit_command_line_runs_edge_live(installed, tmp_path):
    """ExecStart with the shipped edge-live.env, as systemd expands it, on a folder of images."""
    if not (installed / "current" / "venv" / "bin" / "edge-live").exists():
        pytest.skip("this checkout has no edge-live command")
    state = tmp_path / "state"
    state.mkdir()
    frames = tmp_path / "frames"
    frames.mkdir()
    for seed in range(3):
        Image.fromarray(synthetic_cell(seed, blast=seed % 2 == 0)).save(frames / f"{seed}.png")
    env = dict(line.split("=", 1) for line in (DEPLOY / "edge-live.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert {"EDGE_SOURCE", "EDGE_MODE", "EDGE_MODEL", "EDGE_LIVE_ARGS"} <= set(env)
    env.update(EDGE_SOURCE=str(frames), EDGE_MODEL="brain_int8",  # the model comes from the environment file
               EDGE_LIVE_ARGS=env["EDGE_LIVE_ARGS"] + " --max-frames 3 --fps 0")
    exec_start = next(line for line in unit_exec_start(installed, state).splitlines() if line.startswith("ExecStart="))
    # systemd: ${VAR} is one argument, $VAR is split at whitespace
    words = []
    for word in shlex.split(exec_start.removeprefix("ExecStart=")):
        if re.fullmatch(r"\$\{\w+\}", word):
            words.append(env[word[2:-1]])
        elif re.fullmatch(r"\$\w+", word):
            words += env[word[1:]].split()
        else:
            words.append(word)
    # edge-live draws with OpenCV (the camera extra); this host bundle has the edge extra only, so
    # this environment's cv2 is lent through PYTHONPATH (links to cv2 alone, not its site-packages)
    try:
        import cv2
    except ImportError:
        pytest.skip("OpenCV (the camera extra) is not installed here; edge-live needs it")
    lent = tmp_path / "lent"
    lent.mkdir()
    site = Path(cv2.__file__).resolve().parents[1]
    for name in os.listdir(site):
        if name == "cv2" or name.startswith("opencv_python"):
            (lent / name).symlink_to(site / name)
    done = subprocess.run(words, capture_output=True, text=True, cwd=state, timeout=120,
                          env={**env, "PATH": "/usr/bin:/bin", "HOME": str(state), "PYTHONPATH": str(lent)})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (state / "results.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["model"].endswith("brain_int8.tflite")
    assert events[-1]["event"] == "stop"


def test_builder_rejects_bad_options():
    for args, message in ((["--extras", "train"], "unknown or non-device extra train"),
                          (["--python-version", "three"], "expected 3.N"),
                          (["--runtime", "tflite-runtime", "--python-version", "3.12"], "no wheels for Python 3.12"),
                          (["--no-index"], "--no-index needs --find-links")):
        done = subprocess.run([sys.executable, str(DEPLOY / "build_bundle.py"), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr
