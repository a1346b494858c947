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
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge.calibration import Calibration, logit, sigmoid
from edge.interpreter import feature_details, input_details, make_interpreter, output_details, scores_and_features
from edge.labels import DISPLAY_NAMES
from edge.metadata import sha256_of, write_metadata
from train.data_root import PATHS_NOTE, data_root, relative_to_root
from train.datasets import Sample
from train.extra import missing_train_extra

UNCERTAIN_SHARE = 0.10
REFERENCE_EVERY = 10  # cross-validated models: the shipped model's scores on every 10th image, for check_models


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder of edge-train, or its model.keras")
    parser.add_argument("--out", default="models", help="folder for the .tflite files, metadata and reports")
    parser.add_argument("--name", help="model name (default: the task, e.g. leukemia)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images for int8 calibration")
    parser.add_argument("--float16", action="store_true", help="also write <name>_float16.tflite")
    parser.add_argument("--dynamic", action="store_true", help="also write <name>_dynamic.tflite (dynamic range)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="largest allowed drop of int8 accuracy below float32, in percentage points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="runs/cache", help="folder for preprocessed arrays (one .npz per spec)")
    parser.add_argument("--data", metavar="DIR",
                        help="data root the run's split paths are relative to (default: $EDGE_DATA, else shared/data beside the checkout)")
    return parser.parse_args(argv)


def within_tolerance(float_metrics: dict, int8_metrics: dict, tolerance_pp: float) -> bool:
    return (float_metrics["accuracy"] - int8_metrics["accuracy"]) * 100 <= tolerance_pp


