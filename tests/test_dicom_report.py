"""edge-classify on DICOM studies: series summaries, the structured report (read back and checked by
dicom3tools' dciodvfy) and hostile DICOM files, one line each."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_mri
from dicom_helpers import SAGITTAL, write_mr

pydicom = pytest.importorskip("pydicom")

from edge.cli import main as classify_main  # noqa: E402
from edge.metadata import sha256_of  # noqa: E402

STUDY = "1.2.826.0.1.3680043.8.498.77"
AXIAL_SERIES, LOC_SERIES, SAG_SERIES = STUDY + ".1", STUDY + ".2", STUDY + ".3"
ROOT = Path(__file__).resolve().parents[1]


def make_study(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for instance in (2, 1, 3):
        write_mr(folder / f"IM{instance:05d}", synthetic_mri(instance, instance == 2), study=STUDY,
                 series=AXIAL_SERIES, instance=instance, bits=16)
    write_mr(folder / "IM_LOC", synthetic_mri(9, False), study=STUDY, series=LOC_SERIES, instance=1, series_number=2,
             image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    write_mr(folder / "IM_SAG.dcm", synthetic_mri(8, False), study=STUDY, series=SAG_SERIES, instance=1,
             series_number=3, orientation=SAGITTAL)
    from pydicom.data import get_testdata_file
    shutil.copy(get_testdata_file("test-SR.dcm", download=False), folder / "OLD_REPORT")
    return folder


def run_classify(capsys, *args) -> tuple[int, list[str]]:
    code = classify_main(["--model", "brain", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines()


def dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def test_study_folder_series_summaries_and_structured_report(tmp_path, capsys):
    study = make_study(tmp_path / "study")
    code, lines = run_classify(capsys, "--json", "--summary", "--sr", tmp_path / "sr", study)
    records = [json.loads(line) for line in lines]
    assert code != 1 and code != 2  # skipped objects and left-out slices are not failures
    slices = [r for r in records if "probability" in r or "label" in r]
    assert [Path(r["path"]).name for r in slices] == ["IM00001", "IM00002", "IM00003"]  # InstanceNumber order
    skipped = {Path(r["path"]).name: r["skipped"] for r in records if "skipped" in r}
    assert skipped["OLD_REPORT"] == "not an image (Comprehensive SR Storage; no Pixel Data)"
    assert skipped["IM_LOC"] == "localizer (ImageType LOCALIZER)"
    assert skipped["IM_SAG.dcm"].startswith("not axial (sagittal")
    summaries = {r["series_summary"]["series_instance_uid"]: r["series_summary"] for r in records if "series_summary" in r}
    assert set(summaries) == {AXIAL_SERIES, LOC_SERIES, SAG_SERIES}
    axial = summaries[AXIAL_SERIES]
    assert axial["study_instance_uid"] == STUDY and axial["slices"] == 3 and axial["classified"] == 3
    probabilities = [r.get("probability", (r.get("probabilities") or {}).get("yes")) for r in slices]
    assert axial["highest_probability"] == pytest.approx(max(probabilities), abs=1e-6)
    assert "was not measured" in axial["call_rule"]
    assert summaries[LOC_SERIES]["classified"] == 0 and summaries[LOC_SERIES]["call"] == "none"
    assert not any("summary" in r for r in records)  # no session summary: every input was DICOM

    reports = [r["sr"] for r in records if "sr" in r]
    assert len(reports) == 1  # only the series with classified slices gets a report
    sr = Path(reports[0])
    assert dciodvfy_errors(sr) == []
    ds = pydicom.dcmread(sr)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and ds.Modality == "SR"
    assert ds.StudyInstanceUID == STUDY and ds.SeriesInstanceUID not in (AXIAL_SERIES, STUDY)
    assert ds.PatientID == "EDGE-TEST-1"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    originals = {pydicom.dcmread(study / f"IM{i:05d}").SOPInstanceUID for i in (1, 2, 3)}
    assert evidence.SeriesInstanceUID == AXIAL_SERIES
    assert {item.ReferencedSOPInstanceUID for item in evidence.ReferencedSOPSequence} == originals

    def texts(items):
        for item in items:
            if "TextValue" in item:
                yield item.ConceptNameCodeSequence[0].CodeMeaning, item.TextValue
            yield from texts(item.get("ContentSequence", []))

    found = dict(texts(ds.ContentSequence))
    assert found["Research use notice"].startswith("RESEARCH USE ONLY")
    assert found["Algorithm Name"] == "brain_int8"
    assert found["Model SHA-256"] == sha256_of(ROOT / "models" / "brain_int8.tflite")
    assert found["Algorithm Version"].startswith("edge-medical ")
    findings = [v for k, v in texts(ds.ContentSequence) if k == "Slice finding"]
    assert [f.split(":")[0] for f in findings] == ["instance 1", "instance 2", "instance 3"]


def test_sr_dir_that_cannot_be_created_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = classify_main(["--model", "brain", "--sr", str(blocker / "sr"), str(tmp_path)])
    assert code == 2
    assert "--sr" in capsys.readouterr().err


def hostile_files(folder: Path) -> dict[str, str]:
    """name -> the expected start of its one-line reason."""
    folder.mkdir()
    good = write_mr(folder / "good.dcm", synthetic_mri(1, False), study=STUDY, series=AXIAL_SERIES, instance=1)
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[:300])
    (folder / "preamble.dcm").write_bytes(data[:128] + b"DUCK" + data[132:])
    (folder / "short_pixels.dcm").write_bytes(data[:-5000])
    huge = pydicom.dcmread(good)
    huge.Rows = huge.Columns = 65535
    huge.NumberOfFrames = 1000
    huge.save_as(folder / "huge_header.dcm")
    write_mr(folder / "private.dcm", synthetic_mri(2, False), study=STUDY, series=AXIAL_SERIES + ".9", instance=1,
             private=True)
    # a sequence whose item length runs past the end of the data set
    raw = bytearray(data)
    marker = raw.find(b"\x08\x00\x16\x00")  # (0008,0016) SOP Class UID: insert a malformed SQ before it
    bad_sequence = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x00\x00\x10\x00"
    (folder / "bad_sequence.dcm").write_bytes(bytes(raw[:marker]) + bad_sequence + bytes(raw[marker:]))
    return {"truncated.dcm": "incomplete or damaged DICOM object", "preamble.dcm": "not a DICOM file (no 'DICM' prefix",
            "short_pixels.dcm": "pixel data is", "huge_header.dcm": "too large (65535x65535",
            "bad_sequence.dcm": ""}


def test_hostile_dicom_files_one_line_each(tmp_path, capsys):
    expected = hostile_files(tmp_path / "bad")
    code, lines = run_classify(capsys, "--json", *sorted((tmp_path / "bad").iterdir()))
    assert code == 1
    records = {Path(json.loads(line)["path"]).name: json.loads(line) for line in lines}
    for name, start in expected.items():
        assert "error" in records[name], (name, records[name])
        assert records[name]["error"].startswith(start), (name, records[name]["error"])
    assert "error" not in records["good.dcm"] and "error" not in records["private.dcm"]


def test_an_image_without_the_dicom_extra_says_so(tmp_path, monkeypatch):
    import builtins

    from edge.images import ImageError, load_image

    path = write_mr(tmp_path / "a.dcm", synthetic_mri(1, False), study=STUDY, series=AXIAL_SERIES, instance=1)
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom" or name.startswith("pydicom."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(ImageError, match="needs the dicom extra"):
        load_image(path)
    assert np is not None
