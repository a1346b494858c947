"""Field mode on the real smear fields (../shared/data/blood_smear_fields, 200 Taleqani fields):
white cells found by edge.field against our by-eye counts, the leukemia model's blast calls per
class folder, and the time of find_white_cells + cell_crops + classify_batch per frame.

    python -m benchmarks.studies.field_count                      # all three sections, markdown on stdout
    python -m benchmarks.studies.field_count --only count         # or classify, time
    python -m benchmarks.studies.field_count --threads 2 --repeats 3 --model leukemia_int8

The by-eye counts are ours (benchmarks/field_counts.csv, described in its header and in
benchmarks/FIELD_COUNT.md); results are in FIELD_COUNT.md.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
COUNTS = Path(__file__).resolve().parents[1] / "field_counts.csv"
DEFAULT_DATA = Path(os.environ.get("EDGE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "blood_smear_fields"
CLASSES = ("benign", "early", "pre", "pro")
INT_COLUMNS = ("white_cells", "smudge_cells", "judged_detections", "tp", "added", "fp_smudge", "fp_split", "fp_other",
               "fn")


def by_eye_counts(path: Path = COUNTS) -> list[dict]:
    """Rows of field_counts.csv (lines starting with # are its description), counts as ints."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    return [{**row, **{k: int(row[k]) for k in INT_COLUMNS}} for row in rows]


def load_fields(root: Path) -> dict[str, np.ndarray]:
    """'class/file.jpg' -> RGB array, for every field under root/<class>/."""
    from edge.images import load_image
    paths = sorted(p for c in CLASSES for p in (root / c).glob("*.jpg"))
    if not paths:
        raise SystemExit(f"field_count: no fields under {root}")
    return {f"{p.parent.name}/{p.name}": load_image(p) for p in paths}


def count_section(fields: dict[str, np.ndarray]) -> list[str]:
    from edge.field import find_white_cells
    rows = by_eye_counts()
    lines = ["| field | white cells by eye | smudge cells by eye | found | found - counted | on a white cell "
             "| on a smudge | extra piece | other | counted, not found |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    found_all, stale = [], []
    for row in rows:
        found = len(find_white_cells(fields[row["field"]]))
        found_all.append(found)
        if found != row["judged_detections"]:
            stale.append(f"{row['field']} (judged {row['judged_detections']}, found now {found})")
        lines.append(f"| {row['field']} | {row['white_cells']} | {row['smudge_cells']} | {found} | "
                     f"{found - row['white_cells']:+d} | {row['tp']} | {row['fp_smudge']} | {row['fp_split']} | "
                     f"{row['fp_other']} | {row['fn']} |")
    total = {k: sum(r[k] for r in rows) for k in INT_COLUMNS}
    counted, found = total["white_cells"], sum(found_all)
    judged = total["judged_detections"]
    errors = [abs(f - r["white_cells"]) for f, r in zip(found_all, rows)]
    lines.append(f"| **total ({len(rows)} fields)** | {counted} | {total['smudge_cells']} | {found} | "
                 f"{found - counted:+d} | "
                 f"{total['tp']} | {total['fp_smudge']} | {total['fp_split']} | {total['fp_other']} | {total['fn']} |")
    lines += ["",
              f"- found / counted: {found} / {counted} = {found / counted:.2f}; mean absolute count error "
              f"{statistics.mean(errors):.2f} cells per field (median {statistics.median(errors):.1f}, "
              f"max {max(errors)})",
              f"- recall (counted white cells with a box of their own): {counted - total['fn']} / {counted} = "
              f"{(counted - total['fn']) / counted:.3f}",
              f"- precision (boxes on a real white cell, extra pieces of one cell counted as wrong): "
              f"{total['tp']} / {judged} = {total['tp'] / judged:.3f}; counting boxes on smudge cells as white-cell "
              f"material: {total['tp'] + total['fp_smudge']} / {judged} = "
              f"{(total['tp'] + total['fp_smudge']) / judged:.3f}",
              f"- wrong boxes by kind: smudge cells {total['fp_smudge']}, extra pieces of a split cell "
              f"{total['fp_split']}, "
              f"platelet clumps, debris and edge slivers {total['fp_other']}; white cells seen only on review "
              f"{total['added']}"]
    if stale:
        lines.append(f"- **the detector changed since the judging**: re-judge {', '.join(stale)}")
    return lines


def classify_section(fields: dict[str, np.ndarray], model: str, threads: int) -> list[str]:
    from edge.classifier import Classifier
    from edge.field import cell_crops, find_white_cells
    from edge.preprocess import CELL_STAIN_MEANS
    from PIL import Image

    from edge.preprocess import normalize_stain
    lines = ["| class folder | fields | cells found | cells per field | blasts called | blast ratio "
             "| cells not at the edge | their blast ratio | mean P(all) | crops with quality issues "
             "| cell pixels mean R, G, B | median crop side (px) | colour-matched: blast ratio, mean P(all) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    with Classifier(model, threads=threads) as classifier:
        positive = classifier.labels[1]
        for name in CLASSES + ("all fields",):
            names = [n for n in fields if name == "all fields" or n.startswith(name + "/")]
            cells_n = blasts = inner = inner_blasts = flagged = 0
            probabilities, pixel_sums, pixel_count, sides, matched = [], np.zeros(3), 0, [], []
            for field in names:
                rgb = fields[field]
                cells = find_white_cells(rgb)
                crops = cell_crops(rgb, cells)
                results = classifier.classify_batch(crops)
                # experiment: each crop's channel means scaled to C-NMC's, as preprocess's "stain" option does
                recoloured = [np.asarray(normalize_stain(Image.fromarray(crop))) for crop in crops]
                matched += [r.probabilities[positive] for r in classifier.classify_batch(recoloured)]
                for cell, crop, result in zip(cells, crops, results):
                    called = result.label == positive
                    cells_n += 1
                    blasts += called
                    inner += not cell.touches_edge
                    inner_blasts += called and not cell.touches_edge
                    flagged += bool(result.issues)
                    probabilities.append(result.probabilities[positive])
                    pixels = crop[crop.max(axis=2) > 10]
                    pixel_sums += pixels.sum(axis=0)
                    pixel_count += len(pixels)
                    sides.append(max(cell.box[2], cell.box[3]))
            summary[name] = blasts / cells_n if cells_n else float("nan")
            mean_rgb = ", ".join(f"{v:.0f}" for v in pixel_sums / max(pixel_count, 1))
            lines.append(f"| {name} | {len(names)} | {cells_n} | {cells_n / len(names):.1f} | {blasts} | "
                         f"{blasts / cells_n:.3f} | {inner} | {inner_blasts / max(inner, 1):.3f} | "
                         f"{statistics.mean(probabilities):.3f} | {flagged} | {mean_rgb} | "
                         f"{statistics.median(sides):.0f} | "
                         f"{np.mean(np.array(matched) >= classifier.threshold):.3f}, {statistics.mean(matched):.3f} |")
    lines += ["", f"- model {model} (threshold {classifier.threshold:.3f} on P({positive})); C-NMC cell pixels, "
              f"which the model was trained on, average R, G, B = {', '.join(str(v) for v in CELL_STAIN_MEANS)}; "
              "colour-matched = the same crops with each channel scaled so its mean over the cell equals C-NMC's "
              "(an experiment, not what the device does)",
              f"- benign (hematogones) blast ratio {summary['benign']:.3f} against "
              + ", ".join(f"{c} {summary[c]:.3f}" for c in CLASSES[1:])]
    return lines


def time_section(fields: dict[str, np.ndarray], model: str, threads: int, repeats: int) -> list[str]:
    import cv2

    from edge.classifier import Classifier
    from edge.field import cell_crops, find_white_cells
    cv2.setNumThreads(threads)
    frames = list(fields.values())
    finder, crops_ms, classify_ms, total, cells_per_frame = [], [], [], [], []
    with Classifier(model, threads=threads) as classifier:
        classifier.classify_batch(cell_crops(frames[0], find_white_cells(frames[0])))  # warm up
        passes = []
        for _ in range(repeats):
            one = []
            for rgb in frames:
                started = time.perf_counter()
                cells = find_white_cells(rgb)
                found = time.perf_counter()
                crops = cell_crops(rgb, cells)
                cropped = time.perf_counter()
                classifier.classify_batch(crops)
                done = time.perf_counter()
                one.append(((found - started) * 1000, (cropped - found) * 1000, (done - cropped) * 1000, len(cells)))
            passes.append(one)
    for i in range(len(frames)):  # each frame: its median over the passes
        runs = sorted((p[i] for p in passes), key=lambda r: r[0] + r[1] + r[2])
        middle = runs[len(runs) // 2]
        finder.append(middle[0])
        crops_ms.append(middle[1])
        classify_ms.append(middle[2])
        total.append(sum(middle[:3]))
        cells_per_frame.append(middle[3])
    large = [cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_CUBIC) for rgb in frames]
    large_ms = []
    for rgb in large:  # timing only: the 224 px fields stretched to a camera's 640x480
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            cell_crops(rgb, find_white_cells(rgb))
            runs.append((time.perf_counter() - started) * 1000)
        large_ms.append(statistics.median(runs))

    def row(name, values):
        return (f"| {name} | {statistics.median(values):.1f} | {np.percentile(values, 90):.1f} | "
                f"{max(values):.1f} |")
    median_total = statistics.median(total)
    names = list(fields)
    by_class = []
    for c in CLASSES:
        mine = [i for i, name in enumerate(names) if name.startswith(c + "/")]
        cells = statistics.mean(cells_per_frame[i] for i in mine)
        by_class.append(row(f"total, {c} fields ({cells:.1f} cells per frame)", [total[i] for i in mine]))
    return ["| per frame (224x224 field) | median ms | p90 ms | max ms |", "|---|---|---|---|",
            row("find_white_cells", finder), row("cell_crops", crops_ms),
            row(f"classify_batch ({model}, {threads} threads, incl. preprocess and quality gates)", classify_ms),
            row("**total**", total), *by_class,
            row("find_white_cells + cell_crops on the fields resized to 640x480", large_ms),
            "", f"- {len(frames)} fields x {repeats} passes (each frame's median pass), "
            f"{statistics.mean(cells_per_frame):.1f} cells per frame on average; median total {median_total:.1f} ms "
            f"= {1000 / median_total:.1f} frames/s "
            f"(p90 {np.percentile(total, 90):.1f} ms = {1000 / np.percentile(total, 90):.1f} frames/s)",
            f"- machine load average while measuring (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
            f"on {os.cpu_count()} CPUs"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the blood_smear_fields folder")
    parser.add_argument("--model", default="leukemia_int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timing passes over all fields")
    parser.add_argument("--only", choices=("count", "classify", "time"))
    args = parser.parse_args(argv)
    fields = load_fields(args.data)
    sections = [args.only] if args.only else ["count", "classify", "time"]
    for section in sections:
        print(f"\n## {section}\n")
        if section == "count":
            lines = count_section(fields)
        elif section == "classify":
            lines = classify_section(fields, args.model, args.threads)
        else:
            lines = time_section(fields, args.model, args.threads, args.repeats)
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
