"""The `benchmark` tool: consistent figures, a stable JSON schema, accuracy that matches an
independent count over the models' own per-image outputs, one-line errors. No test asserts a speed."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import accuracy, latency, machine, macs
from benchmarks.cli import main
from benchmarks.selection import find_model
from conftest import save_brain_layout, save_cnmc_flat, save_cnmc_official
from edge.classifier import Classifier
from edge.metadata import read_metadata

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
PATIENTS = {"1": 4, "2": 3, "H1": 4, "H2": 3}  # 7 all, 7 hem
RUNS = 6
THREADS = [1, 2]

MODEL_KEYS = {"name": str, "path": str, "precision": str, "size_bytes": int, "sha256": str, "threads": int,
              "init_ms": float, "first_ms": float, "latency_ms": dict, "throughput_ips": float, "macs": int,
              "gmacs_per_s": float, "peak_rss_mb": float, "metrics": dict, "end_to_end_ms": dict,
              "end_to_end_parts_ms": dict, "by_threads": list}
TOP_KEYS = {"schema_version": int, "tool": str, "created_utc": str, "command": str, "machine": dict, "runtime": str,
            "threads": list, "runs": int, "warmup": int, "data": dict, "footprint": dict, "models": list,
            "agreement": float, "comparison": dict}


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return save_cnmc_flat(tmp_path_factory.mktemp("bench") / "cnmc", PATIENTS, ext=".png")


@pytest.fixture(scope="module")
def run(cells, tmp_path_factory):
    """One benchmark run in a fresh process where TensorFlow cannot be imported."""
    out = tmp_path_factory.mktemp("out")
    blocker = out / "blocker" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is not installed on this device')\n")
    env = {"PYTHONPATH": f"{blocker.parent}:{ROOT}", "PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(out)}
    command = [sys.executable, "-m", "benchmarks.cli", "--model", "leukemia_int8.tflite", "--data", str(cells),
               "--runs", str(RUNS), "--warmup", "1", "--threads", *map(str, THREADS),
               "--json", str(out / "b.json"), "--markdown", str(out / "b.md"), "--plot", str(out / "b.png")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"json": json.loads((out / "b.json").read_text()), "stdout": done.stdout, "out": out}


def test_json_schema_is_stable(run):
    result = run["json"]
    for key, kind in TOP_KEYS.items():
        assert isinstance(result[key], kind), key
    assert result["schema_version"] == 2 and result["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert [m["precision"] for m in result["models"]] == ["int8", "float32"]
    assert [m["name"] for m in result["models"]] == ["leukemia_int8", "leukemia_float32"]
    for model in result["models"]:
        for key, kind in MODEL_KEYS.items():
            assert isinstance(model[key], kind), key
        assert set(model["latency_ms"]) == set(latency.STATISTICS)
        assert set(model["metrics"]) >= {"accuracy", "weighted_f1", "sensitivity", "specificity"}
        assert set(model["end_to_end_parts_ms"]) == {"decode", "quality", "preprocess", "quantize", "invoke", "dequantize", "domain"}
        assert [run_["threads"] for run_ in model["by_threads"]] == THREADS
        assert model["size_bytes"] == Path(model["path"]).stat().st_size
    assert {"what", "cores", "ghz", "peak_fp32_gmacs", "peak_int8_gmacs", "how"} <= set(result["machine"]["peak_estimate"])
    assert result["machine"]["peak_estimate"]["what"].startswith("estimated, not measured")
    assert [entry["threads"] for entry in result["comparison"]["latency_p50_ratio"]] == THREADS


def test_figures_are_internally_consistent(run):
    result = run["json"]
    images = sum(PATIENTS.values())
    assert result["data"]["images"] == images and result["data"]["per_label"] == {"hem": 7, "all": 7}
    assert result["runs"] == RUNS and result["threads"] == THREADS
    for model in result["models"]:
        assert model["latency_ms"] == model["by_threads"][0]["latency_ms"]
        for by in model["by_threads"]:
            stats = by["latency_ms"]
            assert stats["count"] == RUNS
            assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
            assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0
            assert by["throughput_ips"] == pytest.approx(1000 / stats["mean"])
            assert by["gmacs_per_s"] == pytest.approx(model["macs"] / stats["p50"] / 1e6)
            assert by["init_ms"] > 0 and by["first_ms"] > 0
        e2e = model["end_to_end_ms"]
        assert e2e["count"] == images and e2e["min"] <= e2e["p50"] <= e2e["max"]
        assert all(0 < part <= e2e["max"] for part in model["end_to_end_parts_ms"].values())
        assert model["peak_rss_mb"] > result["footprint"]["baseline_rss_mb"] > 0
    int8, float32 = result["models"]
    assert result["comparison"]["size_ratio"] == pytest.approx(int8["size_bytes"] / float32["size_bytes"])
    assert result["comparison"]["latency_p50_ratio"][0]["ratio"] == pytest.approx(
        int8["latency_ms"]["p50"] / float32["latency_ms"]["p50"])


def _expected_metrics(scores, truth, threshold) -> dict:
    predicted = (np.asarray(scores) >= threshold).astype(int)
    truth = np.asarray(truth)
    f1 = []
    for label in (0, 1):
        tp = np.sum((predicted == label) & (truth == label))
        precision = tp / max(np.sum(predicted == label), 1)
        recall = tp / np.sum(truth == label)
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    support = [np.sum(truth == 0), np.sum(truth == 1)]
    return {"accuracy": np.mean(predicted == truth),
            "sensitivity": np.mean(predicted[truth == 1] == 1), "specificity": np.mean(predicted[truth == 0] == 0),
            "weighted_f1": (f1[0] * support[0] + f1[1] * support[1]) / len(truth)}


def test_accuracy_matches_an_independent_count_over_per_image_outputs(run, cells):
    paths = sorted(cells.glob("*/*.png"))
    truth = [1 if path.parent.name == "all" else 0 for path in paths]
    predictions = {}
    for model in run["json"]["models"]:
        with Classifier(model["path"], check_quality=False) as classifier:
            scores = [classifier.classify(path).probabilities["all"] for path in paths]
        threshold = read_metadata(model["path"])["threshold"]
        predictions[model["name"]] = np.array(scores) >= threshold
        expected = _expected_metrics(scores, truth, threshold)
        for key, value in expected.items():
            assert model["metrics"][key] == pytest.approx(value, abs=1e-9), (model["name"], key)
    agreement = np.mean(predictions["leukemia_int8"] == predictions["leukemia_float32"])
    assert run["json"]["agreement"] == pytest.approx(agreement)


def test_table_markdown_and_plot_are_written(run):
    assert "leukemia_int8" in run["stdout"] and "invoke min/p50/p90/p99/max, 2 threads" in run["stdout"]
    assert "label agreement" in run["stdout"]
    markdown = (run["out"] / "b.md").read_text()
    assert markdown.startswith("# Benchmark: leukemia_int8 vs leukemia_float32")
    assert "| accuracy |" in markdown and "benchmark --model leukemia_int8.tflite" in markdown
    assert (run["out"] / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_name_their_cpu(run):
    """The JSON, the printed table and the Markdown carry the CPU model and its SIMD extensions."""
    cpu = run["json"]["machine"]["cpu"]
    assert set(cpu) == {"model", "cores", "simd", "machine"}
    assert cpu == machine.cpu_description()  # the machine the test runs on
    assert isinstance(cpu["model"], str) and cpu["model"] and cpu["cores"] >= 1
    assert isinstance(cpu["simd"], list) and set(cpu["simd"]) <= set(machine.X86_SIMD + machine.ARM_SIMD)
    line = f"CPU: {machine.one_line(cpu)}"
    assert cpu["model"] in line and all(flag in line for flag in cpu["simd"])
    assert line in run["stdout"].splitlines()
    markdown = (run["out"] / "b.md").read_text()
    assert line in markdown and "% of estimated peak" in markdown and "estimated, not measured" in markdown


def test_cpu_description_reads_model_and_simd_flags(tmp_path, monkeypatch):
    xeon = tmp_path / "xeon"
    xeon.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 167\n"
                    "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw "
                    "avx_vnni avx512_bf16 avx512_vnni amx_bf16 amx_int8\n\nprocessor\t: 1\nmodel name\t: other\n")
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    assert machine.cpu_description(str(xeon))["model"] == "Intel(R) Xeon(R) Processor"
    assert machine.cpu_description(str(xeon))["simd"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                                                          "avx512_bf16", "amx_int8"]
    pi5 = tmp_path / "pi5"
    pi5.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                   "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n\n"
                   "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(machine, "_lscpu_model", lambda: "Cortex-A76")
    pi = machine.cpu_description(str(pi5))
    assert pi["model"] == "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)" and pi["simd"] == ["asimd", "asimddp"]
    assert pi["machine"] == "aarch64"


def _only_model(folder: Path, name: str = "leukemia_int8") -> Path:
    folder.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(MODELS / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.tflite"


def test_bad_input_gives_one_line_and_exit_2(cells, tmp_path, capsys):
    lonely = _only_model(tmp_path / "lonely")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(MODELS / f"leukemia_int8{suffix}", renamed / f"mystery{suffix}")
    cases = {
        ("--model", str(lonely)): "float baseline leukemia_float32.tflite not found",
        ("--model", str(renamed / "mystery.tflite")): "pass --baseline",
        ("--model", "leukemia_int8", "--baseline", str(tmp_path / "absent.tflite")): "model file not found",
        ("--model", "leukemia_int8", "--data", str(tmp_path / "no-such-folder")): "data folder not found",
        ("--model", "leukemia_int8", "--data", str(tmp_path / "lonely")): "no C-NMC images",
        ("--model", str(tmp_path / "absent.tflite")): "model file not found",
        ("--model", "kidney"): "unknown model",
    }
    for args, reason in cases.items():
        assert main([*args, "--runs", "1"]) == 2, args
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert err.startswith("benchmark: ")


def test_missing_data_folder_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--model", "leukemia_int8", "--data",
                           str(tmp_path / "absent")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"benchmark: {tmp_path / 'absent'}: data folder not found"]


def test_float_sibling_and_shipped_file_names_are_found():
    assert find_model("leukemia_int8.tflite") == MODELS / "leukemia_int8.tflite"
    from benchmarks.selection import find_baseline

    int8 = MODELS / "brain_int8.tflite"
    assert find_baseline(int8, read_metadata(int8), None) == MODELS / "brain_float32.tflite"
    float32 = MODELS / "brain_float32.tflite"
    assert find_baseline(float32, read_metadata(float32), None) is None


def test_summary_statistics():
    stats = latency.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats == {"mean": 3.0, "std": pytest.approx(np.sqrt(2)), "min": 1.0, "p50": 3.0,
                     "p90": pytest.approx(4.6), "p99": pytest.approx(4.96), "max": 5.0, "count": 5}


def test_labelled_folders_in_every_layout(tmp_path):
    brain = save_brain_layout(tmp_path / "brain_mri" / "kaggle", per_class=3)
    for root in (brain, brain.parent):  # a yes/no folder, or a folder of them
        samples = accuracy.find_labelled_images(str(root), "brain")
        assert sorted(s.label for s in samples) == [0, 0, 0, 1, 1, 1]
    official = save_cnmc_official(tmp_path / "official")
    assert len(accuracy.find_labelled_images(str(official), "leukemia")) == 13
    with pytest.raises(FileNotFoundError):
        accuracy.find_labelled_images(str(tmp_path / "official"), "brain")


def test_split_filter_and_limit(cells, tmp_path):
    samples = accuracy.find_labelled_images(str(cells), "leukemia")
    test_names = {Path(s.path).name for s in samples[::3]}
    listed = [{"path": f"../elsewhere/cnmc/{Path(s.path).parent.name}/{Path(s.path).name}", "label": s.label,
               "subset": "test" if Path(s.path).name in test_names else "train"} for s in samples]
    split = tmp_path / "leukemia_split.json"
    split.write_text(json.dumps({"samples": listed}))
    kept = accuracy.keep_split(samples, split, "test")
    assert {Path(s.path).name for s in kept} == test_names
    with pytest.raises(ValueError, match="no image"):
        accuracy.keep_split(samples, split, "val")
    limited = accuracy.every_nth(samples, 4)
    assert len(limited) == 4 and {s.label for s in limited} == {0, 1}


def test_peak_is_derived_from_lscpu(monkeypatch):
    zen1 = {"Vendor ID": "AuthenticAMD", "CPU family": "23", "Model": "1", "Core(s) per socket": "2",
            "Socket(s)": "1", "CPU max MHz": "2000.0", "Flags": "sse avx avx2 fma", "Model name": "AMD EPYC"}
    monkeypatch.setattr(macs, "_lscpu", lambda: zen1)
    peak = macs.cpu_peak()
    assert peak["peak_fp32_gmacs"] == pytest.approx(2 * 2.0 * 8) and peak["peak_int8_gmacs"] == pytest.approx(32)
    assert macs.peak_gmacs(peak, "int8", 1) == pytest.approx(16)
    skylake = {**zen1, "Vendor ID": "GenuineIntel", "CPU family": "6", "Model": "85", "Core(s) per socket": "4",
               "CPU max MHz": "3000.0", "Flags": "avx2 fma avx512f avx512_vnni"}
    monkeypatch.setattr(macs, "_lscpu", lambda: skylake)
    peak = macs.cpu_peak()
    assert peak["peak_fp32_gmacs"] == pytest.approx(4 * 3.0 * 32) and peak["peak_int8_gmacs"] == pytest.approx(4 * 3.0 * 128)


def test_mac_count_of_a_tiny_model(tmp_path):
    tf = pytest.importorskip("tensorflow")
    inputs = tf.keras.Input((8, 8, 2))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 3*3*2 = 4608
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 outputs x 3*3 = 2304
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(3)(x)  # 3 outputs x 4 = 12
    model = tf.keras.Model(inputs, outputs)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    counted = macs.count_macs(path)
    assert counted["by_op"] == {"CONV_2D": 4608, "DEPTHWISE_CONV_2D": 2304, "FULLY_CONNECTED": 12}
    assert counted["total"] == 4608 + 2304 + 12


def test_peers_time_every_engine_found_and_skip_the_missing_ones(tmp_path, capsys):
    from benchmarks.studies import peers

    code = peers.main(["--model", "leukemia_int8", "--runs", "12", "--warmup", "1", "--tflite-runtime-python",
                       str(tmp_path / "none"), "--onnx-python", str(tmp_path / "none"), "--json", str(tmp_path / "p.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| ai-edge-litert float32 |" in out and "| ai-edge-litert int8 |" in out
    assert "tflite-runtime skipped" in out and "ONNX Runtime skipped" in out
    results = json.loads((tmp_path / "p.json").read_text())["results"]
    assert [r["engine"] for r in results] == ["ai-edge-litert float32", "ai-edge-litert int8"]
    for r in results:
        assert r["latency_ms"]["count"] == 12 and r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["max"]
        assert r["peak_rss_mb"] >= r["engine_rss_mb"] > 0


def test_risk_coverage_answers_the_most_confident_first_and_out_of_domain_last():
    from benchmarks.accuracy import risk_coverage

    labels = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 0])
    scores = np.array([0.99, 0.95, 0.02, 0.05, 0.55, 0.45, 0.48, 0.52, 0.97, 0.01])  # 0.48 and 0.52 wrong
    flags = np.zeros(10, bool)
    curve = risk_coverage(labels, scores, 0.5, flags)
    assert curve["accuracy_at_100"] == 0.8 and curve["accuracy_at_80"] == 1.0 and curve["accuracy_at_90"] == 8 / 9
    flags[0] = True  # a confident right answer flagged out of domain goes last
    flagged = risk_coverage(labels, scores, 0.5, flags)
    assert flagged["accuracy_at_90"] == 7 / 9 and flagged["flagged_out_of_domain"] == 1
