"""How well each shipped model's out-of-domain check (edge/domain.py) tells its own kind of image
from others, on real data: the in-domain distances are the out-of-fold ones recorded at conversion
(each fold model's check fitted on its training folds, applied to patients or scans it never saw);
the others go through the device pipeline of the shipped model:
- the other task's images (MRI slices to the cell model, C-NMC cells to the MRI model);
- for the cell model, the white cells that field mode finds in the Taleqani smear fields (another
  lab, stain and magnification);
- in-domain images corrupted: Gaussian noise (sd 40 grey levels), heavy blur (radius 6), half the
  scale (the image shrunk to half and padded with black), and swapped colour channels (cells) or
  inverted grey levels (MRI, which has no colour to swap).
For each: the share flagged out of domain and the ROC AUC of the distance against the in-domain one.

    python -m benchmarks.studies.domain [--data DIR] [--limit 300] [--out benchmarks/DOMAIN.md]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from edge.classifier import Classifier
from edge.images import ImageError, load_image
from train.data_root import data_root, resolve

MODELS = Path(__file__).resolve().parents[2] / "models"


def corruptions(task: str) -> dict:
    rng = np.random.default_rng(0)

    def noise(rgb):
        return np.clip(rgb + rng.normal(0, 40, rgb.shape), 0, 255).astype(np.uint8)

    def blur(rgb):
        return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(6)))

    def half_scale(rgb):
        small = Image.fromarray(rgb).resize((rgb.shape[1] // 2, rgb.shape[0] // 2), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0]))
        canvas.paste(small, (rgb.shape[1] // 4, rgb.shape[0] // 4))
        return np.asarray(canvas)

    colour = ("swapped colour channels", lambda rgb: rgb[:, :, ::-1].copy()) if task == "leukemia" else \
        ("inverted grey levels", lambda rgb: 255 - rgb)
    return {"Gaussian noise (sd 40)": noise, "heavy blur (radius 6)": blur, "half scale": half_scale,
            colour[0]: colour[1]}


def sample_paths(folder: Path, limit: int, seed: int = 0) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"})
    random.Random(seed).shuffle(paths)
    return paths[:limit]


def distances(classifier: Classifier, images) -> np.ndarray:
    found = []
    for image in images:
        try:
            found.append(classifier.classify(image).domain_score)
        except ImageError:
            continue
    return np.array(found)


def field_cells(root: Path, limit: int) -> list[np.ndarray]:
    from edge.field import cell_crops, find_white_cells

    crops = []
    for path in sample_paths(root / "blood_smear_fields", limit):
        rgb = load_image(path)
        crops += cell_crops(rgb, find_white_cells(rgb))
    return crops


def measure(model: str, root: Path, limit: int) -> list[dict]:
    classifier = Classifier(model)
    task = classifier.spec.task
    precision = json.loads(classifier.model_path.with_suffix(".json").read_text())["precision"]
    verification = json.loads((MODELS / f"{task}_verification.json").read_text())
    in_domain = np.array(verification["out_of_domain"][precision]["distances_unseen"])
    threshold = classifier.spec.domain.threshold
    reference = [resolve(p, root) for p in verification["reference_scores"]["paths"]][:limit]
    decoded = [load_image(p) for p in reference]
    sets = {"in domain (out-of-fold, recorded at conversion)": in_domain}
    if task == "leukemia":
        sets["brain MRI slices"] = distances(classifier, sample_paths(root / "brain_mri", limit))
        sets["white cells of the smear fields"] = distances(classifier, field_cells(root, limit))
    else:
        sets["C-NMC cells"] = distances(classifier, sample_paths(root / "cnmc", limit))
    for name, corrupt in corruptions(task).items():
        sets[f"in-domain images, {name}"] = distances(classifier, [corrupt(rgb) for rgb in decoded])
    classifier.close()
    rows = []
    for name, values in sets.items():
        auc = None
        if values is not in_domain and len(values):
            from sklearn.metrics import roc_auc_score
            auc = roc_auc_score(np.r_[np.zeros(len(in_domain)), np.ones(len(values))], np.r_[in_domain, values])
        rows.append({"model": model, "set": name, "images": len(values), "flagged": float(np.mean(values > threshold)),
                     "median_distance": float(np.median(values)), "roc_auc": auc, "threshold": threshold})
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Out-of-domain check of the shipped models", "", f"`{command}`", "",
             "| model | images | n | flagged out of domain | median distance | ROC AUC against in domain |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        auc = "" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
        lines.append(f"| {row['model']} (threshold {row['threshold']:.2f}) | {row['set']} | {row['images']} | "
                     f"{row['flagged']:.1%} | {row['median_distance']:.2f} | {auc} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.domain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data root (default: $EDGE_DATA, else shared/data beside the checkout)")
    parser.add_argument("--limit", type=int, default=300, help="images per set")
    parser.add_argument("--models", nargs="+", default=["leukemia_int8", "leukemia_float32", "brain_int8", "brain_float32"])
    parser.add_argument("--out", help="write the markdown table here too")
    args = parser.parse_args(argv)
    root = data_root(args.data)
    rows = [row for model in args.models for row in measure(model, root, args.limit)]
    text = markdown(rows, " ".join(["python -m benchmarks.studies.domain", *(sys.argv[1:] if argv is None else argv)]))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
