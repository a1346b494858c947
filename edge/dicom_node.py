"""edge-dicom: a DICOM node the scanner can send to (pynetdicom Storage SCP).

    edge-dicom --aet EDGE_MEDICAL --port 11112 --allow MR_SCANNER --spool /var/lib/edge-medical/spool \\
               --out /var/lib/edge-medical/dicom [--send-to PACS@10.0.0.5:104]

It answers C-ECHO and accepts MR images (MR, Enhanced MR, Legacy Converted Enhanced MR Image Storage)
from the allowed calling AE titles only, addressed to its own AE title. Each association's objects are
received into SPOOL/incoming/ and stored under SPOOL/<association>/, at most --max-objects objects
and --max-mb megabytes: the first object beyond is answered 0xA700 (out of resources), and a sender
that goes on sending after that is aborted, its objects discarded. When the association is released
its series are classified, one JSON line per series is appended to OUT/results.jsonl (flushed and
fsynced), one DICOM SR per series is written under OUT/sr/ and, with --send-to, sent back with
C-STORE; then the association's spool folder is removed. An aborted association, or one idle for
--idle-timeout seconds (then aborted), is logged and its objects discarded. At most two associations
at once.

Exit status: 0 after SIGTERM or SIGINT, 2 for a usage, model or port error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from edge.args import thread_count

MR_STORAGE = ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4")
MAX_ASSOCIATIONS = 2
AET_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 characters, no backslash


def ae_title(text: str) -> str:
    if not AET_PATTERN.match(text) or not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not an AE title (1-16 printable characters, no backslash)")
    return text.strip()


def destination(text: str) -> tuple[str, str, int]:
    match = re.fullmatch(r"(.+)@([^@:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", text)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104")
    return ae_title(match.group(1)), match.group(2).strip("[]"), int(match.group(3))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-dicom", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aet", type=ae_title, default="EDGE_MEDICAL", help="this node's AE title (default EDGE_MEDICAL)")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0; 127.0.0.1: this device only)")
    parser.add_argument("--port", type=port_number, default=11112, help="TCP port (default 11112; 0: a free port, printed)")
    parser.add_argument("--allow", type=ae_title, action="append", required=True, metavar="AET",
                        help="a calling AE title allowed to send (repeat for several)")
    parser.add_argument("--spool", required=True, help="folder for the objects of associations in progress")
    parser.add_argument("--out", required=True, help="folder for results.jsonl and the structured reports (sr/)")
    parser.add_argument("--model", default="brain", help="a .tflite path or a shipped name (default brain)")
    parser.add_argument("--send-to", type=destination, metavar="AET@HOST:PORT",
                        help="send each structured report there (C-STORE), e.g. the PACS that holds the study")
    parser.add_argument("--max-objects", type=positive_int, default=2000, help="objects per association (default 2000)")
    parser.add_argument("--max-mb", type=positive_int, default=1024, help="megabytes per association (default 1024)")
    parser.add_argument("--idle-timeout", type=positive_int, default=60,
                        help="seconds an association may stay silent before it is aborted (default 60)")
    parser.add_argument("--threads", type=thread_count, help="interpreter threads (1-64)")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"edge-dicom: {message}", flush=True)


class ResultLog:
    """JSON lines appended, flushed and fsynced one at a time: a crash loses at most the line being written."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


