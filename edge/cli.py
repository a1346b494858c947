"""edge-classify: classify image files offline with a TFLite model (no TensorFlow needed).

    edge-classify cell.bmp                          # the default model (leukemia int8 on a fresh install)
    edge-classify --model brain scans/ "more/*.png" --json

Exit status: 0 when every input was classified, 1 when any input failed (the others are still
classified and printed), 2 for a usage or model error.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

from edge.images import ImageError, is_image_file
from edge.interpreter import RUNTIMES, RuntimeUnavailable
from edge.metadata import ModelError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursed) or globs")
    parser.add_argument("--model", help="a .tflite path or a shipped name (brain, leukemia, leukemia_float32, ...)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per input")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    parser.add_argument("--threads", type=int, help="interpreter threads")
    parser.add_argument("--runtime", choices=RUNTIMES, help="force a TFLite runtime (default: the first available)")
    parser.add_argument("--no-quality", action="store_true", help="skip the input quality gates")
    return parser.parse_args(argv)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given, folders recursed for image files, globs expanded; unmatched items kept so they
    are reported as errors."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item)
                           for name in names if is_image_file(name))
            paths += found
        elif not os.path.exists(item) and glob.has_magic(item):
            paths += sorted(glob.glob(item, recursive=True)) or [item]
        else:
            paths.append(item)
    return paths


class Printer:
    """Writes each result as it comes, as a table, JSON lines or CSV."""

    def __init__(self, mode: str, labels: tuple[str, str]):
        self.mode, self.labels = mode, labels
        if mode == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(["path", "label", "score", *(f"p_{name}" for name in labels), "latency_ms", "issues", "error"])
        elif mode == "table":
            print(f"{'input':50s} {'label':6s} {'confidence':>10s} {'ms':>8s}  notes")

    def result(self, path: str, result) -> None:
        issues = "; ".join(result.issues)
        if self.mode == "json":
            print(json.dumps({"path": path, "label": result.label, "score": round(result.score, 6),
                              "probabilities": {k: round(v, 6) for k, v in result.probabilities.items()},
                              "latency_ms": round(result.latency_ms, 3), "issues": result.issues}))
        elif self.mode == "csv":
            self.csv.writerow([path, result.label, f"{result.score:.6f}",
                               *(f"{result.probabilities[name]:.6f}" for name in self.labels),
                               f"{result.latency_ms:.3f}", issues, ""])
        else:
            print(f"{path:50s} {result.label:6s} {result.score:10.3f} {result.latency_ms:8.2f}  "
                  + (f"FLAGGED: {issues}" if issues else ""))
        sys.stdout.flush()

    def error(self, path: str, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"path": path, "error": message}))
        elif self.mode == "csv":
            self.csv.writerow([path, "", "", "", "", "", "", message])
        else:
            print(f"{path:50s} ERROR  {message}")
        sys.stdout.flush()


def main(argv=None) -> int:
    args = parse_args(argv)
    from edge.classifier import Classifier

    try:
        classifier = Classifier(args.model, runtime=args.runtime, threads=args.threads,
                                check_quality=not args.no_quality)
    except (ModelError, RuntimeUnavailable) as error:
        print(f"edge-classify: {error}", file=sys.stderr)
        return 2
    printer = Printer("json" if args.json else "csv" if args.csv else "table", classifier.labels)
    failed = 0
    try:
        with classifier:
            for path in expand_inputs(args.inputs):
                try:
                    printer.result(path, classifier.classify(path))
                except ImageError as error:
                    failed += 1
                    printer.error(path, str(error).removeprefix(f"{path}: "))
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
