"""MODEL_CARD.md for a converted model, written from its verification figures."""
from __future__ import annotations

from train.report import metrics_table

INTENDED_USE = {
    "brain": "Flag axial brain MRI slices (the Kaggle / Br35H style of image) that show a tumour, to help "
             "prioritise review. One slice at a time, no localisation, no tumour type.",
    "leukemia": "Classify a single segmented white blood cell (C-NMC style: one cell on a black background) as a "
                "leukemic B-lymphoblast (`all`) or a normal B-lymphoid cell (`hem`).",
}
LIMITATIONS = {
    "brain": "Trained on two public Kaggle collections of unknown scanners and protocols, many images with "
             "near-duplicates (the split keeps duplicate groups on one side). Not validated on any clinical "
             "population; sequences, orientations and pathologies outside these sets are out of domain. The "
             "training data are single slices: whole-series (DICOM study) accuracy was not measured, and a series "
             "summary's call is a stated rule over its slices, not a validated diagnosis.",
    "leukemia": "C-NMC has few patients (27 ALL, 14 normal) and two normal subjects hold most normal cells, so "
                "every figure rests on 14 normal subjects and varies from fold to fold (see the spread). Stain and "
                "microscope differences between sites shift the input; cells cropped from other smears are out of "
                "domain: the domain check flags every white cell of the Taleqani fields, at the camera's scale and "
                "at the training scale (benchmarks/FIELD_SCALE.md). The input keeps the cell's size (a fixed "
                "window of the C-NMC magnification): cells from another magnification must be rescaled first "
                "(field mode does, from the red cells or --um-per-pixel).",
}


def _data_section(metadata: dict) -> str:
    training = metadata["training"]
    if "cv" not in training:
        split_rows = "\n".join(f"| {subset} | {s['images']} | {s['groups']} |" for subset, s in training["split"].items())
        return f"""Trained on {', '.join(training['data'])}, split by {training['grouped_by']}
(seed {training['seed']}); the test split was never seen in training, early stopping,
threshold choice or calibration.

| subset | images | groups |
|---|---|---|
{split_rows}"""
    cv, recipe = training["cv"], training["recipe"]
    spread = cv["fold_mean_sd"]
    return f"""Trained on all of {', '.join(training['data'])}: {cv['cells']} images of {cv['patients']} groups
({training['grouped_by']}). The recipe (preprocessing, augmentation `{recipe['augment']}`, {cv['epoch']} epochs of a
cosine schedule over {recipe['horizon']}) and the threshold were chosen by {cv['folds']}-fold cross-validation grouped
the same way, on pooled out-of-fold scores; no group was in two folds. The figures below are those of the
{cv['folds']} fold models on the groups each never saw (pooled), so they estimate what the shipped model, trained
on every group, does on a new one.

| out-of-fold (fold models, {'PyTorch' if recipe.get('framework') == 'pytorch' else 'Keras'}) | pooled | fold mean | fold sd |
|---|---|---|---|
{chr(10).join(f"| {key} | {cv['pooled'][key]:.4f} | {spread[key]['mean']:.4f} | {spread[key]['sd']:.4f} |" for key in ("accuracy", "weighted_f1", "sensitivity", "specificity", "roc_auc"))}

Groups whose majority call is right: {cv['groups_majority_right']} of {cv['groups']}; the per-patient (per-group)
table and the epoch curve are in `training/{metadata['task']}/cv.md`, the recipes compared in the other tables there.
{_reproduce(metadata['task'], recipe)}{_tta_note(cv)}"""


def _reproduce(task: str, recipe: dict) -> str:
    if recipe.get("framework") != "pytorch":
        return f"Reproduce with `make {task}-model` (`make {task}-experiments` for the comparison)."
    return (f"Reproduce with `make backbone-arrays`, then `make backbone-runs` on a machine with PyTorch and a GPU, "
            f"then `make {task}-model`; the backbone comparison that chose it is `training/{task}/BACKBONES.md` "
            f"(`make backbone-tables`); `make {task}-experiments` reruns the other recipes compared.")


def _network(metadata: dict) -> str:
    recipe = metadata["training"].get("recipe", {})
    if recipe.get("backbone") != "lite0":
        return "Compact CNN (Conv-BN-ReLU stem, depthwise-separable blocks, one sigmoid unit)"
    trained = (" (trained in PyTorch on a GPU, `python -m train.torch_cv`, its weights moved into the Keras model that "
               "was converted)" if recipe.get("framework") == "pytorch" else "")
    return ("ImageNet-pretrained EfficientNet-Lite0 (ReLU6, no squeeze-excite), fine-tuned with one sigmoid unit"
            + trained)


