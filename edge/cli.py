"""edge-classify: classify image files offline with a TFLite model (no TensorFlow needed).

    edge-classify cell.bmp                          # the default model (leukemia int8 on a fresh install)
    edge-classify --model brain scans/ "more/*.png" --json

Every input gets one answer: a class (in plain words: blast / normal, tumour / no tumour), or
`uncertain` (too near the threshold), `out of domain` (unlike the training images) or `rejected` (a
quality gate), each with the reason. The probability shown is the calibrated probability of the
positive class; the threshold is on the same scale. JSON and CSV keep the class codes (all / hem,
yes / no) for scripts.

Exit status: 0 when every input got a class, 3 when some got none (uncertain, out of domain,
rejected) and none failed, 1 when any input failed or matched no image (the others are still
classified and printed, one line each), 2 for a usage, model or output error.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

from edge.args import thread_count
from edge.images import ImageError, is_image_file
from edge.interpreter import RUNTIMES, RuntimeUnavailable
from edge.metadata import ModelError
from edge.summary import SessionSummary, summary_line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursed) or globs")
    parser.add_argument("--model", help="a .tflite path or a shipped name (brain, leukemia, leukemia_float32, ...)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per input")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    parser.add_argument("--threads", type=thread_count, help="interpreter threads (1-64)")
    parser.add_argument("--runtime", choices=RUNTIMES, help="force a TFLite runtime (default: the first available)")
    parser.add_argument("--no-quality", action="store_true", help="skip the input quality gates")
    parser.add_argument("--label-all", action="store_true",
                        help="give every input a class, even one that is uncertain, out of domain or rejected "
                             "(research use; by default those get no class and say why)")
    parser.add_argument("--summary", action="store_true",
                        help="after the per-image lines, one summary of them all (a session: one slide or patient); "
                             "DICOM inputs get one summary per series")
    parser.add_argument("--sr", metavar="DIR", help="DICOM inputs: write one DICOM structured report per series into DIR")
    return parser.parse_args(argv)


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """-> (path, problem) pairs: files as given, folders recursed for image files, globs expanded;
    a folder without image files or a pattern that matches nothing is kept with its problem."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item)
                           for name in names if is_image_file(name))
            paths += [(path, None) for path in found] or [(item, "no image files in this folder")]
        elif not os.path.exists(item) and glob.has_magic(item):
            found = sorted(glob.glob(item, recursive=True))
            paths += [(path, None) for path in found] or [(item, "matches no file")]
        else:
            paths.append((item, None))
    return paths


def failure_reason(error: Exception) -> str:
    """One short line for any exception raised while classifying one input."""
    if isinstance(error, ImageError):
        return str(error)
    if isinstance(error, MemoryError):
        return "too large (out of memory)"
    text = " ".join(str(error).split())[:120]
    return f"cannot classify ({type(error).__name__}{': ' + text if text else ''})"


class Printer:
    """Writes each result as it comes, as a table in plain words, JSON lines or CSV (class codes)."""

    def __init__(self, mode: str, spec):
        self.mode, self.spec, self.labels = mode, spec, spec.labels
        self.positive = spec.display_name(spec.labels[1])
        if mode == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(["path", "label", "probability", "threshold", "reason", "model_label", "latency_ms",
                               "domain_score", "out_of_domain", "issues", "error"])
        elif mode == "table":
            print(f"{'input':50s} {'answer':13s} {f'P({self.positive})':>11s} {'ms':>7s}  "
                  f"(threshold {spec.threshold:.2f}; why, for inputs without a class)")

    def result(self, path: str, result) -> None:
        issues = "; ".join(result.issues)
        domain = None if result.domain_score is None else round(result.domain_score, 3)
        if self.mode == "json":
            print(json.dumps({"path": path, "label": result.label, "answer": self.spec.display_name(result.label),
                              "reason": result.reason, "probability": result.probability,
                              "threshold": round(self.spec.threshold, 6), "probabilities": result.probabilities,
                              "model_label": result.model_label, "latency_ms": round(result.latency_ms, 3),
                              "domain_score": domain, "out_of_domain": result.out_of_domain, "issues": result.issues}))
        elif self.mode == "csv":
            self.csv.writerow([path, result.label, f"{result.probability:.6f}", f"{self.spec.threshold:.6f}",
                               result.reason or "", result.model_label, f"{result.latency_ms:.3f}",
                               "" if domain is None else domain,
                               "" if result.out_of_domain is None else str(result.out_of_domain).lower(), issues, ""])
        else:
            print(f"{path:50s} {self.spec.display_name(result.label):13s} {result.probability:11.3f} "
                  f"{result.latency_ms:7.2f}  {result.reason or ''}".rstrip())
        sys.stdout.flush()

    def error(self, path: str, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"path": path, "error": message}))
        elif self.mode == "csv":
            self.csv.writerow([path, "", "", "", "", "", "", "", "", "", message])
        else:
            print(f"{path:50s} {'ERROR':13s} {message}")
        sys.stdout.flush()

    def summary(self, summary: dict) -> None:
        if self.mode == "json":
            print(json.dumps({"summary": summary}))
        else:
            line = summary_line(summary, self.spec)
            if self.mode == "csv":
                self.csv.writerow(["SUMMARY", summary["call"], summary["mean_probability"] or "", "", summary["call_reason"],
                                   "", "", "", "", line, ""])
            else:
                print(f"SUMMARY  {line}")
        sys.stdout.flush()


def main(argv=None) -> int:
    args = parse_args(argv)
    if sys.stdout is None:
        print("edge-classify: standard output is closed", file=sys.stderr)
        return 2
    from edge.classifier import Classifier, thread_report

    try:
        classifier = Classifier(args.model, runtime=args.runtime, threads=args.threads,
                                check_quality=not args.no_quality, label_all=args.label_all)
        if args.summary and classifier.spec.session_rule is None:
            raise ModelError(f"{classifier.model_path}: --summary needs session.rule in its metadata")
    except (ModelError, RuntimeUnavailable) as error:
        print(f"edge-classify: {error}", file=sys.stderr)
        return 2
    note = thread_report(classifier, args.threads)
    if note:
        print(f"edge-classify: {note}", file=sys.stderr)
    from edge.dicom_cli import check_sr_dir, classify_dicom, split_inputs

    inputs, dicom_files = split_inputs(args.inputs)  # DICOM files, by content, go series by series
    if args.sr and check_sr_dir(args.sr):
        print(f"edge-classify: {check_sr_dir(args.sr)}", file=sys.stderr)
        return 2
    summary = SessionSummary(classifier.labels, classifier.spec.session_rule)
    failed = unanswered = 0
    try:
        printer = Printer("json" if args.json else "csv" if args.csv else "table", classifier.spec)
        with classifier:
            for path, problem in expand_inputs(inputs):
                try:
                    if problem:
                        raise ImageError(problem)
                    result = classifier.classify(path)
                except Exception as error:  # one input's failure is its line, never the end of the run
                    failed += 1
                    summary.add(error=True)
                    printer.error(path, failure_reason(error).removeprefix(f"{path}: "))
                    continue
                summary.add(result.label, result.probability)
                unanswered += not result.answered
                printer.result(path, result)
            failed += classify_dicom(classifier, dicom_files, printer, args.summary, args.sr)
            if args.summary and (summary.images or not dicom_files):
                printer.summary(summary.as_dict())
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as error:  # a full disk, a closed or vanished output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"edge-classify: cannot write the results ({error.strerror or error})", file=sys.stderr)
        return 2
    return 1 if failed else 3 if unanswered else 0


if __name__ == "__main__":
    sys.exit(main())
