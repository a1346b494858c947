"""edge-dicom on loopback: a study sent by dcmtk's storescu and by pynetdicom, its SR received back by a
second SCP; C-ECHO; unknown callers refused; an association over its limits or that never releases.
Every wait is bounded; the node is a subprocess stopped (and killed if need be) at the end."""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import synthetic_mri
from dicom_helpers import MR_IMAGE_STORAGE, write_mr

pynetdicom = pytest.importorskip("pynetdicom")
pydicom = pytest.importorskip("pydicom")

ROOT = Path(__file__).resolve().parents[1]
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.88", "1.2.826.0.1.3680043.8.498.88.1"
NODE_AET, SCANNER = "EDGE_TEST", "SCANNER"


def wait_for(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


class Receiver:
    """A second Storage SCP (pynetdicom) on a free loopback port that keeps what it is sent."""

    def __init__(self):
        from pynetdicom import AE, evt

        self.received = []
        ae = AE(ae_title="PACS")
        ae.add_supported_context("1.2.840.10008.5.1.4.1.1.88.33")
        handler = (evt.EVT_C_STORE, lambda event: self.received.append(event.dataset) or 0x0000)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[handler])
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    scp = Receiver()
    yield scp
    scp.close()


def start_node(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "edge.dicom_node", "--aet", NODE_AET, "--bind", "127.0.0.1", "--port", "0",
               "--allow", SCANNER, "--spool", str(tmp_path / "spool"), "--out", str(tmp_path / "out"), *extra]
    node = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([node.stdout], [], [], 1.0)
        if ready:
            line = node.stdout.readline()
            if "listening on" in line:
                return node, int(line.rsplit(":", 1)[1].split(",")[0])
            if not line:
                break
    node.kill()
    pytest.fail(f"edge-dicom did not start: {node.stdout.read()}")


def stop_node(node: subprocess.Popen) -> str:
    node.terminate()
    try:
        out, _ = node.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        node.kill()
        out, _ = node.communicate(timeout=10)
    assert node.returncode == 0, out
    assert "Traceback" not in out
    return out


def results(tmp_path: Path) -> list[dict]:
    path = tmp_path / "out" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make_study(folder: Path, count: int = 3, series: str = SERIES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_mr(folder / f"IM{i:04d}", synthetic_mri(i, i == 2), study=STUDY, series=series, instance=i)
            for i in range(1, count + 1)]


