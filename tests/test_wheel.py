"""A plain (non-editable) wheel is the device install: it carries the shipped int8 models and their
metadata (not the float32 models, splits or verification records, which stay in the checkout), and
the runtime finds them by name."""
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
    wheel = next((tmp_path / "dist").glob("edge_medical-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    models = sorted(name for name in names if name.startswith("models/") and not name.endswith(".py"))
    assert models == ["models/brain_MODEL_CARD.md", "models/brain_int8.json", "models/brain_int8.tflite",
                      "models/leukemia_MODEL_CARD.md", "models/leukemia_int8.json", "models/leukemia_int8.tflite"]
    for model in ("brain_int8", "leukemia_int8"):
        for suffix in (".tflite", ".json"):
            assert zipfile.ZipFile(wheel).read(f"models/{model}{suffix}") == (ROOT / "models" / f"{model}{suffix}").read_bytes()
    assert (ROOT / "models" / "leukemia_float32.tflite").is_file()  # the checkout keeps them for the desktop
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    script = ("import edge, json\n"
              "from edge.classifier import Classifier\n"
              "from edge.model_store import shipped_names\n"
              "c = Classifier('leukemia')\n"
              "r = c.classify(__import__('numpy').zeros((96, 96, 3), 'uint8'))\n"
              "print(json.dumps([edge.__file__, str(c.model_path), c.labels, r.label, shipped_names()]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    edge_file, model_path, labels, label, shipped = json.loads(done.stdout)
    assert edge_file.startswith(str(site)) and model_path == str(site / "models" / "leukemia_int8.tflite")
    assert labels == ["hem", "all"] and label in (*labels, "uncertain", "out_of_domain", "rejected")
    assert shipped == ["brain_int8", "leukemia_int8"]
