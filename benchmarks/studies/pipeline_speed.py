"""The device pipeline on a Raspberry Pi's budget (issue 30): per-stage medians of the frame path in
cell and field mode, the pipeline before this work beside it (interleaved, one run), and each figure
against its Pi 4 target divided by the Pi factor (benchmarks/studies/pi_factor.py).

    python -m benchmarks.studies.pipeline_speed                       # all sections, about 3 minutes
    python -m benchmarks.studies.pipeline_speed --only cell           # or field, models
    python -m benchmarks.studies.pipeline_speed --pi-factor runs/pi_factor.json --json runs/pipeline_speed.json

- cell: held-out C-NMC cells (the leukemia split's test subset when it has one), each centred on a
  black 640x480 frame as a camera sees a segmented cell; capture to result without a file decode:
  the Classifier's stages plus the focus figure edge-live takes of every frame (the overlay itself is
  drawn only when someone looks: a window, the web page, a snapshot).
- field: the 200 Taleqani smear fields at their 224x224, and enlarged to 1280x960 (a Pi HQ camera's
  binned mode, cv2 INTER_CUBIC): edge-live's field path (find the white cells, the red-cell scale,
  each cell's model input resampled from its crop at the training magnification, one
  classify_batch per frame; before: the crops enlarged to the training magnification first).
- models: median invoke of the int8 and float32 models of both tasks at each thread count, interleaved.

"before" is the pipeline as of commit 418648e: tests/reference/ holds its quality gates,
preprocessing and cell finder verbatim, run here on the same interpreter (the preprocessed float
array quantised as it was), so both columns share the machine's load; the new pipeline's model input
is bit-identical to it in cell and file mode (tests/test_pipeline_exact.py) and, for field cells,
equal to it within interpolation (benchmarks/studies/field_input.py). The machine, its SIMD and its
load are printed with the figures: timings on a shared machine are noisy; only medians and ratios of
one run are given.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description, one_line
from benchmarks.studies.pi_factor import PI4_TARGETS_MS, load_factor

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("EDGE_DATA", ROOT.parent / "shared" / "data"))
STAGES = ("quality", "preprocess", "quantize", "invoke", "dequantize", "domain")


def _reference():
    """The modules of commit 418648e (tests/reference), or None outside a checkout."""
    folder = ROOT / "tests"
    if not (folder / "reference" / "preprocess_418648e.py").is_file():
        return None
    sys.path.insert(0, str(folder))
    from reference import field_418648e, preprocess_418648e, quality_418648e
    return {"preprocess": preprocess_418648e, "quality": quality_418648e, "field": field_418648e}


def _old_classify(classifier, reference, images: list[np.ndarray]) -> dict[str, float]:
    """The pipeline before: float preprocessing, quantize(), per image, one invoke for the batch;
    -> ms per stage for the whole batch."""
    from edge.interpreter import dequantize, quantize
    ms = dict.fromkeys(STAGES, 0.0)
    started = time.perf_counter()
    inputs = []
    for rgb in images:
        reference["quality"].quality_issues(rgb, classifier.preprocessing["name"])
        lap = time.perf_counter()
        ms["quality"] += (lap - started) * 1000
        inputs.append(reference["preprocess"].preprocess(rgb, classifier.preprocessing))
        started = time.perf_counter()
        ms["preprocess"] += (started - lap) * 1000
    batch = np.stack(inputs)
    classifier._set_batch_size(len(batch))
    interpreter = classifier.interpreter
    interpreter.set_tensor(classifier._input["index"], quantize(batch, classifier._input))
    lap = time.perf_counter()
    ms["quantize"] = (lap - started) * 1000
    interpreter.invoke()
    started = time.perf_counter()
    ms["invoke"] = (started - lap) * 1000
    dequantize(interpreter.get_tensor(classifier._output["index"]), classifier._output)
    lap = time.perf_counter()
    ms["dequantize"] = (lap - started) * 1000
    if classifier.spec.domain is not None:
        classifier.spec.domain.distances(dequantize(interpreter.get_tensor(classifier._features["index"]),
                                                    classifier._features))
        ms["domain"] = (time.perf_counter() - lap) * 1000
    return ms


def _new_classify(classifier, images: list[np.ndarray], prepare=None) -> dict[str, float]:
    if len(images) == 1 and prepare is None:
        results = [classifier.classify(images[0])]
    else:
        results = classifier.classify_batch(images, prepare)
    return {stage: sum(r.timings_ms.get(stage, 0.0) for r in results) for stage in STAGES}


def _medians(rows: list[dict]) -> dict[str, float]:
    return {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}


def cell_frames(data: Path, count: int) -> list[np.ndarray]:
    from edge.images import load_image
    from edge.model_store import resolve_model
    split = json.loads((resolve_model("leukemia_int8").parent / "leukemia_split.json").read_text())
    rows = [s for s in split["samples"] if s["subset"] == "test"] or split["samples"]
    names = {Path(s["path"]).name for s in rows}
    paths = sorted(p for p in (data / "cnmc").rglob("*") if p.name in names)[:count]
    frames = []
    for path in paths:
        cell = load_image(path)
        frame = np.zeros((480, 640, 3), np.uint8)
        top, left = (480 - cell.shape[0]) // 2, (640 - cell.shape[1]) // 2
        frame[top:top + cell.shape[0], left:left + cell.shape[1]] = cell
        frames.append(frame)
    return frames


def cell_section(classifier, reference, frames: list[np.ndarray], repeats: int) -> dict:
    from edge.overlay import focus_measure
    new_rows, old_rows = [], []
    for _ in range(repeats):
        for i, rgb in enumerate(frames):
            for kind in (("new", "old") if i % 2 == 0 else ("old", "new")):  # interleaved
                if kind == "old" and reference is None:
                    continue
                started = time.perf_counter()
                ms = _new_classify(classifier, [rgb]) if kind == "new" else _old_classify(classifier, reference, [rgb])
                focused = time.perf_counter()
                focus_measure(rgb)
                ms["focus"] = (time.perf_counter() - focused) * 1000
                ms["end_to_end"] = (time.perf_counter() - started) * 1000
                (new_rows if kind == "new" else old_rows).append(ms)
    return {"frames": len(frames), "repeats": repeats, "new": _medians(new_rows),
            "old": _medians(old_rows) if old_rows else None}


def field_frames(data: Path, size: tuple[int, int] | None) -> list[np.ndarray]:
    import cv2

    from edge.images import load_image
    paths = sorted(glob.glob(str(data / "blood_smear_fields" / "*" / "*.jpg")))
    frames = [load_image(p) for p in paths]
    return [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames] if size else frames


def _field_frame(classifier, field, images_scale: list, rgb: np.ndarray, reference=None) -> dict[str, float]:
    """edge-live's field path on one frame (cells cut by the border drawn, not classified). detect:
    the cells, the scale and their crops (before: and the crops enlarged to the training
    magnification); now each cell's model input and gates' copy are resampled from its crop in
    preprocess (edge.field.model_input)."""
    started = time.perf_counter()
    found = field.find_white_cells(rgb)
    cells = [c for c in found if not c.touches_edge]
    estimate = field.estimate_um_per_pixel(rgb, found)
    if estimate is not None:
        images_scale.append(estimate)
    scale = float(np.median(images_scale[-50:])) if images_scale else None
    crops = field.cell_crops(rgb, cells)
    if scale is not None and reference:
        crops = field.rescale_crops(crops, scale)
    detected = time.perf_counter()
    ms = {"detect": (detected - started) * 1000}
    if crops and reference:
        ms.update(_old_classify(classifier, reference, crops))
    elif crops:
        prepare = None if scale is None else (lambda crop: field.model_input(crop, scale, classifier.preprocessing))
        ms.update(_new_classify(classifier, crops, prepare))
    else:
        ms.update(dict.fromkeys(STAGES, 0.0))
    ms["end_to_end"] = (time.perf_counter() - started) * 1000
    ms["cells"] = len(crops)
    return ms


def field_section(classifier, reference, frames: list[np.ndarray], repeats: int) -> dict:
    import edge.field as field
    new_rows, old_rows, scales = [], [], {"new": [], "old": []}
    for _ in range(repeats):
        for i, rgb in enumerate(frames):
            for kind in (("new", "old") if i % 2 == 0 else ("old", "new")):
                if kind == "old":
                    if reference is None:
                        continue
                    old_rows.append(_field_frame(classifier, reference["field"], scales["old"], rgb, reference))
                else:
                    new_rows.append(_field_frame(classifier, field, scales["new"], rgb))
    totals = [row["end_to_end"] for row in new_rows]
    return {"frames": len(frames), "size": list(frames[0].shape[1::-1]), "repeats": repeats, "new": _medians(new_rows),
            "new_p90_ms": round(float(np.percentile(totals, 90)), 2),
            "old": _medians(old_rows) if old_rows else None}


def models_section(runs: int) -> dict:
    from edge.classifier import thread_candidates
    from edge.interpreter import input_details, make_interpreter
    names = ["leukemia_int8", "leukemia_float32", "brain_int8", "brain_float32"]
    from edge.model_store import resolve_model
    interpreters = {}
    for name in names:
        for threads in thread_candidates():
            interpreter, _ = make_interpreter(resolve_model(name), None, threads)
            details = input_details(interpreter)
            interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
            for _ in range(3):
                interpreter.invoke()
            interpreters[(name, threads)] = interpreter
    samples = {key: [] for key in interpreters}
    keys = list(interpreters)
    for run in range(runs):
        for key in keys if run % 2 == 0 else keys[::-1]:
            started = time.perf_counter()
            interpreters[key].invoke()
            samples[key].append((time.perf_counter() - started) * 1000)
    return {f"{name} {threads}": round(statistics.median(samples[(name, threads)]), 4) for name, threads in keys}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", choices=("cell", "field", "models"))
    parser.add_argument("--cells", type=int, default=100, help="cell-mode frames")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the frames")
    parser.add_argument("--runs", type=int, default=300, help="timed invokes per model and thread count")
    parser.add_argument("--pi-factor", type=Path, default=ROOT / "runs" / "pi_factor.json",
                        help="the --json of benchmarks.studies.pi_factor (the targets are printed when it exists)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pipeline before (tests/reference)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import cv2
    cv2.setNumThreads(1)  # the device pipeline is single-threaded; OpenCV's pool would only add noise here
    from edge.classifier import Classifier
    reference = None if args.no_baseline else _reference()
    factor = load_factor(args.pi_factor)
    load_before = os.getloadavg()
    result = {"machine": cpu_description(), "load_average_before": [round(v, 2) for v in load_before],
              "pi_factor": factor}
    print(f"machine: {one_line(result['machine'])}; load average {result['load_average_before']}")
    sections = [args.only] if args.only else ["cell", "field", "models"]
    with Classifier("leukemia_int8") as classifier:
        print(f"leukemia_int8: {classifier.threads} thread(s), the fastest measured at start: "
              + ", ".join(f"{n}: {ms:.3f} ms" for n, ms in sorted((classifier.thread_timings or {}).items())))
        if "cell" in sections:
            frames = cell_frames(args.data, args.cells)
            result["cell"] = cell_section(classifier, reference, frames, args.repeats)
            _print_rows("cell mode, 640x480 frame with a C-NMC cell (ms, medians)", result["cell"],
                        factor, PI4_TARGETS_MS["cell mode, end to end"])
        if "field" in sections:
            for size, target in ((None, "field mode, 224x224 field"), ((1280, 960), "field mode, 1280x960 frame")):
                frames = field_frames(args.data, size)
                key = f"field_{frames[0].shape[1]}x{frames[0].shape[0]}"
                result[key] = field_section(classifier, reference, frames, max(1, args.repeats // 2 if size else args.repeats))
                _print_rows(f"field mode, {len(frames)} smear fields at {frames[0].shape[1]}x{frames[0].shape[0]} "
                            f"(ms per frame, medians)", result[key], factor, PI4_TARGETS_MS[target])
    if "models" in sections:
        from edge.classifier import fastest
        result["models"] = models_section(args.runs)
        print("\nmedian invoke ms (interleaved): " + "; ".join(f"{k} threads: {v}" for k, v in result["models"].items()))
        for task in ("leukemia", "brain"):
            timings = {name: {int(key.split()[1]): ms for key, ms in result["models"].items() if key.split()[0] == name}
                       for name in (f"{task}_int8", f"{task}_float32")}
            threads = fastest(timings[f"{task}_int8"])
            int8, float32 = timings[f"{task}_int8"][threads], timings[f"{task}_float32"][threads]
            print(f"{task}: at {threads} thread(s) (the fastest for int8) int8 {int8:.3f} ms, float32 {float32:.3f} ms: "
                  f"int8 {'faster' if int8 < float32 else 'NOT faster'} ({float32 / int8:.2f}x)")
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average after: {result['load_average_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _print_rows(title: str, section: dict, factor: dict | None, pi_target_ms: float) -> None:
    print(f"\n{title}")
    new, old = section["new"], section.get("old")
    keys = list(new)
    print("| | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    if old:
        print("| before (418648e) | " + " | ".join(f"{old.get(k, 0):.2f}" for k in keys) + " |")
    print("| now | " + " | ".join(f"{new[k]:.2f}" for k in keys) + " |")
    if old:
        print("| before / now | " + " | ".join(f"{old[k] / new[k]:.1f}x" if new[k] > 0 and k in old else "" for k in keys)
              + " |")
    if factor:
        for name, value in (("Pi factor", factor["factor"]), ("strict per-core factor", factor["strict"])):
            target = pi_target_ms / value
            verdict = "met" if new["end_to_end"] <= target else "NOT met"
            print(f"target: <= {pi_target_ms:.1f} ms on a Pi 4 / {name} {value:.2f} = <= {target:.2f} ms here: "
                  f"{verdict} (median {new['end_to_end']:.2f} ms)")


if __name__ == "__main__":
    raise SystemExit(main())
