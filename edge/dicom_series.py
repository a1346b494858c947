"""DICOM studies as series, not files: group slices by study and series, leave out what the model
was not trained on (other modalities, localizers, non-axial slices) with a reason, classify the rest
in InstanceNumber order and summarise each series.

The per-slice interface is small on purpose: a classify callable returns any result object, and
`slice_call` reads (answer, probability of the positive class, out of domain) from it, so a richer
result type changes one function. The series call is stated with its rule (SERIES_RULE); its
whole-series accuracy was never measured: the model was trained and validated on single slices."""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge.dicom import DicomError, DicomSkip, SliceInfo, iter_frames, read_header, slice_infos

MODALITIES = {"brain": ("MR",)}  # task -> the DICOM modalities its model reads; other tasks read none
AXIAL_TOLERANCE_DEGREES = 30.0  # slice normal within this angle of the patient's head-foot axis
SERIES_RULE = ("{positive} when at least one in-domain slice is called {positive} at the per-slice threshold; "
               "{negative} when none is; out_of_domain when more than half of the classified slices are out of "
               "domain; none when no slice was classified. The accuracy of this whole-series rule was not measured "
               "(the model was trained and validated on single slices).")


@dataclass
class SliceResult:
    info: SliceInfo
    answer: str | None = None  # the label (or uncertain, out_of_domain...) when classified
    probability: float | None = None  # of the positive class
    out_of_domain: bool | None = None
    left_out: str | None = None  # why the slice was not classified (a localizer, not axial...)
    error: str | None = None  # why it could not be read


@dataclass
class SeriesReport:
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    slices: list[SliceResult] = field(default_factory=list)

    def summary(self, labels: tuple[str, str]) -> dict:
        negative, positive = labels
        classified = [s for s in self.slices if s.answer is not None]
        flagged = [s for s in classified if s.out_of_domain]
        positives = [s for s in classified if not s.out_of_domain and s.answer == positive]
        scored = [s for s in classified if s.probability is not None]
        top = max(scored, key=lambda s: s.probability, default=None)
        if not classified:
            call = "none"
        elif len(flagged) > len(classified) / 2:
            call = "out_of_domain"
        else:
            call = positive if positives else negative
        reasons: dict[str, int] = {}
        for s in self.slices:
            if s.left_out:
                reasons[s.left_out] = reasons.get(s.left_out, 0) + 1
        return {"study_instance_uid": self.study_uid, "series_instance_uid": self.series_uid,
                "series_number": self.series_number, "series_description": self.series_description,
                "modality": self.modality, "slices": len(self.slices), "classified": len(classified),
                f"called_{positive}": len(positives), f"{positive}_instances": [s.info.instance for s in positives],
                "highest_probability": None if top is None else round(top.probability, 6),
                "highest_probability_instance": None if top is None else top.info.instance,
                "out_of_domain": len(flagged), "out_of_domain_instances": [s.info.instance for s in flagged],
                "left_out": sum(reasons.values()), "left_out_reasons": reasons,
                "errors": sum(1 for s in self.slices if s.error),
                "call": call, "call_rule": SERIES_RULE.format(positive=positive, negative=negative)}


def slice_call(result) -> tuple[str, float, bool | None]:
    """(answer, probability of the positive class, out of domain) from a classifier's result."""
    return result.label, float(result.probability), result.out_of_domain


def plane(orientation: tuple[float, ...]) -> tuple[str, float]:
    """('axial' | 'coronal' | 'sagittal', degrees between the slice normal and the head-foot axis)."""
    row, column = orientation[:3], orientation[3:]
    normal = (row[1] * column[2] - row[2] * column[1], row[2] * column[0] - row[0] * column[2],
              row[0] * column[1] - row[1] * column[0])
    length = math.sqrt(sum(v * v for v in normal))
    if length < 1e-6:
        return "degenerate", 90.0
    tilt = math.degrees(math.acos(min(1.0, abs(normal[2]) / length)))
    nearest = ("sagittal", "coronal", "axial")[max(range(3), key=lambda i: abs(normal[i]))]
    return nearest, tilt


