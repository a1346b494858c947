"""Size on disk of an edge-only install: build the project wheel from a clean copy of the checkout,
install it with an extra into fresh virtual environments, and print `du -sb` of each environment
and the bytes of every installed distribution.

    python -m benchmarks.studies.install_size                                   # '.[edge]', venv with and without pip
    python -m benchmarks.studies.install_size --with 'ai-edge-litert==2.3.0'    # another runtime release
    python -m benchmarks.studies.install_size --extras edge,camera --json sizes.json
    python -m benchmarks.studies.install_size --platform manylinux_2_17_aarch64 --python-version 3.11   # a Pi's files

What is counted: `du -sb VENV` (apparent bytes of every file and folder of the environment,
symlinks as links: the base interpreter and its standard library are not counted, they come with
the OS); per distribution, the files its RECORD lists (so the .pyc files pip compiled at install
time are counted, and a `pip` venv's own pip and setuptools show up as distributions). Two
environments: `python -m venv` (pip and, before Python 3.12, setuptools inside it) and
`python -m venv --without-pip` installed into with `pip --python` from outside (pip >= 22.3), as
deploy/install.sh could. Needs a package index (or a --find-links folder) for the dependencies.
Each environment then classifies a blank image with the shipped default model, so a size is only
reported for an install that works. With --platform, the files pip would install for another
platform (`pip install --target DIR --platform ...`) are measured instead; they cannot be run here.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {"with-pip": [], "without-pip": ["--without-pip"]}
SMOKE = ("import json, numpy as np\n"
         "from edge.classifier import Classifier\n"
         "from importlib import metadata\n"
         "with Classifier(check_quality=False) as c:\n"
         "    r = c.classify(np.zeros((96, 96, 3), np.uint8))\n"
         "print(json.dumps({'model': c.model_path.name, 'runtime': c.runtime, 'label': r.label,\n"
         "                  'numpy': np.__version__, 'models': sorted(p.name for p in c.model_path.parent.iterdir()\n"
         "                                                           if p.suffix in ('.tflite', '.json'))}))\n")


def source_tree(work: Path) -> Path:
    """deploy/build_bundle.py's clean copy (the files git does not ignore): a stale build/lib in the
    checkout would otherwise leak files that the package data no longer lists into the wheel."""
    spec = importlib.util.spec_from_file_location("build_bundle", ROOT / "deploy" / "build_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_tree(work)


def build_wheel(work: Path, no_build_isolation: bool) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source_tree(work))]
    if no_build_isolation:
        command.insert(4, "--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return next((work / "dist").glob("edge_medical-*.whl"))


def pip(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise SystemExit(f"install_size: {what} failed (exit {done.returncode}):\n{tail}")


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def per_distribution(site: Path) -> dict[str, int]:
    """Bytes of the files each distribution's RECORD lists (lstat sizes), largest first."""
    from importlib import metadata

    sizes = {}
    for dist in metadata.distributions(path=[str(site)]):
        total = 0
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file() or path.is_symlink():
                total += path.lstat().st_size
        sizes[f"{dist.metadata['Name']} {dist.version}"] = total
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def measure(base_python: str, venv: Path, variant: str, requirements: list[str], pip_options: list[str]) -> dict:
    subprocess.run([base_python, "-m", "venv", *VARIANTS[variant], str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    installer = [str(python), "-m", "pip"] if variant == "with-pip" else [sys.executable, "-m", "pip", "--python", str(python)]
    pip([*installer, "install", "-q", "--disable-pip-version-check", *pip_options, *requirements], f"{variant}: pip install")
    smoke = subprocess.run([str(python), "-c", SMOKE], capture_output=True, text=True, cwd=venv, timeout=120,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(venv)})
    if smoke.returncode != 0:
        raise RuntimeError(f"{variant}: the installed environment cannot classify: {smoke.stderr.strip()[-500:]}")
    site = site_packages(venv)
    return {"variant": variant, "venv_bytes": du_bytes(venv), "site_packages_bytes": du_bytes(site),
            "distributions": per_distribution(site), "smoke": json.loads(smoke.stdout)}


def measure_foreign(target: Path, requirements: list[str], pip_options: list[str], platforms: list[str],
                    python_version: str) -> dict:
    """The files pip installs for another platform into a --target folder (not executable here)."""
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in platforms:
        options += ["--platform", tag]
    pip([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(target),
         *options, *pip_options, *requirements], "pip install --target")
    return {"variant": f"target {','.join(platforms)} Python {python_version} (not run)", "venv_bytes": du_bytes(target),
            "site_packages_bytes": du_bytes(target), "distributions": per_distribution(target), "smoke": None}


def report(result: dict) -> str:
    lines = [f"edge-medical wheel {result['wheel']} ({result['wheel_bytes'] / 1e6:.2f} MB), "
             f"requirements: {' '.join(result['requirements'])}",
             f"machine: {result['machine']}, base Python {result['python']}", ""]
    for entry in result["environments"]:
        smoke = entry["smoke"]
        if smoke is None:
            lines.append(f"{entry['variant']}: du -sb of the --target folder {entry['venv_bytes'] / 1e6:.1f} MB")
        else:
            lines.append(f"{entry['variant']}: du -sb venv {entry['venv_bytes'] / 1e6:.1f} MB, site-packages "
                         f"{entry['site_packages_bytes'] / 1e6:.1f} MB; classifies with {smoke['model']} on "
                         f"{smoke['runtime']} (numpy {smoke['numpy']})")
        for name, size in entry["distributions"].items():
            lines.append(f"  {size / 1e6:7.2f} MB  {name}")
        if smoke:
            lines.append(f"  models in the install: {', '.join(smoke['models'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="edge", help="extras of the project to install (default edge)")
    parser.add_argument("--with", dest="extra_requirements", action="append", default=[], metavar="REQ",
                        help="another requirement installed alongside, e.g. 'ai-edge-litert==2.3.0' (repeatable)")
    parser.add_argument("--wheel", help="an already built edge_medical wheel (default: build one from the checkout)")
    parser.add_argument("--python", default=shutil.which("python3") or sys.executable,
                        help="the base interpreter the environments are made with (default python3 on PATH)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--platform", action="append", default=[], metavar="TAG",
                        help="measure the files for another platform instead (pip --target, not run), e.g. "
                             "manylinux_2_17_aarch64 (repeatable)")
    parser.add_argument("--python-version", default="3.11", help="with --platform: the device's Python (default 3.11)")
    parser.add_argument("--pip-option", action="append", default=[], metavar="OPT",
                        help="passed to pip install, e.g. --pip-option=--no-index --pip-option=--find-links=DIR")
    parser.add_argument("--no-build-isolation", action="store_true", help="build the wheel with this setuptools")
    parser.add_argument("--keep", metavar="DIR", help="make the environments here and keep them")
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-install-size-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        wheel = Path(args.wheel).resolve() if args.wheel else build_wheel(Path(tmp), args.no_build_isolation)
        extras = f"[{args.extras}]" if args.extras else ""
        requirements = [f"{wheel}{extras}", *args.extra_requirements]
        base = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        result = {"wheel": wheel.name, "wheel_bytes": wheel.stat().st_size,
                  "requirements": [f"{wheel.name}{extras}", *args.extra_requirements],
                  "machine": f"{platform.machine()} {platform.platform()}", "python": base, "environments": []}
        if args.platform:
            result["python"] = f"{args.python_version} (target)"
            target = work / "target"
            if target.exists():
                shutil.rmtree(target)
            result["environments"].append(measure_foreign(target, requirements, args.pip_option, args.platform,
                                                          args.python_version))
        for variant in [] if args.platform else args.variants:
            venv = work / f"venv-{variant}"
            if venv.exists():
                shutil.rmtree(venv)
            result["environments"].append(measure(args.python, venv, variant, requirements, args.pip_option))
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