def _tta_note(cv: dict) -> str:
    if not cv.get("test_time_augmentation"):
        return ""
    return (f"\n\nTest-time augmentation ({cv['test_time_augmentation']}) is inside the model: it scores the image and its "
            "mirror image and averages them, in one invoke.")


def model_card(name: str, task: str, verification: dict, metadata: dict) -> str:
    files = "\n".join(f"| `{f['file']}` | {f['size_bytes']:,} | `{f['sha256'][:16]}...` |" for f in verification["files"])
    return f"""# Model card: {name}

**Research use only. Not a medical device**: not cleared or approved for diagnosis, and not to be used for
clinical decisions.

## Intended use
{INTENDED_USE[task]}

Labels: `{metadata['labels'][0]}` ({_display(metadata, 0)}, negative), `{metadata['labels'][1]}` ({_display(metadata, 1)},
positive). Decision threshold {metadata['threshold']:.4f} on the calibrated probability of
`{metadata['labels'][1]}`, chosen by: {metadata['threshold_policy']}.

## Data and split
{_data_section(metadata)}

## Model
{_network(metadata)}, {metadata['training']['params']:,}
parameters, input {metadata['input']['shape']} ({metadata['preprocessing']}). The int8 model is fully
integer (int8 weights, activations, input and output), calibrated on
{verification['calibration_images']} training images.

| file | bytes | SHA-256 |
|---|---|---|
{files}

## Results on {verification['evaluated_on']}
{metrics_table(verification['metrics'])}

float32 / int8 agreement: {verification['agreement']:.4f} of these images get the same label; int8 weighted F1
{verification['int8_weighted_f1_drop_pp']:+.2f} points below float32 (negative: above).

{_per_group_section(verification)}
## Probabilities
{_calibration_section(verification, metadata)}

## Knowing when not to answer
{_abstention_section(verification, metadata)}

## Limitations
{LIMITATIONS[task]}
"""


GROUP_TABLE_ROWS = 60  # every group listed up to this many (41 patients); beyond, the wrong ones only


def _per_group_section(verification: dict) -> str:
    groups = verification.get("per_group_int8")
    if not groups:
        return ""
    wrong = [g for g in groups if not g["majority_right"]]
    shown = groups if len(groups) <= GROUP_TABLE_ROWS else wrong
    rows = "\n".join(f"| {g['group']} | {g['label']} | {g['images']} | {g['mean_score']:.3f} | {g['positive_share']:.1%} | "
                     f"{'yes' if g['majority_right'] else '**no**'} |" for g in shown)
    which = "every group" if shown is groups else f"the {len(wrong)} of {len(groups)} groups whose majority call is wrong"
    return f"""## Per patient or group (int8, out of fold: {which})
| group | label | images | mean probability | called positive | majority right |
|---|---|---|---|---|---|
{rows}

"""


def _display(metadata: dict, index: int) -> str:
    code = metadata["labels"][index]
    return (metadata.get("display_names") or {}).get(code, code)


def reliability_rows(record: dict) -> str:
    """The reliability diagram as a table: each bin of predicted probability against what was observed."""
    def figure(value):
        return "" if value is None else f"{value:.3f}"

    rows = "\n".join(f"| {r['bin'][0]:.1f}-{r['bin'][1]:.1f} | {r['count']} | {figure(r['predicted'])} | "
                     f"{figure(r['observed'])} |" for r in record["reliability"])
    return f"| predicted | images | mean predicted | observed share positive |\n|---|---|---|---|\n{rows}"