class Node:
    def __init__(self, args, classifier):
        self.args, self.classifier = args, classifier
        self.spool, self.out = Path(args.spool), Path(args.out)
        self.log = ResultLog(self.out / "results.jsonl")
        self.model = None
        self.lock = threading.Lock()  # one classification at a time (one interpreter)
        self.state: dict[int, dict] = {}  # id(association) -> its spool folder and counts
        self.counter = 0

    # -- association life cycle -------------------------------------------------------------
    def _state(self, assoc) -> dict:
        with self.lock:
            key = id(assoc)
            if key not in self.state:
                self.counter += 1
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                folder = self.spool / f"{stamp}-{os.getpid()}-{self.counter}"
                self.state[key] = {"folder": folder, "objects": 0, "bytes": 0, "refused": 0,
                                   "calling": assoc.requestor.ae_title, "done": False}
            return self.state[key]

    def on_store(self, event) -> int:
        state = self._state(event.assoc)
        try:
            source = Path(event.dataset_path)
            size = source.stat().st_size
        except (AttributeError, OSError):
            return 0xA700
        if state["objects"] >= self.args.max_objects or state["bytes"] + size > self.args.max_mb * 1_000_000:
            state["refused"] += 1
            source.unlink(missing_ok=True)
            if state["refused"] > 1:  # it went on sending after a refusal: cut it off, free its slot
                event.assoc.abort()
            return 0xA700  # refused: out of resources
        try:
            state["folder"].mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), state["folder"] / f"{state['objects']:06d}.dcm")
        except OSError as error:
            say(f"cannot spool an object from {state['calling']} ({error.strerror or error})")
            source.unlink(missing_ok=True)
            return 0xA700
        state["objects"] += 1
        state["bytes"] += size
        return 0x0000

    def on_released(self, event) -> None:
        state = self._state(event.assoc)
        state["done"] = True
        try:
            self.process(state)
        except Exception as error:  # never the end of the node
            say(f"association from {state['calling']}: cannot process ({type(error).__name__}: {error})")
            self.log.write({"event": "error", "calling_aet": state["calling"], "error": f"{type(error).__name__}: {error}"})
        finally:
            shutil.rmtree(state["folder"], ignore_errors=True)

    def on_closed(self, event) -> None:
        """Connection closed: an association that was not released (aborted, timed out) is discarded."""
        with self.lock:
            state = self.state.pop(id(event.assoc), None)
        if state is None or state["done"]:
            return
        shutil.rmtree(state["folder"], ignore_errors=True)
        why = "it went on sending over its limits" if state["refused"] > 1 else "it ended without release"
        say(f"association from {state['calling']} aborted ({why}): {state['objects']} objects discarded")
        self.log.write({"event": "aborted", "calling_aet": state["calling"], "objects_discarded": state["objects"],
                        "objects_refused": state["refused"]})

    # -- classification and reports ---------------------------------------------------------
    def process(self, state: dict) -> None:
        from edge.dicom_series import classify_files, model_identity
        from edge.dicom_sr import write_sr

        files = sorted(str(p) for p in state["folder"].glob("*.dcm")) if state["folder"].exists() else []
        if not files and not state["refused"]:
            return  # a C-ECHO or an empty association
        say(f"association from {state['calling']} released: {state['objects']} objects"
            + (f", {state['refused']} refused over the limits" if state["refused"] else ""))
        if state["refused"]:
            self.log.write({"event": "refused", "calling_aet": state["calling"], "objects_refused": state["refused"]})
        with self.lock:
            if self.model is None:
                self.model = model_identity(self.classifier)
            scanned = classify_files(self.classifier, files)
        for path, reason, skipped in scanned.problems:
            self.log.write({"event": "skipped" if skipped else "error", "calling_aet": state["calling"],
                            "reason": reason.replace(str(state["folder"]) + os.sep, "")})
        labels = self.classifier.labels
        for report in scanned.series:
            summary = report.summary(labels)
            slices = [{"instance": s.info.instance, "sop_instance_uid": s.info.sop_instance_uid, "answer": s.answer,
                       "probability": None if s.probability is None else round(s.probability, 6),
                       "out_of_domain": s.out_of_domain, "left_out": s.left_out, "error": s.error}
                      for s in report.slices]
            record = {"event": "series", "calling_aet": state["calling"], "model": self.model["name"],
                      "summary": summary, "slices": slices}
            if summary["classified"]:
                sr = write_sr(report, summary, labels, self.model, self.out / "sr")
                record["sr"] = str(sr)
                if self.args.send_to:
                    record["sent"] = self.send(sr)
            self.log.write(record)
            say(f"series {report.series_uid}: {summary['classified']} classified, "
                f"{summary[f'called_{labels[1]}']} called {labels[1]}, call {summary['call']}"
                + (f", SR {record['sr']}" if "sr" in record else "") + (f", sent: {record['sent']}" if "sent" in record else ""))

    def send(self, path: Path) -> str:
        """C-STORE one SR to --send-to; -> 'ok' or a one-line reason."""
        from pydicom import dcmread
        from pynetdicom import AE

        aet, host, port = self.args.send_to
        ae = AE(ae_title=self.args.aet)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.88.33")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.connection_timeout = 10
        assoc = ae.associate(host, port, ae_title=aet)
        if not assoc.is_established:
            return f"association with {aet}@{host}:{port} failed"
        try:
            status = assoc.send_c_store(dcmread(path))
            code = getattr(status, "Status", None)
            return "ok" if code == 0 else f"C-STORE status {'none' if code is None else hex(code)}"
        finally:
            assoc.release()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from pynetdicom import AE, _config, evt
    except ImportError:
        print("edge-dicom: needs the dicom extra (pip install 'edge-medical[dicom]')", file=sys.stderr)
        return 2
    from edge.classifier import Classifier
    from edge.dicom_series import modalities_of
    from edge.interpreter import RuntimeUnavailable
    from edge.metadata import ModelError

    try:
        classifier = Classifier(args.model, threads=args.threads)
    except (ModelError, RuntimeUnavailable) as error:
        print(f"edge-dicom: {error}", file=sys.stderr)
        return 2
    if not modalities_of(classifier.spec.task):
        print(f"edge-dicom: {classifier.model_path.name} is a {classifier.spec.task} model, which reads no DICOM "
              "modality (the brain model reads MR)", file=sys.stderr)
        return 2
    incoming = Path(args.spool) / "incoming"
    try:
        shutil.rmtree(incoming, ignore_errors=True)  # parts of objects left by a crash
        for folder in (incoming, Path(args.out), Path(args.out) / "sr"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"edge-dicom: cannot create {error.filename} ({error.strerror})", file=sys.stderr)
        return 2
    # pynetdicom writes each object as it arrives to a temporary file: on the spool's disk, not in a
    # /tmp that may be RAM (tmpfs), and moved to its association's folder by a rename, not a copy
    tempfile.tempdir = str(incoming)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # its log is per PDU; ours is one line per event
    _config.STORE_RECV_CHUNKED_DATASET = True  # objects go to a file as they arrive, not to memory
    node = Node(args, classifier)
    ae = AE(ae_title=args.aet)
    ae.require_called_aet = True
    ae.require_calling_aet = args.allow
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.acse_timeout = ae.dimse_timeout = 30
    ae.network_timeout = args.idle_timeout
    ae.add_supported_context("1.2.840.10008.1.1")  # Verification: C-ECHO
    for sop_class in MR_STORAGE:
        ae.add_supported_context(sop_class)
    handlers = [(evt.EVT_C_STORE, node.on_store), (evt.EVT_RELEASED, node.on_released),
                (evt.EVT_CONN_CLOSE, node.on_closed)]
    try:
        server = ae.start_server((args.bind, args.port), block=False, evt_handlers=handlers)
    except OSError as error:
        print(f"edge-dicom: cannot listen on {args.bind}:{args.port} ({error.strerror or error})", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    host, port = server.server_address[:2]
    say(f"{args.aet} listening on {host}:{port}, accepting MR images from {', '.join(args.allow)}")
    while not stop.wait(1.0):
        pass
    say("stopping")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
