"""A plain (non-editable) wheel is the device install: one import name (edge) in site-packages, the
shipped int8 models and their metadata as edge.models (not the float32 models, splits or verification
records, which stay in the checkout), the benchmark command as edge.benchmarks without the desktop
studies; the runtime finds the models by name and the commands run from the unpacked wheel alone."""
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_source(work: Path) -> Path:
    """deploy/build_bundle.py's copy of the files git does not ignore: a stale build/lib in the
    checkout would otherwise leak files the package data no longer lists into the wheel."""
    spec = importlib.util.spec_from_file_location("build_bundle", ROOT / "deploy" / "build_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_tree(work)


def test_wheel_ships_int8_models_only_and_finds_them_by_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(clean_source(tmp_path))], check=True, capture_output=True, timeout=300)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("edge_medical-*.whl")))
    names = wheel.namelist()

    def dist_info(name: str) -> str:
        return wheel.read(next(n for n in names if n.endswith(f".dist-info/{name}"))).decode()

    assert dist_info("top_level.txt").split() == ["edge"]
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"edge"}
    models = sorted(name for name in names if name.startswith("edge/models/") and not name.endswith(".py"))
    assert models == [f"edge/models/{name}" for name in ("brain_MODEL_CARD.md", "brain_int8.json", "brain_int8.tflite",
                      "leukemia_MODEL_CARD.md", "leukemia_int8.json", "leukemia_int8.tflite")]
    for model in ("brain_int8", "leukemia_int8"):
        for suffix in (".tflite", ".json"):
            assert wheel.read(f"edge/models/{model}{suffix}") == (ROOT / "models" / f"{model}{suffix}").read_bytes()
    assert "edge/benchmarks/cli.py" in names and not any(name.startswith("edge/benchmarks/studies") for name in names)
    assert (ROOT / "models" / "leukemia_float32.tflite").is_file()  # the checkout keeps them for the desktop
    site = tmp_path / "site"
    wheel.extractall(site)  # what pip install puts in site-packages

    def from_the_wheel_alone(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path,
                              env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=timeout)

    script = ("import edge, json\n"
              "from edge.classifier import Classifier\n"
              "from edge.model_store import shipped_names\n"
              "c = Classifier('leukemia')\n"
              "r = c.classify(__import__('numpy').zeros((96, 96, 3), 'uint8'))\n"
              "print(json.dumps([edge.__file__, str(c.model_path), c.labels, r.label, shipped_names()]))\n")
    done = from_the_wheel_alone("-c", script)
    assert done.returncode == 0, done.stderr
    edge_file, model_path, labels, label, shipped = json.loads(done.stdout)
    assert edge_file.startswith(str(site)) and model_path == str(site / "edge" / "models" / "leukemia_int8.tflite")
    assert labels == ["hem", "all"] and label in (*labels, "uncertain", "out_of_domain", "rejected")
    assert shipped == ["brain_int8", "leukemia_int8"]

    scripts = dict(line.split(" = ") for line in dist_info("entry_points.txt").split("[console_scripts]")[1].strip().splitlines())
    assert set(scripts) == {"edge-classify", "edge-live", "edge-dicom", "benchmark"}
    for script, target in scripts.items():  # every command starts from the unpacked wheel alone
        module, function = target.split(":")
        done = from_the_wheel_alone(
            "-c", f"import sys; sys.argv[0] = {script!r}; from {module} import {function}; sys.exit({function}(['--help']))")
        assert done.returncode == 0 and "usage:" in done.stdout, (script, done.stderr)
    benchmark = from_the_wheel_alone("-c", "import sys; from edge.benchmarks.cli import main; sys.exit(main())",
                                     "--model", "leukemia", "--baseline", str(ROOT / "models" / "leukemia_float32.tflite"),
                                     "--runs", "5", "--warmup", "1", "--json", str(tmp_path / "b.json"), timeout=300)
    assert benchmark.returncode == 0, benchmark.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["models"][0]["by_threads"][0]["latency_ms"]["p50"] > 0
