"""Give an already shipped model the logit output (convert/tflite.py logit_output) without its training
run: the .tflite files lose their final sigmoid, and the sidecars, verification and model card follow.

The brain model was trained on a lent GPU machine whose fold models are not kept, so it cannot be
re-converted here; its int8 sigmoid output saturated (every confident scan read 0.996 or 1.0). With
no out-of-fold logits to fit a calibration on, it gets calibration `none` (sigmoid of the logit:
the same scale, threshold and uncertain band as before, with the resolution back) and a session rule
chosen on the recorded out-of-fold per-group means. `make brain-model` on a GPU machine re-converts
it with a fitted calibration.

    python -m convert.logit_head models --name brain [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from convert.model_card import model_card
from convert.records import tensor_summary, verification_markdown
from convert.session import choose_session_rule, recorded_group_table
from convert.tflite import logit_output
from edge.calibration import Calibration
from edge.classifier import Classifier
from edge.interpreter import make_interpreter, output_details
from edge.labels import DISPLAY_NAMES
from edge.metadata import sha256_of, write_metadata
from train.data_root import data_root, resolve

NOT_CALIBRATED = ("its fold models (PyTorch, on a lent GPU) are not kept, so there are no out-of-fold logits to fit "
                  "a calibration on; `make backbone-runs brain-model` on a GPU machine re-converts it with one")


def migrate(folder: Path, name: str, root: Path) -> None:
    verification_path = folder / f"{name}_verification.json"
    verification = json.loads(verification_path.read_text())
    split = json.loads((folder / f"{name}_split.json").read_text())
    fold_of_group = {sample["group"]: sample["fold"] for sample in split["samples"]}
    for file in verification["files"]:
        path = folder / file["file"]
        metadata = json.loads(path.with_suffix(".json").read_text())
        if metadata.get("output_kind") == "logit":
            raise ValueError(f"{path}: already outputs the logit")
        path.write_bytes(logit_output(path.read_bytes()))
        interpreter, _ = make_interpreter(path, runtime="ai-edge-litert")
        labels = metadata["labels"]
        session = choose_session_rule(recorded_group_table(verification["per_group_int8"], labels), fold_of_group,
                                      tuple(labels))
        metadata.update({"output": tensor_summary(output_details(interpreter)), "output_kind": "logit",
                         "display_names": {label: DISPLAY_NAMES[label] for label in labels},
                         "calibration": {**Calibration("none").as_metadata(), "why": NOT_CALIBRATED},
                         "threshold_uncalibrated": metadata["threshold"]})
        if "session" in metadata:
            metadata["session"] = {"rule": session["rule"], "spread_k": session["spread_k"],
                                   "chosen_on": session["chosen_on"] + " (per-group means of the int8 sigmoid outputs "
                                                                     "recorded at conversion)"}
            metadata["uncertain_margin"] = metadata.pop("abstain_margin")
            metadata["uncertain_policy"] = metadata.pop("abstain_policy").replace("--abstain answers", "answers")
            verification.setdefault("session", {})[file["precision"]] = session
        metadata.pop("sha256", None)
        write_metadata(path, metadata)
        file.update({"size_bytes": path.stat().st_size, "sha256": sha256_of(path)})
    reference = verification["reference_scores"]
    for precision in ("float32", "int8"):
        with Classifier(folder / f"{name}_{precision}.tflite", check_quality=False) as classifier:
            reference[precision] = [round(classifier.classify(resolve(p, root)).probability, 6) for p in reference["paths"]]
    verification["calibration"] = {"int8": {"method": "none", "why": NOT_CALIBRATED}}
    verification_path.write_text(json.dumps(verification, indent=2) + "\n")
    (folder / f"{name}_verification.md").write_text(verification_markdown(verification))
    int8 = json.loads((folder / f"{name}_int8.json").read_text())
    (folder / f"{name}_MODEL_CARD.md").write_text(model_card(name, int8["task"], verification, int8))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.logit_head", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="folder of the shipped models")
    parser.add_argument("--name", required=True, help="model name, e.g. brain")
    parser.add_argument("--data", metavar="DIR", help="data root of the verification's reference images")
    args = parser.parse_args(argv)
    try:
        migrate(Path(args.folder), args.name, data_root(args.data))
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"logit_head: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
