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
             "population; sequences, orientations and pathologies outside these sets are out of domain.",
    "leukemia": "C-NMC has few patients (27 ALL, 14 normal) and two normal subjects hold most normal cells, so "
                "the test split has few normal patients and its figures are uncertain. Stain and microscope "
                "differences between sites shift the input; cells cropped from other smears (e.g. the "
                "Taleqani fields) are out of domain until measured.",
}


def model_card(name: str, task: str, verification: dict, metadata: dict) -> str:
    split = metadata["training"]["split"]
    split_rows = "\n".join(f"| {subset} | {s['images']} | {s['groups']} |" for subset, s in split.items())
    files = "\n".join(f"| `{f['file']}` | {f['size_bytes']:,} | `{f['sha256'][:16]}...` |" for f in verification["files"])
    return f"""# Model card: {name}

**Research use only. Not a medical device**: not cleared or approved for diagnosis, and not to be used for
clinical decisions.

## Intended use
{INTENDED_USE[task]}

Labels: `{metadata['labels'][0]}` (negative), `{metadata['labels'][1]}` (positive). Decision threshold
{metadata['threshold']:.4f} on the positive score, chosen by: {metadata['threshold_policy']}.

## Data and split
Trained on {', '.join(metadata['training']['data'])}, split by {metadata['training']['grouped_by']}
(seed {metadata['training']['seed']}); the test split was never seen in training, early stopping,
threshold choice or calibration.

| subset | images | groups |
|---|---|---|
{split_rows}

## Model
Compact CNN (Conv-BN-ReLU stem, depthwise-separable blocks, one sigmoid unit), {metadata['training']['params']:,}
parameters, input {metadata['input']['shape']} ({metadata['preprocessing']}). The int8 model is fully
integer (int8 weights, activations, input and output), calibrated on
{verification['calibration_images']} training images.

| file | bytes | SHA-256 |
|---|---|---|
{files}

## Test results (held-out split)
{metrics_table(verification['metrics'])}

float32 / int8 agreement: {verification['agreement']:.4f} of test images get the same label.

## Limitations
{LIMITATIONS[task]}
"""
