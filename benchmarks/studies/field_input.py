"""Field cells: the model input resampled once from the small crop (edge.field.model_input) against
the input before it (the crop enlarged to the training magnification, rescale_crops, then
edge.preprocess and the quality gates on that enlarged crop), on the real smear fields.

    python -m benchmarks.studies.field_input                    # the 200 fields at 224x224, about 1 minute
    python -m benchmarks.studies.field_input --size 1280x960    # the fields enlarged (cv2 INTER_CUBIC)

1. Every cell found (cells cut by the border too), at its own field's red-cell scale (fields without
   an estimate are counted and skipped): the mean absolute difference of the two uint8 model inputs
   (0..255 levels), the answers of the model (default leukemia_int8) on both, and the quality
   gates' figures and decisions on both.
2. What the gates' thresholds (set on C-NMC images) say at a field camera's resolution: random C-NMC
   cells, in focus and blurred as the thresholds' blurred set, reduced (INTER_AREA) to the fields'
   median scale and taken back to the training magnification both ways, beside the same cells at
   full resolution.
"""
from __future__ import annotations

import argparse
import glob
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("EDGE_DATA", ROOT.parent / "shared" / "data"))


def _spread(values) -> str:
    values = np.asarray(values, dtype=float)
    p50, p99 = np.percentile(values, [50, 99])
    return f"mean {values.mean():.3f}, median {p50:.3f}, p99 {p99:.3f}, max {values.max():.3f}"


def _centre(pixels: np.ndarray) -> np.ndarray:
    weight = pixels.astype(np.float64).sum(axis=2)
    ys, xs = np.indices(weight.shape)
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / max(weight.sum(), 1.0)


def _reason(issue: str) -> str:
    return issue.split(" (")[0]


def compare_fields(classifier, paths: list[str], size) -> list[float]:
    """Section 1; -> the fields' micrometres per pixel."""
    import cv2

    from edge import field
    from edge.images import load_image
    from edge.preprocess import preprocess_uint8
    from edge.quality import MIN_CELL_COLOUR, MIN_CONTRAST, MIN_SHARPNESS, analysis_pixels, measure
    spec = classifier.preprocessing
    mad, worst, centre_shift, probability, scales, unscaled = [], [], [], [], [], 0
    figures = {"old": [], "new": []}
    changed = dict.fromkeys(("answer", "model class", "out of domain", "gate decision", "gate reasons"), 0)
    answers = {"old": Counter(), "new": Counter()}
    identical_copies = cells = 0
    for path in paths:
        rgb = load_image(path)
        if size:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        found = field.find_white_cells(rgb)
        scale = field.estimate_um_per_pixel(rgb, found)
        if scale is None:
            unscaled += 1
            continue
        scales.append(scale)
        crops = field.cell_crops(rgb, found)
        enlarged = field.rescale_crops(crops, scale)
        old = classifier.classify_batch(enlarged)
        new = classifier.classify_batch(crops, lambda crop: field.model_input(crop, scale, spec))
        for crop, big, a, b in zip(crops, enlarged, old, new):
            pixels, copy = field.model_input(crop, scale, spec)
            difference = np.abs(pixels.astype(np.int16) - preprocess_uint8(big, spec))
            mad.append(difference.mean())
            centre_shift.append(np.abs(_centre(pixels) - _centre(preprocess_uint8(big, spec))).max())
            worst.append(int(difference.max()))
            probability.append(abs(a.probability - b.probability))
            answers["old"][a.label] += 1
            answers["new"][b.label] += 1
            changed["answer"] += a.label != b.label
            changed["model class"] += a.model_label != b.model_label
            changed["out of domain"] += a.out_of_domain != b.out_of_domain
            changed["gate decision"] += bool(a.issues) != bool(b.issues)
            changed["gate reasons"] += [_reason(i) for i in a.issues] != [_reason(i) for i in b.issues]
            figures["old"].append(measure(big))
            figures["new"].append(measure(copy))
            before = analysis_pixels(big)
            identical_copies += before.shape == copy.shape and np.array_equal(before, copy)
            cells += 1
    print(f"## 1. {len(paths)} fields{' at ' + 'x'.join(map(str, size)) if size else ''}: {unscaled} without a "
          f"red-cell scale (skipped); {cells} cells; model {classifier.model_path.name}, preprocessing {spec}")
    print(f"model input, mean |new - old| per cell (0..255 levels): {_spread(mad)}")
    print(f"model input, largest |new - old| pixel per cell: median {np.median(worst):.0f}, max {max(worst)}")
    print(f"model input, shift of the brightness centre (model pixels): {_spread(centre_shift)}")
    print(f"|P(positive) new - old|: {_spread(probability)}")
    print("cells whose decision changed: " + ", ".join(f"{k} {v}" for k, v in changed.items()))
    print("answers: " + "; ".join(f"{kind} " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
                                  for kind, tally in answers.items()))
    print(f"gates' copy identical to the analysis copy of the enlarged crop: {identical_copies} of {cells}")
    thresholds = {"colour": MIN_CELL_COLOUR, "contrast": MIN_CONTRAST, "sharpness": MIN_SHARPNESS["cnmc_cell"]}
    for key, threshold in thresholds.items():
        old = np.array([f[key] for f in figures["old"]])
        new = np.array([f[key] for f in figures["new"]])
        print(f"gate figure {key} (refused below {threshold}): old {_spread(old)}; new {_spread(new)}; "
              f"relative |new - old| {_spread(np.abs(new - old) / np.maximum(np.abs(old), 1e-9))}; "
              f"below the threshold: old {int((old < threshold).sum())}, new {int((new < threshold).sum())}")
    saturated = [f["saturated"] for f in figures["old"] + figures["new"]]
    print(f"gate figure saturated: largest {max(saturated):.4f} (refused above 0.5)")
    return scales