def left_out_reason(info: SliceInfo, modalities: tuple[str, ...]) -> str | None:
    """Why a slice is not classified, or None (ImageType, Modality, ImageOrientationPatient)."""
    if info.modality not in modalities:
        return f"modality {info.modality or 'missing'} (this model reads {', '.join(modalities) or 'no DICOM'})"
    if "LOCALIZER" in info.image_type:
        return "localizer (ImageType LOCALIZER)"
    if info.orientation is None:
        return "orientation unknown (no ImageOrientationPatient)"
    name, tilt = plane(info.orientation)
    if tilt > AXIAL_TOLERANCE_DEGREES:
        return f"not axial ({name}, {tilt:.0f} degrees from axial; the model was trained on axial slices)"
    return None


@dataclass
class Scan:
    series: list[SeriesReport]  # in (StudyInstanceUID, SeriesNumber, SeriesInstanceUID) order
    problems: list[tuple[str, str, bool]]  # (path, one-line reason, skipped: True for a non-image object)


def scan(paths: Iterable[str | os.PathLike], modalities: tuple[str, ...]) -> Scan:
    """Read every header once and group the frames into series; no pixel is decoded here."""
    groups: dict[tuple[str, str], SeriesReport] = {}
    problems = []
    for path in paths:
        name = os.fspath(path)
        try:
            infos = slice_infos(read_header(name), name)
        except DicomSkip as error:
            problems.append((name, str(error), True))
            continue
        except DicomError as error:
            problems.append((name, str(error), False))
            continue
        for info in infos:
            key = (info.study_uid, info.series_uid)
            if key not in groups:
                groups[key] = SeriesReport(info.study_uid, info.series_uid, info.series_number,
                                           info.series_description, info.modality)
            groups[key].slices.append(SliceResult(info, left_out=left_out_reason(info, modalities)))
    for report in groups.values():
        report.slices.sort(key=lambda s: (s.info.instance_number is None, s.info.instance_number or 0,
                                          s.info.frame or 0, s.info.path))
    order = sorted(groups.values(), key=lambda r: (r.study_uid, r.series_number is None, r.series_number or 0,
                                                   r.series_uid))
    return Scan(order, problems)


def classify_series(report: SeriesReport, classify: Callable,
                    on_slice: Callable[[SliceResult, object], None] | None = None) -> SeriesReport:
    """Classify the slices not left out, one file (and one frame) at a time, in instance order;
    on_slice(slice, result or None) is called for every slice as it is done."""
    wanted: dict[str, dict[int | None, SliceResult]] = {}
    for s in report.slices:
        if s.left_out is None:
            wanted.setdefault(s.info.path, {})[s.info.frame] = s
    done: dict[tuple[str, int | None], object] = {}
    for path, by_frame in wanted.items():
        try:
            for info, rgb in iter_frames(path):
                target = by_frame.get(info.frame)
                if target is None:
                    continue
                try:
                    result = classify(rgb)
                except DicomError as error:
                    target.error = str(error).removeprefix(f"{path}: ")
                    continue
                target.answer, target.probability, target.out_of_domain = slice_call(result)
                done[(path, info.frame)] = result
        except DicomError as error:
            for s in by_frame.values():
                if s.answer is None and s.error is None:
                    s.error = str(error).removeprefix(f"{path}: ")
    if on_slice is not None:
        for s in report.slices:
            on_slice(s, done.get((s.info.path, s.info.frame)))
    return report


def find_dicom_files(folder: str | os.PathLike, is_other_image: Callable[[str], bool]) -> list[str]:
    """The DICOM files under a folder (by content, with or without an extension), sorted."""
    from edge.dicom import is_dicom_file

    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not is_other_image(name) and is_dicom_file(path):
                found.append(path)
    return sorted(found)


def modalities_of(task: str) -> tuple[str, ...]:
    return MODALITIES.get(task, ())


def classify_files(classifier, paths: Iterable[str | os.PathLike],
                   on_slice: Callable[[SeriesReport, SliceResult, object], None] | None = None) -> Scan:
    """Scan the files, then classify every series with an edge.classifier.Classifier, series by series."""
    result = scan(paths, modalities_of(classifier.spec.task))
    for report in result.series:
        callback = None if on_slice is None else (lambda s, r, report=report: on_slice(report, s, r))
        classify_series(report, classifier.classify, callback)
    return result


def model_identity(classifier) -> dict:
    """Name, version (the edge-medical release that ships it) and SHA-256 of the model file."""
    from importlib import metadata

    from edge.metadata import sha256_of

    try:
        version = metadata.version("edge-medical")
    except metadata.PackageNotFoundError:
        version = "unknown"
    path = classifier.model_path
    return {"name": path.stem, "version": f"edge-medical {version}", "sha256": sha256_of(path)}
