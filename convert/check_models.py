"""Check shipped models: SHA-256 against metadata, load with the available TFLite runtime, and re-score
the images recorded in their verification: the scores must be the recorded ones, and a model verified
on a held-out test split must reproduce its metrics. The image paths are relative to the data root
(--data DIR, else $EDGE_DATA, else shared/data beside the checkout); a missing image fails the check.

    python -m convert.check_models models [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge.classifier import Classifier
from edge.images import ImageError
from edge.metadata import ModelError, read_metadata
from train.data_root import ENV, data_root, resolve
from edge.metrics import evaluate


def reference_of(model_path: Path, root: Path) -> dict:
    """The model's verification reference scores, with image paths resolved against the data root."""
    task = read_metadata(model_path)["task"]
    reference = json.loads((model_path.parent / f"{task}_verification.json").read_text())["reference_scores"]
    return {**reference, "paths": [resolve(p, root) for p in reference["paths"]]}


def first_missing_image(models: list[Path], root: Path) -> str | None:
    for model in models:
        missing = next((p for p in reference_of(model, root)["paths"] if not Path(p).is_file()), None)
        if missing:
            return missing
    return None


def check(model_path: Path, root: Path | None = None) -> bool:
    """Re-score the images of the model's verification through the device pipeline (decode,
    preprocess, quantize, invoke, dequantize) and compare with the recorded scores; for a model
    verified on a held-out test split, also re-evaluate its metrics."""
    metadata = read_metadata(model_path)
    reference = reference_of(model_path, data_root(root))
    with Classifier(model_path, check_quality=False) as classifier:
        results = [classifier.classify(path) for path in reference["paths"]]
        runtime = classifier.runtime
    measured = np.array([r.probabilities[classifier.labels[1]] for r in results], dtype=np.float32)
    y = np.array(reference["labels"])
    per_image_ms = float(np.median([r.latency_ms for r in results]))
    same = bool(np.allclose(measured, reference[metadata["precision"]], atol=1e-4))  # float kernels differ by CPU
    if reference["held_out"]:
        metrics = evaluate(y, measured, metadata["threshold"], tuple(metadata["labels"]))
        same &= all(abs(metrics[k] - metadata["metrics"][k]) < 1e-9 for k in ("accuracy", "weighted_f1"))
        note = f"Held-out test accuracy {metrics['accuracy']:.4f}."
    else:
        note = (f"A check of the install, not of accuracy: these are training images. On patients or scans it never "
                f"saw (out of fold): accuracy {metadata['metrics']['accuracy']:.3f}, see {metadata['task']}_MODEL_CARD.md.")
    verdict = "OK, the same scores as at conversion" if same else "FAILED: scores differ from those recorded at conversion"
    line = (f"{model_path.name:22s} {verdict} on {len(results)} images ({runtime}, median {per_image_ms:.1f} ms an "
            f"image). {note}")
    print(line)
    return same


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.check_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="models", help="folder of <task>_<precision>.tflite models")
    parser.add_argument("--data", metavar="DIR", help=f"data root of the reference images (default: ${ENV}, "
                                                      "else shared/data beside the checkout)")
    args = parser.parse_args(argv)
    folder, root = Path(args.folder), data_root(args.data)
    models = sorted(folder.glob("*_float32.tflite")) + sorted(folder.glob("*_int8.tflite"))
    if not models:
        print(f"check_models: no *_float32.tflite or *_int8.tflite in {folder}", file=sys.stderr)
        return 2
    try:
        missing = first_missing_image(models, root)
    except (ModelError, FileNotFoundError, KeyError) as error:
        print(f"check_models: {error}", file=sys.stderr)
        return 1
    if missing:
        print(f"check_models: reference image {missing} not found (data root {root}); "
              f"pass --data DIR or set {ENV} to the folder holding cnmc/ and brain_mri/", file=sys.stderr)
        return 1
    ok = True
    for model in models:
        try:
            ok &= check(model, root)
        except (ModelError, ImageError, FileNotFoundError, KeyError) as error:
            print(f"check_models: {error}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
