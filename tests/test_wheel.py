"""A plain (non-editable) wheel carries the shipped models, and the runtime finds them by name."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_models_and_finds_them_by_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("edge_medical-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for model in ("brain_int8", "brain_float32", "leukemia_int8", "leukemia_float32"):
        assert f"models/{model}.tflite" in names and f"models/{model}.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    script = ("import edge, json\n"
              "from edge.classifier import Classifier\n"
              "c = Classifier('leukemia')\n"
              "print(json.dumps([edge.__file__, str(c.model_path), c.labels]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    edge_file, model_path, labels = __import__("json").loads(done.stdout)
    assert edge_file.startswith(str(site)) and model_path == str(site / "models" / "leukemia_int8.tflite")
    assert labels == ["hem", "all"]
