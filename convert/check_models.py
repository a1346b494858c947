"""Check shipped models: SHA-256 against metadata, load with the available TFLite runtime, and re-score
the images recorded in their verification (when the data is present): the scores must be the recorded
ones, and a model verified on a held-out test split must reproduce its metrics.

    python -m convert.check_models models
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.interpreter import make_interpreter, scores
from edge.metadata import ModelError, read_metadata
from train.arrays import load_arrays
from train.metrics import evaluate
from train.datasets import Sample


def check(model_path: Path) -> bool:
    """Re-score the images of the model's verification and compare with the recorded scores; for a
    model verified on a held-out test split, also re-evaluate its metrics."""
    metadata = read_metadata(model_path)
    interpreter, runtime = make_interpreter(model_path)
    task, precision = metadata["task"], metadata["precision"]
    verification = json.loads((model_path.parent / f"{task}_verification.json").read_text())
    reference = verification["reference_scores"]
    missing = [p for p in reference["paths"] if not Path(p).is_file()]
    if missing:
        print(f"{model_path.name}: loads with {runtime}; reference images not found ({missing[0]} ...), skipped evaluation")
        return True
    samples = [Sample(p, label) for p, label in zip(reference["paths"], reference["labels"])]
    _, x, y, _ = load_arrays(samples, metadata["preprocessing"])
    started = time.perf_counter()
    measured = scores(interpreter, x)
    per_image_ms = (time.perf_counter() - started) * 1000 / len(x)
    same = bool(np.allclose(measured, reference[precision], atol=1e-4))  # float kernels differ by CPU
    line = f"{model_path.name:26s} {runtime:15s} n={len(x):4d}  {per_image_ms:.2f} ms/image  "
    if reference["held_out"]:
        metrics = evaluate(y, measured, metadata["threshold"], tuple(metadata["labels"]))
        same &= all(abs(metrics[k] - metadata["metrics"][k]) < 1e-9 for k in ("accuracy", "weighted_f1"))
        line += f"test accuracy {metrics['accuracy']:.4f}  weighted F1 {metrics['weighted_f1']:.4f}  "
    else:
        recorded = metadata["metrics"]
        line += (f"scores of training images; recorded {metadata['metrics_evaluated_on'].split(' of ')[0]}: "
                 f"weighted F1 {recorded['weighted_f1']:.4f}  ")
    print(line + ("matches the verification" if same else "DIFFERS from the verification"))
    return same


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["models"])[0])
    models = sorted(folder.glob("*_float32.tflite")) + sorted(folder.glob("*_int8.tflite"))
    if not models:
        print(f"check_models: no *_float32.tflite or *_int8.tflite in {folder}", file=sys.stderr)
        return 2
    ok = True
    for model in models:
        try:
            ok &= check(model)
        except (ModelError, FileNotFoundError, KeyError) as error:
            print(f"check_models: {error}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