def _calibration_section(verification: dict, metadata: dict) -> str:
    record = (verification.get("calibration") or {}).get("int8")
    if record is None:
        return "No calibration record."
    calibration = metadata.get("calibration", {"method": "none"})
    if "calibrated" not in record:
        return (f"The int8 model outputs the logit of `{metadata['labels'][1]}`; the device reports sigmoid(logit), "
                f"**not calibrated**: {record.get('why', 'no out-of-fold scores to fit a calibration on')}. The shipped "
                f"model got its logit output from `python -m convert.logit_head models --name {metadata['task']}`.")
    compared = ", ".join(f"{method} {figures['ece']:.4f}" for method, figures in record["compared"].items())
    return f"""The int8 model outputs the logit of `{metadata['labels'][1]}`; the device maps it to a probability with
{calibration['method']} scaling (slope {calibration['slope']:.4f}, intercept {calibration['intercept']:.4f}), fitted on
{metadata['metrics_evaluated_on']}. Method chosen by {record['chosen_by']}: cross-validated ECE {compared}.

| int8, out of fold | ECE (10 bins) | Brier |
|---|---|---|
| sigmoid of the logit (uncalibrated) | {record['uncalibrated']['ece']:.4f} | {record['uncalibrated']['brier']:.4f} |
| calibrated, the map fitted on all of them (in sample) | {record['fitted_on_all']['ece']:.4f} | {record['fitted_on_all']['brier']:.4f} |
| calibrated, each fold by the map fitted on the other folds (honest) | {record['calibrated']['ece']:.4f} | {record['calibrated']['brier']:.4f} |

Reliability of the calibrated probabilities (out of fold):

{reliability_rows(record['calibrated'])}"""


def _session_sentence(session: dict, labels: list[str]) -> str:
    if session is None:
        return "This model has no session rule."
    rule = session["rule"]
    held = session.get("held_out", {})
    comparison = "; ".join(f"{name.replace('_', ' ')}: {c['right']} right, {c['uncertain']} uncertain, {c['wrong']} wrong"
                           for name, c in held.items())
    sides = []
    for label, level, never, words in ((labels[1], rule["positive_from"], rule["positive_from"] >= 1, "at least"),
                                       (labels[0], rule["negative_to"], rule["negative_to"] <= 0, "at most")):
        beyond = "1" if words == "at least" else "0"
        sides.append(f"never `{label}` (its level lies beyond {beyond}: the other class's groups spread too widely)"
                     if never else f"`{label}` when that mean is {words} {level:.3f}")
    return (f"A session (`--summary`, `edge-live --session`) needs at least {rule['min_inputs']} judged input(s) and is "
            f"called by the mean calibrated probability of its judged inputs: {sides[0]}; {sides[1]}; `uncertain` "
            f"otherwise ({session['chosen_on']}). "
            f"On the out-of-fold groups: {session['right']} right, {session['uncertain']} uncertain, {session['wrong']} "
            f"wrong. The whole choice judged on groups it was not made on (made on four folds, applied to the fifth): "
            f"{comparison}.")


def _abstention_section(verification: dict, metadata: dict) -> str:
    if "domain" not in metadata:
        return "This model has no out-of-domain check."
    flagged = verification["out_of_domain"]["int8"]
    session = verification["session"]["int8"]
    layers = len(metadata["domain"]["layers"])
    where = (f"of {layers} layers; an image whose largest scaled Mahalanobis distance to the training features over "
             "those layers" if layers > 1 else "of its last layer; an image whose scaled Mahalanobis distance to the "
             "training features")
    return (f"Every answer is `{metadata['labels'][1]}`, `{metadata['labels'][0]}`, `uncertain`, `out_of_domain` or "
            f"`rejected`, and a non-answer says why. An image that fails a quality gate (blank, saturated, out of focus, "
            f"the wrong kind of image) is `rejected`. A second output carries the pooled features {where} exceeds "
            f"{metadata['domain']['threshold']:.2f} is `out_of_domain` (int8: "
            f"{flagged['flag_rate_unseen']:.1%} of {verification['evaluated_on']}). Within "
            f"{metadata['uncertain_margin']:.3f} of the threshold the answer is `uncertain`. Those three get no class "
            f"label (`--label-all` gives one anyway; the probability is in the JSON either way). "
            f"{_session_sentence(session, metadata['labels'])} Measured against other images: `benchmarks/DOMAIN.md`.")


def main(argv=None) -> int:
    """Rewrite <name>_MODEL_CARD.md from the verification and the int8 sidecar beside it (after a change
    to this module; conversion writes it too).

        python -m convert.model_card models --name brain"""
    import argparse
    import json
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m convert.model_card", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--name", required=True, help="model name, e.g. brain")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        verification = json.loads((folder / f"{args.name}_verification.json").read_text())
        metadata = json.loads((folder / f"{args.name}_int8.json").read_text())
    except (OSError, ValueError) as error:
        print(f"model_card: {error}", file=sys.stderr)
        return 2
    (folder / f"{args.name}_MODEL_CARD.md").write_text(model_card(args.name, metadata["task"], verification, metadata))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
