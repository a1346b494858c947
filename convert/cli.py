"""edge-convert: a trained run -> float32 and full-integer int8 TFLite models with metadata,
verified on the run's held-out test split.

    edge-convert runs/leukemia --out models/            # leukemia_float32.tflite, leukemia_int8.tflite
    edge-convert runs/brain/model.keras --out models/ --float16 --dynamic

Exit status: 0 when int8 is within --tolerance of float32, 1 when it is not, 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

from edge.interpreter import make_interpreter, output_details, input_details, scores
from edge.metadata import sha256_of, write_metadata
from train.arrays import load_arrays
from train.metrics import evaluate
from train.report import metrics_table
from train.splits import load_split, subset_samples


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder of edge-train, or its model.keras")
    parser.add_argument("--out", default="models", help="folder for the .tflite files, metadata and reports")
    parser.add_argument("--name", help="model name (default: the task, e.g. leukemia)")
    parser.add_argument("--calibration", type=int, default=300, help="training images for int8 calibration")
    parser.add_argument("--float16", action="store_true", help="also write <name>_float16.tflite")
    parser.add_argument("--dynamic", action="store_true", help="also write <name>_dynamic.tflite (dynamic range)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="largest allowed drop of int8 accuracy below float32, in percentage points")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def calibration_samples(train: list, count: int, seed: int) -> list:
    """A stratified, seeded subset of the training split (never augmented)."""
    from sklearn.model_selection import train_test_split

    if count >= len(train):
        return train
    picked, _ = train_test_split(train, train_size=count, stratify=[s.label for s in train], random_state=seed)
    return picked


def within_tolerance(float_metrics: dict, int8_metrics: dict, tolerance_pp: float) -> bool:
    return (float_metrics["accuracy"] - int8_metrics["accuracy"]) * 100 <= tolerance_pp


def tensor_summary(details: dict) -> dict:
    scale, zero_point = details["quantization"]
    return {"shape": [int(v) for v in details["shape"]], "dtype": np.dtype(details["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}}


def convert(args: argparse.Namespace) -> bool:
    run = Path(args.run)
    model_path = run if run.suffix == ".keras" else run / "model.keras"
    run = model_path.parent
    for needed in (model_path, run / "config.json", run / "split.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: not found (expected an edge-train run folder)")
    config = json.loads((run / "config.json").read_text())
    split = load_split(run / "split.json")
    task, labels, spec, threshold = config["task"], config["labels"], config["preprocessing"], config["threshold"]
    name = args.name or task
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import keras

    from convert.tflite import convert_keras

    calibration = calibration_samples(subset_samples(split, "train"), args.calibration, args.seed)
    _, x_calibration, _, _ = load_arrays(calibration, spec)
    test_samples, x_test, y_test, _ = load_arrays(subset_samples(split, "test"), spec)
    model = keras.models.load_model(model_path)
    precisions = ["float32", "int8"] + ["float16"] * args.float16 + ["dynamic"] * args.dynamic
    print(f"converting {model_path} ({', '.join(precisions)}), calibrating on {len(x_calibration)} images", flush=True)
    flatbuffers = convert_keras(model, precisions, x_calibration)

    all_scores = {"keras": model.predict(x_test, batch_size=128, verbose=0).ravel()}
    files, tensors = [], {}
    for precision, flatbuffer in flatbuffers.items():
        path = out / f"{name}_{precision}.tflite"
        path.write_bytes(flatbuffer)
        interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
        tensors[precision] = (tensor_summary(input_details(interpreter)), tensor_summary(output_details(interpreter)))
        all_scores[precision] = scores(interpreter, x_test)
        files.append({"file": path.name, "precision": precision, "size_bytes": path.stat().st_size,
                      "sha256": sha256_of(path)})
    metrics = {key: evaluate(y_test, value, threshold, tuple(labels)) for key, value in all_scores.items()}
    predictions = {key: value >= threshold for key, value in all_scores.items()}
    agreement = float(np.mean(predictions["float32"] == predictions["int8"]))
    passed = within_tolerance(metrics["float32"], metrics["int8"], args.tolerance)
    size_ratio = files[1]["size_bytes"] / files[0]["size_bytes"]

    report_config = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    training = {"data": config["data"], "grouped_by": config["grouped_by"], "seed": config["seed"],
                "split": split["summary"], "epochs_run": config.get("epochs_run"), "params": config.get("params"),
                "calibration_images": len(x_calibration)}
    split_copy = out / f"{name}_split.json"
    shutil.copyfile(run / "split.json", split_copy)
    training["split_file"] = split_copy.name
    metadata = {}
    for file in files:
        precision = file["precision"]
        metadata[precision] = {
            "name": f"{name}_{precision}", "task": task, "precision": precision, "labels": labels,
            "positive_label": labels[1], "input": tensors[precision][0], "output": tensors[precision][1],
            "preprocessing": spec, "threshold": threshold, "threshold_policy": config["threshold_policy"],
            "training": training, "metrics": metrics[precision],
            "keras_validation_metrics": report_config.get("validation"),
        }
        write_metadata(out / file["file"], metadata[precision])
    verification = {
        "name": name, "task": task, "test_images": int(len(y_test)), "calibration_images": len(x_calibration),
        "threshold": threshold, "metrics": metrics, "agreement": agreement, "tolerance_pp": args.tolerance,
        "int8_accuracy_drop_pp": (metrics["float32"]["accuracy"] - metrics["int8"]["accuracy"]) * 100,
        "int8_size_ratio": size_ratio, "passed": passed, "files": files,
        "test_scores": {"paths": [s.path for s in test_samples], "labels": y_test.tolist(),
                        **{k: [round(float(v), 6) for v in all_scores[k]] for k in flatbuffers}},
        "converted_with": {"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
                           "python": platform.python_version(), "machine": platform.machine()},
    }
    (out / f"{name}_verification.json").write_text(json.dumps(verification, indent=2) + "\n")
    (out / f"{name}_verification.md").write_text(verification_markdown(verification))
    from convert.model_card import model_card

    (out / f"{name}_MODEL_CARD.md").write_text(model_card(name, task, verification, metadata["int8"]))
    print(metrics_table(metrics))
    print(f"float32/int8 agreement {agreement:.4f}; int8 size {size_ratio:.1%} of float32; "
          f"int8 accuracy drop {verification['int8_accuracy_drop_pp']:.2f} pp (tolerance {args.tolerance} pp): "
          f"{'PASS' if passed else 'FAIL'}")
    return passed


def verification_markdown(v: dict) -> str:
    files = "\n".join(f"| `{f['file']}` | {f['precision']} | {f['size_bytes']:,} | `{f['sha256']}` |" for f in v["files"])
    return f"""# {v['name']}: conversion verification

Held-out test split: {v['test_images']} images; int8 calibrated on {v['calibration_images']} training images.
Same threshold ({v['threshold']:.4f}) for every model.

{metrics_table(v['metrics'])}

- float32 / int8 agreement: {v['agreement']:.4f}
- int8 accuracy drop: {v['int8_accuracy_drop_pp']:.2f} percentage points (tolerance {v['tolerance_pp']}): **{'PASS' if v['passed'] else 'FAIL'}**
- int8 file size: {v['int8_size_ratio']:.1%} of float32

| file | precision | bytes | SHA-256 |
|---|---|---|---|
{files}

Converted with TensorFlow {v['converted_with']['tensorflow']}, Keras {v['converted_with']['keras']},
Python {v['converted_with']['python']} on {v['converted_with']['machine']}.
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from convert.tflite import ConversionError
    except ImportError as error:
        print(f"edge-convert: needs the train extra (pip install '.[train]'): {error}", file=sys.stderr)
        return 2
    try:
        return 0 if convert(args) else 1
    except (FileNotFoundError, ValueError, ConversionError) as error:
        print(f"edge-convert: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
