"""The shipped float32 and int8 models on ai-edge-litert against what a user would otherwise pick:
tflite-runtime 2.14 (its own environment: numpy<2) and ONNX Runtime on the float model converted
with tf2onnx. Desktop only. Every engine runs in its own process (benchmarks/studies/peer_worker.py) on the
same preprocessed inputs, timed in rounds of a few invokes that rotate over the engines, so
machine noise hits them alike; only one engine computes at a time.

    python -m benchmarks.studies.peers --model leukemia_int8 --data ../shared/data/cnmc --split test --threads 1 2

--builtin-kernels adds ai-edge-litert without its default XNNPACK delegate, to show which
kernels make the difference. Environments (missing ones are skipped with a note): this Python for ai-edge-litert;
--tflite-runtime-python (default .venv-tflite-runtime/bin/python); --onnx-python (default
.venv-onnx/bin/python) with tensorflow, tf2onnx and onnxruntime, which converts the float .tflite
to ONNX once (cached under runs/peers/) and runs it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge.images import ImageError, load_image
from edge.metadata import ModelError, read_metadata
from edge.preprocess import preprocess

from benchmarks import accuracy, latency, macs
from benchmarks.report import json_ready
from benchmarks.selection import UsageError, find_baseline, find_model, load_samples
from benchmarks.footprint import PACKAGE_ROOT
from benchmarks.machine import cpu_description, one_line
from benchmarks.progress import progress

ROUND = 10  # invokes per engine per round
ONNX_OPSET = 17


def convert_to_onnx(tflite_path: Path, python: str, out_folder: Path) -> Path:
    """The float .tflite -> ONNX with tf2onnx's TFLite front end, cached by the model's SHA-256."""
    sha = read_metadata(tflite_path)["sha256"][:12]
    onnx_path = out_folder / f"{tflite_path.stem}-{sha}.onnx"
    if not onnx_path.is_file():
        out_folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([python, "-m", "tf2onnx.convert", "--tflite", str(tflite_path), "--output", str(onnx_path),
                               "--opset", str(ONNX_OPSET)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"peers: tf2onnx failed: {done.stderr.strip().splitlines()[-1]}")
    return onnx_path


class Worker:
    def __init__(self, label: str, python: str, engine: str, model: Path, threads: int, inputs: str):
        self.label = label
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [python, "-m", "benchmarks.studies.peer_worker", "--engine", engine, "--model", str(model),
             "--threads", str(threads), "--inputs", inputs],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.loaded = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"peers: the {self.label} worker stopped (run it by hand to see why)")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> dict:
        memory = self.ask("quit")
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()
        return memory


def prepare_inputs(args, metadata: dict, model_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (preprocessed float32 images, their labels or None)."""
    if not args.data:
        shape = metadata["input"]["shape"][1:]
        return np.random.default_rng(0).random((8, *shape), dtype=np.float32), None
    samples = load_samples(args, metadata["task"], model_path, metadata)
    images, labels = [], []
    for sample in progress(samples, len(samples), "preprocessing"):
        try:
            images.append(preprocess(load_image(sample.path), metadata["preprocessing"]))
            labels.append(sample.label)
        except ImageError:
            continue
    return np.stack(images), np.array(labels)


def engines(args, float_path: Path, int8_path: Path | None) -> tuple[list[tuple], list[str]]:
    """-> ([(label, python, engine, model path, precision)], notes on skipped engines)."""
    chosen, notes = [], []
    pairs = [("float32", float_path)] + ([("int8", int8_path)] if int8_path else [])
    chosen += [(f"ai-edge-litert {p}", sys.executable, "ai-edge-litert", path, p) for p, path in pairs]
    if args.builtin_kernels:
        chosen += [(f"ai-edge-litert {p}, built-in kernels", sys.executable, "ai-edge-litert-builtin", path, p)
                   for p, path in pairs]
    if Path(args.tflite_runtime_python).is_file():
        chosen += [(f"tflite-runtime {p}", args.tflite_runtime_python, "tflite-runtime", path, p) for p, path in pairs]
    else:
        notes.append(f"tflite-runtime skipped: {args.tflite_runtime_python} not found")
    if Path(args.onnx_python).is_file():
        onnx_path = convert_to_onnx(float_path, args.onnx_python, PACKAGE_ROOT / "runs" / "peers")
        chosen.append(("onnxruntime float32", args.onnx_python, "onnxruntime", onnx_path, "float32"))
    else:
        notes.append(f"ONNX Runtime skipped: {args.onnx_python} not found")
    return chosen, notes


