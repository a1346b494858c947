"""Write one DICOM Comprehensive SR per classified series (pydicom), in the same study, that a PACS can
store: the per-slice findings, each referencing its image (and frame), the series summary with its
rule, the model's name, version and SHA-256, and "research use only". Checked with dicom3tools'
dciodvfy in the tests.

This module owns writing the report; edge/dicom.py owns reading DICOM."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SCHEME = "99EDGEMED"  # a private coding scheme (PS3.16: designators starting 99 are local)
RESEARCH_ONLY = ("RESEARCH USE ONLY. Not for diagnostic use. Each slice was classified on its own by a model "
                 "trained on single 2D slices; whole-series accuracy was not measured.")
MAX_TEXT = 1024  # UT holds more; kept short for viewers


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning[:64]
    return item


CONCEPTS = {
    "report": ("EDGE0001", "Edge-medical slice classification report"),
    "notice": ("EDGE0002", "Research use notice"),
    "algorithm": ("111001", "Algorithm Name", "DCM"),
    "version": ("111003", "Algorithm Version", "DCM"),
    "sha256": ("EDGE0003", "Model SHA-256"),
    "summary": ("EDGE0004", "Series summary"),
    "call": ("EDGE0005", "Series call"),
    "rule": ("EDGE0006", "Series call rule"),
    "classified": ("EDGE0007", "Slices classified"),
    "positive": ("EDGE0008", "Slices called positive"),
    "highest": ("EDGE0009", "Highest positive-class probability"),
    "ood": ("EDGE0010", "Slices out of domain"),
    "left_out": ("EDGE0011", "Slices left out"),
    "findings": ("EDGE0012", "Per-slice findings"),
    "slice": ("EDGE0013", "Slice finding"),
    "probability": ("EDGE0014", "Positive-class probability"),
    "source": ("EDGE0015", "Source image"),
}


def _concept(key: str):
    value, meaning, *scheme = CONCEPTS[key]
    return [_code(value, meaning, scheme[0] if scheme else SCHEME)]


def _item(relationship: str, value_type: str, key: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    item.ConceptNameCodeSequence = _concept(key)
    return item


def _text(key: str, text: str, relationship: str = "CONTAINS"):
    item = _item(relationship, "TEXT", key)
    item.TextValue = text[:MAX_TEXT]
    return item


def _num(key: str, value: float, unit: tuple[str, str], relationship: str = "CONTAINS"):
    from pydicom.dataset import Dataset

    item = _item(relationship, "NUM", key)
    measured = Dataset()
    measured.NumericValue = f"{value:.6g}"
    measured.MeasurementUnitsCodeSequence = [_code(unit[0], unit[1], "UCUM")]
    item.MeasuredValueSequence = [measured]
    return item


def _container(key: str, children: list, relationship: str | None = "CONTAINS"):
    from pydicom.dataset import Dataset

    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = "CONTAINER"
    item.ConceptNameCodeSequence = _concept(key)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = children
    return item


def _image(info):
    from pydicom.dataset import Dataset

    item = _item("INFERRED FROM", "IMAGE", "source")
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = info.sop_class_uid, info.sop_instance_uid
    if info.frame is not None and info.sop_class_uid in MULTI_FRAME_CLASSES:
        reference.ReferencedFrameNumber = info.frame  # other classes cannot name a frame: the text does
    item.ReferencedSOPSequence = [reference]
    return item


# Storage SOP classes defined as multi-frame (a reference may name a frame): Enhanced MR, MR Color,
# Legacy Converted Enhanced MR, and the multi-frame secondary capture and ultrasound classes.
MULTI_FRAME_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3", "1.2.840.10008.5.1.4.1.1.4.4",
                       "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
                       "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4"}
COUNT = ("{slices}", "slices")
RATIO = ("1", "no units")
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription", "SpecificCharacterSet")


def build_sr(report, summary: dict, labels: tuple[str, str], model: dict, source_header):
    """-> a pydicom Dataset (Comprehensive SR) for one series. model: name, version, sha256;
    source_header: the Dataset of one of the series' images (patient and study are copied from it)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    now = datetime.now()
    ds = Dataset()
    for keyword in COPIED:  # Type 2 attributes are written empty when the image has none
        value = source_header.get(keyword)
        if value not in (None, "") or keyword not in ("StudyDescription", "SpecificCharacterSet"):
            setattr(ds, keyword, "" if value is None else value)
    ds.StudyInstanceUID = report.study_uid
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "SR", generate_uid(), 9000 + (report.series_number or 0) % 1000
    ds.SeriesDescription = f"edge-medical report: {report.series_description}"[:64]
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer, ds.ManufacturerModelName = "edge-medical", "edge-medical"
    ds.SoftwareVersions = str(model.get("version", ""))[:64]
    ds.InstanceNumber = 1
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.PerformedProcedureCodeSequence = []

    classified = [s for s in report.slices if s.answer is not None]
    evidence_series = Dataset()
    evidence_series.SeriesInstanceUID = report.series_uid
    seen, references = set(), []
    for s in classified:
        if s.info.sop_instance_uid not in seen:
            seen.add(s.info.sop_instance_uid)
            reference = Dataset()
            reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = s.info.sop_class_uid, s.info.sop_instance_uid
            references.append(reference)
    if references:
        evidence_series.ReferencedSOPSequence = references
        evidence = Dataset()
        evidence.StudyInstanceUID = report.study_uid
        evidence.ReferencedSeriesSequence = [evidence_series]
        ds.CurrentRequestedProcedureEvidenceSequence = [evidence]

    positive = labels[1]
    summary_items = [
        _text("call", f"{summary['call']}"),
        _text("rule", summary["call_rule"]),
        _num("classified", summary["classified"], COUNT),
        _num("positive", summary[f"called_{positive}"], COUNT),
        _num("ood", summary["out_of_domain"], COUNT),
        _num("left_out", summary["left_out"], COUNT),
    ]
    if summary["highest_probability"] is not None:
        summary_items.append(_num("highest", summary["highest_probability"], RATIO))
    line = (f"Series {report.series_uid}: {summary['classified']} slices classified, "
            f"{summary[f'called_{positive}']} called {positive}"
            + (f" (instances {', '.join(summary[f'{positive}_instances'])})" if summary[f"{positive}_instances"] else "")
            + (f", highest probability {summary['highest_probability']:.3f} (instance "
               f"{summary['highest_probability_instance']})" if summary["highest_probability"] is not None else "")
            + f", {summary['out_of_domain']} out of domain, {summary['left_out']} left out.")
    summary_items.insert(0, _text("summary", line))
    findings = []
    for s in classified:
        finding = _text("slice", f"instance {s.info.instance}: {s.answer}"
                                 + (" (out of domain)" if s.out_of_domain else ""))
        finding.ContentSequence = [_num("probability", s.probability, RATIO, "INFERRED FROM"), _image(s.info)]
        findings.append(finding)
    content = [
        _text("notice", RESEARCH_ONLY),
        _text("algorithm", str(model.get("name", ""))),
        _text("version", str(model.get("version", ""))),
        _text("sha256", str(model.get("sha256", ""))),
        _container("summary", summary_items),
    ]
    if findings:
        content.append(_container("findings", findings))
    root = _container("report", content, relationship=None)
    for keyword in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentSequence"):
        setattr(ds, keyword, root.get(keyword))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write_sr(report, summary: dict, labels: tuple[str, str], model: dict, out_dir: str | os.PathLike) -> Path:
    """Write the series' SR as OUT_DIR/<StudyInstanceUID>/<SeriesInstanceUID>_sr.dcm (a new file, moved
    into place when complete) and return its path."""
    from edge.dicom import read_header

    source = read_header(report.slices[0].info.path)
    ds = build_sr(report, summary, labels, model, source)
    folder = Path(out_dir) / _safe(report.study_uid or "unknown-study")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(report.series_uid or 'unknown-series')}_sr.dcm"
    partial = path.with_name(path.name + ".partial")
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return path


def _safe(uid: str) -> str:
    return "".join(c for c in uid if c.isdigit() or c == ".")[:64] or "unknown"
