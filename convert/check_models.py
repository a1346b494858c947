"""Check shipped models: SHA-256 against metadata, load with the available TFLite runtime, and
re-evaluate on the held-out test split recorded beside them (when the data is present).

    python -m convert.check_models models
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from edge.interpreter import make_interpreter, scores
from edge.metadata import ModelError, read_metadata
from train.arrays import load_arrays
from train.metrics import evaluate
from train.splits import load_split, subset_samples


def check(model_path: Path) -> bool:
    metadata = read_metadata(model_path)
    interpreter, runtime = make_interpreter(model_path)
    split_path = model_path.parent / metadata["training"]["split_file"]
    samples = subset_samples(load_split(split_path), "test")
    missing = [s.path for s in samples if not Path(s.path).is_file()]
    if missing:
        print(f"{model_path.name}: loads with {runtime}; test images not found ({missing[0]} ...), skipped evaluation")
        return True
    _, x, y, _ = load_arrays(samples, metadata["preprocessing"])
    started = time.perf_counter()
    measured = evaluate(y, scores(interpreter, x), metadata["threshold"], tuple(metadata["labels"]))
    per_image_ms = (time.perf_counter() - started) * 1000 / len(x)
    recorded = metadata["metrics"]
    same = all(abs(measured[k] - recorded[k]) < 1e-9 for k in ("accuracy", "weighted_f1", "sensitivity", "specificity"))
    print(f"{model_path.name:26s} {runtime:15s} test n={measured['images']:4d}  accuracy {measured['accuracy']:.4f}  "
          f"weighted F1 {measured['weighted_f1']:.4f}  sensitivity {measured['sensitivity']:.4f}  "
          f"specificity {measured['specificity']:.4f}  {per_image_ms:.2f} ms/image  "
          f"{'matches metadata' if same else 'DIFFERS from metadata'}")
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
