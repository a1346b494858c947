"""Field mode and the cell's scale, on real data:
- the C-NMC cells' equivalent diameters (the training magnification's ruler, edge/field.py);
- the Taleqani smear fields' micrometres per pixel estimated from their red cells;
- per class folder, what the leukemia model calls the fields' white cells and how many its domain
  check flags, with the crops left at the camera's scale and brought to the training scale.

    python -m benchmarks.studies.field_scale [--data DIR] [--model leukemia_int8] [--out benchmarks/FIELD_SCALE.md]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from edge.classifier import Classifier
from edge.field import CNMC_UM_PER_PIXEL, cell_crops, estimate_um_per_pixel, find_white_cells, rescale_crops
from edge.images import load_image
from edge.preprocess import cell_mask
from train.data_root import data_root

CLASSES = ("benign", "early", "pre", "pro")


def cnmc_diameters(root: Path, per_label: int = 200) -> dict[str, np.ndarray]:
    found = {}
    for label in ("hem", "all"):
        paths = sorted((root / "cnmc" / label).iterdir())
        random.Random(0).shuffle(paths)
        found[label] = np.array([2 * np.sqrt(cell_mask(load_image(p)).sum() / np.pi) for p in paths[:per_label]])
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.field_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data root (default: $EDGE_DATA, else shared/data beside the checkout)")
    parser.add_argument("--model", default="leukemia_int8")
    parser.add_argument("--out", help="write the markdown here too")
    args = parser.parse_args(argv)
    root = data_root(args.data)
    diameters = cnmc_diameters(root)
    lines = ["# Field mode and the cell's scale", "", f"`python -m benchmarks.studies.field_scale --model {args.model}`", "",
             "C-NMC equivalent diameters (200 random cells per label): " + ", ".join(
                 f"{label} median {np.median(d):.0f} px (p10 {np.percentile(d, 10):.0f}, p90 {np.percentile(d, 90):.0f})"
                 for label, d in diameters.items()) +
             f"; training scale taken as {CNMC_UM_PER_PIXEL:.4f} um/px (a normal cell of 9 um: an assumption).", ""]
    classifier = Classifier(args.model)
    positive = classifier.labels[1]
    rows, estimates = [], []
    for name in CLASSES:
        tallies = {"camera scale": [0, 0, 0, 0], "training scale": [0, 0, 0, 0]}  # cells, in-domain positive, flagged, positive
        for path in sorted((root / "blood_smear_fields" / name).glob("*.jpg")):
            rgb = load_image(path)
            found = find_white_cells(rgb)
            cells = [c for c in found if not c.touches_edge]
            um_per_pixel = estimate_um_per_pixel(rgb, found)
            if um_per_pixel is not None:
                estimates.append(um_per_pixel)
            crops = cell_crops(rgb, cells)
            versions = {"camera scale": crops,
                        "training scale": rescale_crops(crops, um_per_pixel) if um_per_pixel else crops}
            for version, images in versions.items():
                results = classifier.classify_batch(images)
                tally = tallies[version]
                tally[0] += len(results)
                tally[1] += sum(r.label == positive and not r.out_of_domain for r in results)
                tally[2] += sum(bool(r.out_of_domain) for r in results)
                tally[3] += sum(r.label == positive for r in results)
        for version, (cells, called, flagged, called_any) in tallies.items():
            in_domain = cells - flagged
            rows.append(f"| {name} | {version} | {cells} | {flagged} ({flagged / cells:.0%}) | "
                        + (f"{called} of {in_domain} ({called / in_domain:.0%})" if in_domain else "none in domain")
                        + f" | {called_any} ({called_any / cells:.0%}) |")
    classifier.close()
    estimates = np.array(estimates)
    lines += [f"Red-cell scale of the 200 fields: estimated in {len(estimates)}, median {np.median(estimates):.3f} um/px "
              f"(p10 {np.percentile(estimates, 10):.3f}, p90 {np.percentile(estimates, 90):.3f}); crops are enlarged "
              f"{np.median(estimates) / CNMC_UM_PER_PIXEL:.1f}x at the median.", "",
              f"| class folder | crops | white cells | flagged out of domain | called {positive}, in domain | "
              f"called {positive}, the flag ignored |", "|---|---|---|---|---|---|",
              *rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
