"""What conversion writes beside the .tflite files: the sidecar metadata of each model (`<model>.json`,
read on the device by edge/metadata.py), the verification record (`<name>_verification.json` and
`.md`, read by convert/check_models.py and the model card)."""
from __future__ import annotations

import platform

import numpy as np

from edge.labels import DISPLAY_NAMES
from train.data_root import PATHS_NOTE, relative_to_root
from train.report import metrics_table


def tensor_summary(details: dict) -> dict:
    """An interpreter tensor's shape, type and quantization, as the sidecar states them."""
    scale, zero_point = details["quantization"]
    return {"shape": [int(v) for v in details["shape"]], "dtype": np.dtype(details["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)}}


def within_tolerance(float_metrics: dict, int8_metrics: dict, tolerance_pp: float) -> bool:
    return (float_metrics["accuracy"] - int8_metrics["accuracy"]) * 100 <= tolerance_pp


def training_record(config, split: dict, calibration_images: int, split_file: str) -> dict:
    """The sidecar's "training": data, grouping, recipe and cross-validation of the run (a RunConfig)."""
    return {"data": config.data, "grouped_by": config.grouped_by, "seed": config.seed, "split": split["summary"],
            "epochs_run": config.epochs_run, "params": config.params, "calibration_images": calibration_images,
            "recipe": config.recipe.to_json(), "cv": config.cv.to_json(), "split_file": split_file}


def model_metadata(name: str, precision: str, config, tensors: tuple, output_kind: str, training: dict,
                   evaluated_on: str, metrics: dict) -> dict:
    """A converted model's sidecar before its checks (see checks_metadata): labels, tensors,
    preprocessing, the uncalibrated threshold, training and the measured metrics."""
    labels = list(config.labels)
    return {
        "name": f"{name}_{precision}", "task": config.task, "precision": precision, "labels": labels,
        "positive_label": labels[1], "input": tensors[0], "output": tensors[1],
        "output_kind": output_kind, "display_names": {label: DISPLAY_NAMES[label] for label in labels},
        "preprocessing": config.preprocessing, "threshold": config.threshold, "threshold_policy": config.threshold_policy,
        "training": training, "metrics_evaluated_on": evaluated_on, "metrics": metrics,
        "keras_validation_metrics": None,  # a field of the single-split runs' sidecars, kept in the layout
    }


def checks_metadata(config, features: dict, calibration, calibration_record: dict, domain, domain_fitted_on: str,
                    flag_rate: float, answers: dict, evaluated_on: str, uncertain_share: float) -> dict:
    """The sidecar fields of a checked model (float32, int8): calibration, the threshold restated on the
    calibrated probability, the out-of-domain check, the session rule and the uncertain band."""
    return {
        "calibration": {**calibration.as_metadata(),
                        **{k: v for k, v in calibration_record.items() if k in ("chosen_by", "compared")},
                        "fitted_on": evaluated_on},
        "threshold": answers["threshold"], "threshold_uncalibrated": config.threshold,
        "threshold_policy": f"{config.threshold_policy}, stated on the calibrated probability",
        "features": features,
        "domain": {**domain.as_metadata(), "fitted_on": domain_fitted_on,
                   "threshold_policy": f"flags {flag_rate:.0%} of {evaluated_on}"},
        **({"session": {k: answers["session"][k] for k in ("rule", "spread_k", "chosen_on")}}
           if answers["session"] else {}),
        "uncertain_margin": answers["uncertain_margin"],
        "uncertain_policy": f"'uncertain' within this distance of the threshold (calibrated): "
                            f"{uncertain_share:.0%} of {evaluated_on}"}


def verification_record(name: str, config, evaluated_on: str, images: int, calibration_images: int, metrics: dict,
                        agreement: float, tolerance: float, files: list[dict], reference: dict, versions: dict) -> dict:
    """The verification's figures: every model's metrics, int8 against float32 and the tolerance, the
    files, the reference scores check_models compares against (see reference_scores)."""
    return {
        "name": name, "task": config.task, "evaluated_on": evaluated_on, "test_images": int(images),
        "calibration_images": calibration_images,
        "threshold": config.threshold, "metrics": metrics, "agreement": agreement, "tolerance_pp": tolerance,
        "int8_accuracy_drop_pp": (metrics["float32"]["accuracy"] - metrics["int8"]["accuracy"]) * 100,
        "int8_weighted_f1_drop_pp": (metrics["float32"]["weighted_f1"] - metrics["int8"]["weighted_f1"]) * 100,
        "int8_size_ratio": files[1]["size_bytes"] / files[0]["size_bytes"],
        "passed": within_tolerance(metrics["float32"], metrics["int8"], tolerance), "files": files,
        "reference_scores": reference,
        "converted_with": {**versions, "python": platform.python_version(), "machine": platform.machine()},
    }


def reference_scores(paths: list[str], labels, probabilities: dict[str, np.ndarray], root) -> dict:
    """The shipped models' calibrated probabilities on some of the run's images, for check_models."""
    return {"held_out": False, "image_paths": PATHS_NOTE, "paths": [relative_to_root(p, root) for p in paths],
            "labels": [int(v) for v in labels],
            **{k: [round(float(v), 6) for v in values] for k, values in probabilities.items()}}


def out_of_domain_record(domain: dict, distances: dict[str, np.ndarray]) -> dict:
    return {p: {"threshold": domain[p].threshold,
                "flag_rate_unseen": float(np.mean(distances[p] > domain[p].threshold)),
                "distance_median_unseen": float(np.median(distances[p])),
                "distances_unseen": [round(float(v), 6) for v in distances[p]]}
            for p in domain}


def verification_markdown(v: dict) -> str:
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