def measure(chosen: list[tuple], inputs_file: str, threads: int, runs: int, warmup: int, with_scores: bool) -> list[dict]:
    workers = [Worker(label, python, engine, model, threads, inputs_file) for label, python, engine, model, _ in chosen]
    try:
        for worker in workers:
            if warmup:
                worker.ask(f"run {warmup}")
        samples = [[] for _ in workers]
        rounds = -(-runs // ROUND)
        for r in progress(range(rounds), rounds, f"rounds, {threads} thread(s)"):
            turn = r % len(workers)
            for w in list(range(len(workers)))[turn:] + list(range(len(workers)))[:turn]:
                samples[w] += workers[w].ask(f"run {min(ROUND, runs - r * ROUND)}")["samples_ms"]
        scores = [worker.ask("scores")["scores"] if with_scores else None for worker in workers]
        memories = [worker.close() for worker in workers]
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
    return [{"engine": label, "version": worker.loaded["version"], "precision": precision, "model": str(model),
             "threads": threads, "init_ms": worker.loaded["init_ms"], "first_ms": worker.loaded["first_ms"],
             "latency_ms": latency.summarize(s), "throughput_ips": 1000 / float(np.mean(s)), **memory, "scores": score}
            for (label, _, _, model, precision), worker, s, score, memory in zip(chosen, workers, samples, scores, memories)]


def table(results: list[dict], model_macs: int, peak: dict) -> list[str]:
    has_metrics = any(r.get("metrics") for r in results)
    header = ["engine", "version", "threads", "init ms", "first ms", "p50 ms", "mean ± std ms", "p90 ms", "p99 ms",
              "images/s", "GMAC/s (% of estimated peak)", "engine + model RSS MB"]
    if has_metrics:
        header += ["accuracy", "agreement with litert float32"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        stats = r["latency_ms"]
        gmacs = model_macs / stats["p50"] / 1e6
        limit = macs.peak_gmacs(peak, r["precision"], r["threads"])
        cells = [r["engine"], r["version"], str(r["threads"]), f"{r['init_ms']:.1f}", f"{r['first_ms']:.1f}",
                 f"{stats['p50']:.2f}", f"{stats['mean']:.2f} ± {stats['std']:.2f}", f"{stats['p90']:.2f}",
                 f"{stats['p99']:.2f}", f"{r['throughput_ips']:.0f}",
                 f"{gmacs:.1f} ({100 * gmacs / limit:.0f}%)" if limit else f"{gmacs:.1f}", f"{r['engine_rss_mb']:.0f}"]
        if has_metrics:
            cells += [f"{r['metrics']['accuracy']:.4f}" if r.get("metrics") else "",
                      f"{r['agreement']:.4f}" if r.get("agreement") is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="leukemia_int8", help="the int8 model (its float32 sibling is found) "
                                                                 "or a float32 model")
    parser.add_argument("--data")
    parser.add_argument("--split", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--tflite-runtime-python", default=str(PACKAGE_ROOT / ".venv-tflite-runtime" / "bin" / "python"))
    parser.add_argument("--onnx-python", default=str(PACKAGE_ROOT / ".venv-onnx" / "bin" / "python"))
    parser.add_argument("--builtin-kernels", action="store_true",
                        help="also ai-edge-litert without its default XNNPACK delegate (the built-in kernels)")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--markdown", metavar="OUT")
    args = parser.parse_args(argv)
    try:
        return run(args, argv)
    except (ModelError, UsageError) as error:
        print(f"peers: {error}", file=sys.stderr)
        return 2


def run(args, argv) -> int:
    model_path = find_model(args.model)
    model_metadata = read_metadata(model_path)
    float_path = find_baseline(model_path, model_metadata, None) or model_path
    int8_path = model_path if model_path != float_path else None
    float_metadata = read_metadata(float_path)
    if int8_path and read_metadata(int8_path)["preprocessing"] != float_metadata["preprocessing"]:
        raise SystemExit("peers: the int8 and float32 models preprocess differently; compare them with `benchmark`")
    inputs, labels = prepare_inputs(args, float_metadata, float_path)
    chosen, notes = engines(args, float_path, int8_path)
    model_macs = macs.count_macs(float_path)["total"]
    peak, cpu = macs.cpu_peak(), cpu_description()
    results, load_before = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        inputs_file = os.path.join(folder, "inputs.npy")
        np.save(inputs_file, inputs)
        for index, threads in enumerate(args.threads):
            results += measure(chosen, inputs_file, threads, args.runs, args.warmup, labels is not None and index == 0)
    if labels is not None:
        thresholds = {"float32": float(float_metadata["threshold"]),
                      "int8": float(read_metadata(int8_path)["threshold"]) if int8_path else None}
        reference = next(r for r in results if r["engine"] == "ai-edge-litert float32" and r["scores"])
        for r in results:
            if r["scores"] is not None:
                threshold = thresholds[r["precision"]]
                r["metrics"] = accuracy.evaluate(labels, r["scores"], threshold, tuple(float_metadata["labels"]))
                r["agreement"] = accuracy.agreement(r["scores"], threshold, reference["scores"], thresholds["float32"])
    lines = [f"`python -m benchmarks.studies.peers {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{len(inputs)} inputs ({'images of ' + args.data if args.data else 'random'}"
             f"{', ' + args.split + ' split' if args.split else ''}); {args.runs} timed runs per engine in rounds of "
             f"{ROUND}, after {args.warmup} warm-up; {model_macs / 1e6:.1f} M MACs per inference; "
             f"CPU: {one_line(cpu)}; "
             f"estimated peak {peak['peak_fp32_gmacs'] or math.nan:.1f} GMAC/s fp32 / {peak['peak_int8_gmacs'] or math.nan:.1f} int8 "
             f"({peak['what']}; {peak['how']}); "
             f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}. "
             "GMAC/s from the p50; engine + model RSS: peak resident memory after the inputs were loaded.", ""]
    lines += table(results, model_macs, peak) + [""] + [f"- {note}" for note in notes]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    if args.json:
        for r in results:
            r.pop("scores")
        document = {"schema_version": 2, "command": lines[0].strip("`"), "inputs": len(inputs), "macs": model_macs,
                    "cpu": cpu, "peak_estimate": peak, "results": results, "notes": notes}
        Path(args.json).write_text(json.dumps(json_ready(document), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