def cnmc_at_field_resolution(data: Path, um_per_pixel: float, spec: dict, count: int) -> None:
    """Section 2."""
    import cv2
    from PIL import Image, ImageFilter

    from edge import field
    from edge.images import load_image
    from edge.quality import MIN_SHARPNESS, measure, quality_issues
    paths = sorted(glob.glob(str(data / "cnmc" / "*" / "*")))
    paths = random.Random(0).sample(paths, min(count, len(paths)))
    factor = um_per_pixel / field.CNMC_UM_PER_PIXEL
    ways = ("full resolution (cell mode)", "field resolution, before (the enlarged crop)",
            "field resolution, now (model_input's gates' copy)")
    sharpness = {(way, blurred): [] for way in ways for blurred in (False, True)}
    refused = dict.fromkeys(sharpness, 0)
    for path in paths:
        sharp = load_image(path)
        # the calibration's blurred set: a radius-2 Gaussian blur at the analysis copy's scale
        blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2 * max(sharp.shape[:2]) / 256)))
        for is_blurred, rgb in ((False, sharp), (True, blurred)):
            small = cv2.resize(rgb, (max(1, round(rgb.shape[1] / factor)), max(1, round(rgb.shape[0] / factor))),
                               interpolation=cv2.INTER_AREA)
            for way, image in zip(ways, (rgb, field.rescale_crops([small], um_per_pixel)[0],
                                         field.model_input(small, um_per_pixel, spec)[1])):
                sharpness[way, is_blurred].append(measure(image)["sharpness"])
                refused[way, is_blurred] += bool(quality_issues(image, "cnmc_cell"))
    threshold = MIN_SHARPNESS["cnmc_cell"]
    print(f"\n## 2. {len(paths)} random C-NMC cells reduced {factor:.1f}x (INTER_AREA) to the fields' median scale "
          f"{um_per_pixel:.3f} um/px, in focus and blurred (radius 2 at analysis size, as the thresholds were set); "
          f"sharpness refused below {threshold}")
    for (way, is_blurred), values in sharpness.items():
        below = sum(v < threshold for v in values)
        print(f"{way}, {'blurred' if is_blurred else 'in focus'}: sharpness {_spread(values)}, min {min(values):.3f}; "
              f"below the threshold {below}; refused by any gate {refused[way, is_blurred]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", help="WxH: the fields enlarged to this size first")
    parser.add_argument("--model", default="leukemia_int8")
    parser.add_argument("--cnmc", type=int, default=200, help="C-NMC cells in section 2 (0: none)")
    args = parser.parse_args(argv)
    from edge.classifier import Classifier
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    paths = sorted(glob.glob(str(args.data / "blood_smear_fields" / "*" / "*.jpg")))
    with Classifier(args.model, threads=1) as classifier:
        scales = compare_fields(classifier, paths, size)
        if args.cnmc:
            cnmc_at_field_resolution(args.data, float(np.median(scales)), classifier.preprocessing, args.cnmc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
