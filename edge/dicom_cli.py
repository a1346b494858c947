"""edge-classify's DICOM route (imported by edge/cli.py only): DICOM inputs are found by content,
classified series by series in InstanceNumber order, each slice printed as an image is, objects that
are not classified printed as SKIPPED with their reason, one summary per series with --summary and
one structured report per series with --sr DIR."""
from __future__ import annotations

import glob
import json
import os
import sys

from edge.images import is_image_file


def split_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """-> (inputs for the image route, DICOM files). A folder goes to both routes when it holds both
    kinds; a folder of DICOM files only (any names) goes to the DICOM route alone."""
    from edge.dicom import is_dicom_file
    from edge.dicom_series import find_dicom_files

    others, dicom = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = find_dicom_files(item, is_image_file)
            dicom += found
            has_images = any(is_image_file(name) for _, _, names in os.walk(item) for name in names)
            if has_images or not found:
                others.append(item)
        elif not os.path.exists(item) and glob.has_magic(item):
            matched = sorted(glob.glob(item, recursive=True))
            found = [path for path in matched if os.path.isfile(path) and not is_image_file(path) and is_dicom_file(path)]
            dicom += found
            if len(found) < len(matched) or not matched:
                others.append(item)  # the image route expands it again and prints what matched no file
        elif os.path.isfile(item) and not is_image_file(item) and is_dicom_file(item):
            dicom.append(item)
        else:
            others.append(item)
    return others, dicom


def check_sr_dir(path: str) -> str | None:
    """-> None, or why --sr DIR cannot be used (checked before any work)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        return f"--sr {path}: cannot create it ({error.strerror or error})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"--sr {path}: not writable"
    return None


def _skipped(printer, path: str, reason: str) -> None:
    if printer.mode == "json":
        print(json.dumps({"path": path, "skipped": reason}))
    elif printer.mode == "csv":
        printer.error(path, f"skipped: {reason}")  # the error column, in the printer's own layout
    else:
        print(f"{path:50s} SKIPPED  {reason}")


def _series_summary(printer, summary: dict, labels: tuple[str, str]) -> None:
    positive = labels[1]
    if printer.mode == "json":
        print(json.dumps({"series_summary": summary}))
        return
    instances = summary[f"{positive}_instances"]
    top = summary["highest_probability"]
    words = printer.spec.display_name(positive)  # plain words: "tumour", not the code "yes"
    line = (f"study {summary['study_instance_uid']} series {summary['series_instance_uid']} "
            f"({summary['series_description'] or 'no description'}): {summary['slices']} slices, "
            f"{summary['classified']} classified, {summary[f'called_{positive}']} called {words}"
            + (f" (instances {', '.join(instances)})" if instances else "")
            + ("" if top is None else f", highest P({words}) {top:.3f} at instance {summary['highest_probability_instance']}")
            + f", {summary['out_of_domain']} out of domain, {summary['left_out']} left out: call "
            f"{printer.spec.display_name(summary['call'])} [rule: {summary['call_rule']}]")
    if printer.mode == "csv":
        printer.error("SERIES_SUMMARY", line)  # the line in the error column, in the printer's own layout
    else:
        print(f"SERIES   {line}")


def classify_dicom(classifier, paths: list[str], printer, summaries: bool, sr_dir: str | None) -> int:
    """Classify DICOM files series by series and print them; -> the number of failed inputs."""
    from edge.dicom import DicomError
    from edge.dicom_series import classify_files, model_identity

    if not paths:
        return 0
    failed = 0

    def on_slice(report, item, result) -> None:
        nonlocal failed
        name = item.info.path if item.info.frame is None else f"{item.info.path}#frame{item.info.frame}"
        if result is not None:
            printer.result(name, result)
        elif item.error:
            failed += 1
            printer.error(name, item.error)
        elif item.left_out:
            _skipped(printer, name, item.left_out)
        sys.stdout.flush()

    try:
        import pydicom  # noqa: F401
    except ImportError:
        for path in paths:
            printer.error(path, "a DICOM file; reading DICOM needs the dicom extra (pip install 'edge-medical[dicom]')")
        return len(paths)
    scanned = classify_files(classifier, paths, on_slice=on_slice)
    for path, reason, skipped in scanned.problems:
        reason = reason.removeprefix(f"{path}: ")
        if skipped:
            _skipped(printer, path, reason)
        else:
            failed += 1
            printer.error(path, reason)
    model = model_identity(classifier) if sr_dir else None
    for report in scanned.series:
        summary = report.summary(classifier.labels)
        if summaries:
            _series_summary(printer, summary, classifier.labels)
        if sr_dir and summary["classified"]:
            from edge.dicom_sr import write_sr

            try:
                written = write_sr(report, summary, classifier.labels, model, sr_dir)
            except (OSError, DicomError) as error:
                failed += 1
                printer.error(report.series_uid, f"cannot write the structured report ({error})")
                continue
            if printer.mode == "json":
                print(json.dumps({"series_instance_uid": report.series_uid, "sr": str(written)}))
            elif printer.mode == "table":
                print(f"SR       {written}")
        sys.stdout.flush()
    return failed