def tensor_summary(details: dict) -> dict:
    scale, zero_point = details["quantization"]
    return {"shape": [int(v) for v in details["shape"]], "dtype": np.dtype(details["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}}


def _arrays(split: dict, spec: dict, cache: str | None):
    """-> (samples, x, y, fold (-1 when none), subset) for every image of the split (cached)."""
    from train.arrays import cached_arrays

    rows = split["samples"]
    samples, x, y, _ = cached_arrays([Sample(r["path"], r["label"], r.get("patient")) for r in rows], spec, cache)
    fold_of_path = {r["path"]: r.get("fold", -1) for r in rows}
    subset_of_path = {r["path"]: r["subset"] for r in rows}
    return (samples, x, y, np.array([fold_of_path[s.path] for s in samples]),
            np.array([subset_of_path[s.path] for s in samples]))


def _calibration(x: np.ndarray, y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A stratified, seeded subset of training images (never augmented)."""
    from sklearn.model_selection import train_test_split

    if count >= len(x):
        return x
    picked, _ = train_test_split(x, train_size=count, stratify=y, random_state=seed)
    return picked


def _outputs_of(flatbuffers: dict[str, bytes], x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(logits, pooled features) of every converted flatbuffer on x, with ai-edge-litert (the
    verification runtime)."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for precision, flatbuffer in flatbuffers.items():
            path = Path(folder) / f"{precision}.tflite"
            path.write_bytes(flatbuffer)
            interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
            results[precision] = scores_and_features(interpreter, x)
    return results


def _logits_of(flatbuffers: dict[str, bytes], x: np.ndarray) -> dict[str, np.ndarray]:
    """The score output of every converted flatbuffer on x, as logits (an averaged model's probability
    is turned into its logit)."""
    from convert.tflite import score_output_kind

    return {precision: Calibration(output_kind=score_output_kind(flatbuffers[precision])).logits(outputs[0])
            for precision, outputs in _outputs_of(flatbuffers, x).items()}


def _unseen_distances(flatbuffers: dict[str, bytes], layer_sizes: list[int], x_train, y_train,
                      x_unseen) -> dict[str, np.ndarray]:
    """Per precision: the domain check fitted on the training images' features, applied to unseen ones."""
    from convert.domain import fitted_check

    train_outputs, unseen_outputs = _outputs_of(flatbuffers, x_train), _outputs_of(flatbuffers, x_unseen)
    return {precision: fitted_check(train_outputs[precision][1], y_train, layer_sizes).distances(unseen_outputs[precision][1])
            for precision in flatbuffers}


def _fold_scores(run: Path, config: dict, x, y, fold_of, precisions, args) -> tuple[dict, dict, dict]:
    """Out-of-fold scores of each fold's model at the chosen epoch, as Keras and as every converted
    precision (each quantized with its own fold's training cells): quantization measured on cells
    none of the models saw. -> (uncalibrated probabilities, out-of-domain distances of float32 and
    int8, each fold's check fitted on its own training folds' features; the converted models' logits)."""
    import keras

    from convert.tflite import convert_keras
    from train.model import with_features

    pooled = {name: np.full(len(y), np.nan, dtype=np.float32) for name in ["keras", *precisions]}
    logits = {name: np.full(len(y), np.nan) for name in precisions}
    distances = {precision: np.full(len(y), np.nan) for precision in ("float32", "int8")}
    for fold, fold_model in enumerate(config["cv"]["fold_models"]):
        held = fold_of == fold
        model = keras.models.load_model(run / fold_model)
        featured, layer_sizes = with_features(model)
        flatbuffers = convert_keras(featured, precisions, _calibration(x[~held], y[~held], args.calibration, args.seed))
        pooled["keras"][held] = model.predict(x[held], batch_size=256, verbose=0).ravel()
        for precision, fold_logits in _logits_of(flatbuffers, x[held]).items():
            logits[precision][held] = fold_logits
            pooled[precision][held] = sigmoid(fold_logits)
        checked = {p: flatbuffers[p] for p in distances}
        for precision, fold_distances in _unseen_distances(checked, layer_sizes, x[~held], y[~held], x[held]).items():
            distances[precision][held] = fold_distances
        print(f"fold {fold}: converted and scored {int(held.sum())} held-out images", flush=True)
    return pooled, distances, logits


def _calibration_of(logits, y, fold_of, cross_validated: bool) -> tuple[Calibration, dict]:
    """The calibration fitted on the pooled out-of-fold logits (convert/calibration.py); none for a model
    verified on one test split (too few images to fit and judge it)."""
    from convert.calibration import choose, scores

    if not cross_validated:
        none = Calibration("none", output_kind="logit")
        return none, {**none.as_metadata(), "uncalibrated": scores(sigmoid(logits), y)}
    return choose(logits, y, fold_of)


def _answer_rules(calibration: Calibration, logits, y, groups, split: dict, threshold: float,
                  labels: tuple[str, str], cross_validated: bool) -> dict:
    """On the calibrated out-of-fold probabilities: the threshold restated, the uncertain band, the
    session rule (chosen across folds: none for a model verified on one test split)."""
    from convert.session import choose_session_rule, group_table

    probabilities = calibration.probabilities(logits)
    calibrated_threshold = calibration.probability(float(logit(threshold)))
    fold_of_group = {r["group"]: r.get("fold", 0) for r in split["samples"]}
    table = group_table(y, probabilities, groups, calibrated_threshold)
    return {"threshold": calibrated_threshold,
            "uncertain_margin": float(np.quantile(np.abs(probabilities - calibrated_threshold), UNCERTAIN_SHARE)),
            "session": choose_session_rule(table, fold_of_group, labels) if cross_validated else None}


def convert(args: argparse.Namespace) -> bool:
    from train.crossval import per_group_calls
    from train.metrics import evaluate
    from train.report import metrics_table
    from train.splits import load_split, save_split

    root = data_root(args.data)
    run = Path(args.run)
    model_path = run if run.suffix == ".keras" else run / "model.keras"
    run = model_path.parent
    for needed in (model_path, run / "config.json", run / "split.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: not found (expected an edge-train run folder)")
    config = json.loads((run / "config.json").read_text())
    split = load_split(run / "split.json", root)
    task, labels, spec, threshold = config["task"], config["labels"], config["preprocessing"], config["threshold"]
    cross_validated = "cv" in config
    name = args.name or task
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import keras

    from convert.domain import IN_DOMAIN_FLAG_RATE, fitted_check, flag_threshold
    from convert.tflite import convert_keras, score_output_kind
    from train.model import with_features  # (also registers the Mirror layer of test-time-augmented models)

    samples, x, y, fold_of, subset = _arrays(split, spec, args.cache)
    x_calibration = _calibration(x[subset == "train"], y[subset == "train"], args.calibration, args.seed)
    model = keras.models.load_model(model_path)
    precisions = ["float32", "int8"] + ["float16"] * args.float16 + ["dynamic"] * args.dynamic
    print(f"converting {model_path} ({', '.join(precisions)}), calibrating on {len(x_calibration)} images", flush=True)
    featured, layer_sizes = with_features(model)
    flatbuffers = convert_keras(featured, precisions, x_calibration)
    files, tensors = [], {}
    for precision, flatbuffer in flatbuffers.items():
        path = out / f"{name}_{precision}.tflite"
        path.write_bytes(flatbuffer)
        interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
        tensors[precision] = (tensor_summary(input_details(interpreter)), tensor_summary(output_details(interpreter)),
                              tensor_summary(feature_details(interpreter)))
        files.append({"file": path.name, "precision": precision, "size_bytes": path.stat().st_size,
                      "sha256": sha256_of(path)})

    fit_on = subset == "train"
    checked = ("float32", "int8")
    train_features = _outputs_of({p: flatbuffers[p] for p in checked}, x[fit_on])
    if cross_validated:
        evaluated_on = (f"pooled out-of-fold scores of the {config['cv']['folds']} fold models (epoch "
                        f"{config['cv']['epoch']}), each converted and calibrated on its own training folds")
        all_scores, unseen_distances, logits = _fold_scores(run, config, x, y, fold_of, precisions, args)
        y_eval = y
        reference = np.arange(0, len(y), REFERENCE_EVERY)
        shipped = _logits_of({p: flatbuffers[p] for p in ("float32", "int8")}, x[reference])
    else:
        evaluated_on = "the held-out test split"
        test = np.flatnonzero(subset == "test")
        y_eval = y[test]
        test_outputs = _outputs_of(flatbuffers, x[test])
        logits = _logits_of(flatbuffers, x[test])
        all_scores = {"keras": model.predict(x[test], batch_size=128, verbose=0).ravel(),
                      **{p: sigmoid(value) for p, value in logits.items()}}
        unseen_distances = {p: fitted_check(train_features[p][1], y[fit_on], layer_sizes).distances(test_outputs[p][1])
                            for p in checked}
        reference = test
        shipped = {p: logits[p] for p in ("float32", "int8")}
    metrics = {key: evaluate(y_eval, value, threshold, tuple(labels)) for key, value in all_scores.items()}
    predictions = {key: value >= threshold for key, value in all_scores.items()}
    agreement = float(np.mean(predictions["float32"] == predictions["int8"]))
    passed = within_tolerance(metrics["float32"], metrics["int8"], args.tolerance)
    size_ratio = files[1]["size_bytes"] / files[0]["size_bytes"]
    domain = {p: fitted_check(train_features[p][1], y[fit_on], layer_sizes, flag_threshold(unseen_distances[p])) for p in checked}
    group_of = {r["path"]: r["group"] for r in split["samples"]}
    evaluated = np.arange(len(y)) if cross_validated else test
    groups = np.array([group_of[samples[i].path] for i in evaluated])
    calibrations, calibration_records, answers = {}, {}, {}
    for p in checked:
        calibrations[p], calibration_records[p] = _calibration_of(logits[p], y_eval, fold_of[evaluated], cross_validated)
        answers[p] = _answer_rules(calibrations[p], logits[p], y_eval, groups, split, threshold, tuple(labels),
                                   cross_validated)

    report_config = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    training = {"data": config["data"], "grouped_by": config["grouped_by"], "seed": config["seed"],
                "split": split["summary"], "epochs_run": config.get("epochs_run"), "params": config.get("params"),
                "calibration_images": len(x_calibration)}
    if cross_validated:
        training["recipe"] = config["recipe"]
        training["cv"] = config["cv"]
    split_copy = out / f"{name}_split.json"
    save_split(split, split_copy, root)
    training["split_file"] = split_copy.name
    metadata = {}
    for file in files:
        precision = file["precision"]
        metadata[precision] = {
            "name": f"{name}_{precision}", "task": task, "precision": precision, "labels": labels,
            "positive_label": labels[1], "input": tensors[precision][0], "output": tensors[precision][1],
            "output_kind": score_output_kind(flatbuffers[precision]), "display_names": {label: DISPLAY_NAMES[label] for label in labels},
            "preprocessing": spec, "threshold": threshold, "threshold_policy": config["threshold_policy"],
            "training": training, "metrics_evaluated_on": evaluated_on, "metrics": metrics[precision],
            "keras_validation_metrics": report_config.get("validation"),
        }
        if precision in domain:
            rules = answers[precision]
            metadata[precision].update({
                "calibration": {**calibrations[precision].as_metadata(),
                                **{k: v for k, v in calibration_records[precision].items() if k in ("chosen_by", "compared")},
                                "fitted_on": evaluated_on},
                "threshold": rules["threshold"], "threshold_uncalibrated": threshold,
                "threshold_policy": f"{config['threshold_policy']}, stated on the calibrated probability",
                "features": tensors[precision][2],
                "domain": {**domain[precision].as_metadata(),
                           "fitted_on": f"pooled features of the {int(fit_on.sum())} training images",
                           "threshold_policy": f"flags {IN_DOMAIN_FLAG_RATE:.0%} of {evaluated_on}"},
                **({"session": {k: rules["session"][k] for k in ("rule", "spread_k", "chosen_on")}}
                   if rules["session"] else {}),
                "uncertain_margin": rules["uncertain_margin"],
                "uncertain_policy": f"'uncertain' within this distance of the threshold (calibrated): "
                                    f"{UNCERTAIN_SHARE:.0%} of {evaluated_on}"})
        write_metadata(out / file["file"], metadata[precision])
    verification = {
        "name": name, "task": task, "evaluated_on": evaluated_on, "test_images": int(len(y_eval)),
        "calibration_images": len(x_calibration),
        "threshold": threshold, "metrics": metrics, "agreement": agreement, "tolerance_pp": args.tolerance,
        "int8_accuracy_drop_pp": (metrics["float32"]["accuracy"] - metrics["int8"]["accuracy"]) * 100,
        "int8_weighted_f1_drop_pp": (metrics["float32"]["weighted_f1"] - metrics["int8"]["weighted_f1"]) * 100,
        "int8_size_ratio": size_ratio, "passed": passed, "files": files,
        "reference_scores": {"held_out": not cross_validated, "image_paths": PATHS_NOTE,
                             "paths": [relative_to_root(samples[i].path, root) for i in reference],
                             "labels": y[reference].tolist(),
                             **{k: [round(float(v), 6) for v in calibrations[k].probabilities(shipped[k])]
                                for k in shipped}},
        "converted_with": {"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
                           "python": platform.python_version(), "machine": platform.machine()},
    }
    verification["out_of_domain"] = {p: {"threshold": domain[p].threshold,
                                         "flag_rate_unseen": float(np.mean(unseen_distances[p] > domain[p].threshold)),
                                         "distance_median_unseen": float(np.median(unseen_distances[p])),
                                         "distances_unseen": [round(float(v), 6) for v in unseen_distances[p]]}
                                     for p in checked}
    verification["calibration"] = calibration_records
    verification["session"] = {p: answers[p]["session"] for p in checked}
    if cross_validated:
        int8_probabilities = calibrations["int8"].probabilities(logits["int8"])
        verification["per_group_int8"] = per_group_calls(y, int8_probabilities, groups, answers["int8"]["threshold"],
                                                         tuple(labels))
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
    from train.report import metrics_table

    files = "\n".join(f"| `{f['file']}` | {f['precision']} | {f['size_bytes']:,} | `{f['sha256']}` |" for f in v["files"])
    return f"""# {v['name']}: conversion verification

Evaluated on {v['evaluated_on']}: {v['test_images']} images; int8 calibrated on {v['calibration_images']} training images.
Same threshold ({v['threshold']:.4f}) for every model.

{metrics_table(v['metrics'])}

- float32 / int8 agreement: {v['agreement']:.4f}
- int8 accuracy drop: {v['int8_accuracy_drop_pp']:.2f} percentage points (tolerance {v['tolerance_pp']}): **{'PASS' if v['passed'] else 'FAIL'}**
- int8 weighted F1 drop: {v['int8_weighted_f1_drop_pp']:.2f} percentage points
- int8 file size: {v['int8_size_ratio']:.1%} of float32

| file | precision | bytes | SHA-256 |
|---|---|---|---|
{files}

Converted with TensorFlow {v['converted_with']['tensorflow']}, Keras {v['converted_with']['keras']},
Python {v['converted_with']['python']} on {v['converted_with']['machine']}.
"""


def main(argv=None) -> int:
    missing = missing_train_extra("edge-convert")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    args = parse_args(argv)
    from convert.tflite import ConversionError

    try:
        return 0 if convert(args) else 1
    except (FileNotFoundError, ValueError, ConversionError) as error:
        print(f"edge-convert: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