def associate(port: int, calling: str = SCANNER, contexts=(MR_IMAGE_STORAGE,)):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=NODE_AET)


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu not installed (apt-get install dcmtk)")
def test_storescu_and_pynetdicom_studies_get_a_report_sent_back(tmp_path, receiver):
    node, port = start_node(tmp_path, "--send-to", f"PACS@127.0.0.1:{receiver.port}")
    try:
        echo = subprocess.run(["echoscu", "-aet", SCANNER, "-aec", NODE_AET, "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
        files = make_study(tmp_path / "study")
        sent = subprocess.run(["storescu", "-aet", SCANNER, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, files)],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert wait_for(lambda: [r for r in results(tmp_path) if r["event"] == "series"], 60)
        assert wait_for(lambda: len(receiver.received) == 1, 30)

        # the same study again from pynetdicom, a second series
        other = make_study(tmp_path / "study2", count=2, series=SERIES + ".2")
        assoc = associate(port)
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(path)).Status for path in other]
        assoc.release()
        assert statuses == [0, 0]
        assert wait_for(lambda: len(receiver.received) == 2, 60)

        # an unknown calling AE title is refused, and nothing is stored
        refused = subprocess.run(["storescu", "-aet", "INTRUDER", "-aec", NODE_AET, "127.0.0.1", str(port),
                                  str(files[0])], capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    finally:
        out = stop_node(node)
    series = [r for r in results(tmp_path) if r["event"] == "series"]
    assert [r["summary"]["series_instance_uid"] for r in series] == [SERIES, SERIES + ".2"]
    assert [r["summary"]["classified"] for r in series] == [3, 2]
    assert all(r["sent"] == "ok" and r["calling_aet"] == SCANNER for r in series)
    assert [s["instance"] for s in series[0]["slices"]] == ["1", "2", "3"]
    first = receiver.received[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and first.StudyInstanceUID == STUDY
    evidence = first.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == SERIES
    assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == \
        {pydicom.dcmread(path).SOPInstanceUID for path in files}
    assert spooled_files(tmp_path) == []  # spool emptied after each association
    assert "series " + SERIES in out


def tiny_object(number: int):
    """A very small MR object: the header only, a 1x1 pixel."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = STUDY, SERIES + ".7", "MR", number
    ds.Rows = ds.Columns = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = b"\x00\x00"
    return ds


def spooled_files(tmp_path: Path) -> list[Path]:
    return [path for path in (tmp_path / "spool").rglob("*") if not path.is_dir()]


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, from /proc."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu not installed (apt-get install dcmtk)")
def test_an_association_of_10000_tiny_objects_is_cut_off_and_the_node_keeps_serving(tmp_path):
    tiny_object(0).save_as(tmp_path / "tiny.dcm", enforce_file_format=True)
    flood = tmp_path / "flood"
    flood.mkdir()
    for number in range(10_000):  # 10,000 objects for storescu: links to one file
        os.link(tmp_path / "tiny.dcm", flood / f"{number:05d}.dcm")
    node, port = start_node(tmp_path, "--max-objects", "20")
    try:
        rss = memory_kb(node.pid, "VmRSS")
        # dcmtk's storescu told not to halt on a failed store sends all 10,000 in one association: the
        # first 20 are spooled, the 21st refused (0xA700), the 22nd aborts the association
        started = time.monotonic()
        sent = subprocess.run(["storescu", "--no-halt", "+sd", "-aet", SCANNER, "-aec", NODE_AET, "127.0.0.1", str(port),
                               str(flood)], capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - started
        assert sent.returncode != 0 and seconds < 20, (seconds, sent.stderr[-2000:])
        assert wait_for(lambda: [r for r in results(tmp_path) if r["event"] == "aborted"], 30)
        assert spooled_files(tmp_path) == []  # its 20 objects discarded

        # a sender of 10,000 that stops at the refusal and releases gets its 20 objects processed
        assoc = associate(port)
        assert assoc.is_established
        codes = []
        for number in range(10_000):
            codes.append(assoc.send_c_store(tiny_object(number)).Status)
            if codes[-1] != 0x0000:
                break
        assoc.release()
        assert codes == [0x0000] * 20 + [0xA700]
        assert wait_for(lambda: [r for r in results(tmp_path) if r["event"] == "series"], 60)
        assert memory_kb(node.pid, "VmHWM") - rss < 50_000  # the peak since start: within 50 MB of the start

        # still serving: C-ECHO and a study, both from dcmtk
        echo = subprocess.run(["echoscu", "-aet", SCANNER, "-aec", NODE_AET, "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
        study = subprocess.run(["storescu", "-aet", SCANNER, "-aec", NODE_AET, "127.0.0.1", str(port),
                                *map(str, make_study(tmp_path / "study"))], capture_output=True, text=True, timeout=60)
        assert study.returncode == 0, study.stderr
        assert wait_for(lambda: [r for r in results(tmp_path) if r["event"] == "series"
                                 and r["summary"]["series_instance_uid"] == SERIES], 60)
    finally:
        out = stop_node(node)
    print(f"storescu: 10,000 objects offered, association aborted, client done in {seconds:.1f} s")
    records = results(tmp_path)
    assert [(r["objects_discarded"], r["objects_refused"]) for r in records if r["event"] == "aborted"] == [(20, 2)]
    assert [r["objects_refused"] for r in records if r["event"] == "refused"] == [1]
    assert [r["summary"]["classified"] for r in records if r["event"] == "series"
            and r["summary"]["series_instance_uid"] == SERIES] == [3]
    assert [line for line in out.splitlines() if "aborted" in line] == \
        [f"edge-dicom: association from {SCANNER} aborted (it went on sending over its limits): 20 objects discarded"]
    assert spooled_files(tmp_path) == []


def test_hostile_objects_and_a_silent_association_leave_the_node_serving(tmp_path):
    node, port = start_node(tmp_path, "--idle-timeout", "3")
    try:
        # hostile objects: a header claiming 65535 x 65535 x 1000 frames, pixel data shorter than the header,
        # private tags: each is one line in the log
        huge = tiny_object(1)
        huge.Rows = huge.Columns = 65535
        huge.NumberOfFrames = 1000
        short = pydicom.dcmread(make_study(tmp_path / "short", count=1)[0])
        short.PixelData = short.PixelData[:100]
        private = pydicom.dcmread(write_mr(tmp_path / "private.dcm", synthetic_mri(5, False), study=STUDY,
                                           series=SERIES + ".8", instance=1, private=True))
        assoc = associate(port)
        assert [assoc.send_c_store(ds).Status for ds in (huge, short, private)] == [0, 0, 0]
        assoc.release()

        # an association that never releases is aborted after --idle-timeout, its objects discarded
        silent = associate(port)
        assert silent.is_established
        assert silent.send_c_store(tiny_object(1)).Status == 0
        assert wait_for(lambda: silent.is_aborted or not silent.is_alive(), 30)
        assert wait_for(lambda: any(r["event"] == "aborted" for r in results(tmp_path)), 30)

        # still serving
        assoc = associate(port, contexts=("1.2.840.10008.1.1",))
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
        assert wait_for(lambda: len([r for r in results(tmp_path) if r["event"] == "series"]) >= 2, 60), results(tmp_path)
    finally:
        out = stop_node(node)
    assert [r["objects_discarded"] for r in results(tmp_path) if r["event"] == "aborted"] == [1]
    errors = [r["reason"] for r in results(tmp_path) if r["event"] == "error"]
    errors += [s["error"] for r in results(tmp_path) if r["event"] == "series" for s in r["slices"] if s["error"]]
    assert any("too large (65535x65535" in reason for reason in errors)
    assert any("pixel data is 100 bytes" in reason for reason in errors)
    private_series = [r for r in results(tmp_path) if r["event"] == "series"
                      and r["summary"]["series_instance_uid"] == SERIES + ".8"]
    assert private_series and private_series[0]["summary"]["classified"] == 1
    assert all("\n" not in reason for reason in errors)
    assert spooled_files(tmp_path) == []
    assert os.path.exists(tmp_path / "out" / "results.jsonl") and "Traceback" not in out
