"""A count at the bench: one folder per session, where captured fields or cells, the device's answer
for each cell, the technician's review of each cell and the approval are kept.

    <sessions>/<id>/session.json    name, model and its SHA-256, labels, when started (written once)
    <sessions>/<id>/frames/C.png    capture C as the camera gave it
    <sessions>/<id>/cells/C-K.png   cell K of capture C as the model saw it
    <sessions>/<id>/results.jsonl   one line per captured cell: the device's answer (append-only)
    <sessions>/<id>/reviews.jsonl   one line per review and the approval (append-only)
    <sessions>/<id>/export/{all,hem}/UID_<id>_<C>_<K>_<class>.png   reviewed cells (export())

The folder's name <id> is made here (digits: the start time and a counter), never from a name sent
by the page, so a session name never becomes a path; every file is written under the folder. Each
log line goes to its file in one write() on an O_APPEND descriptor followed by fsync, and a line cut
by a crash is cut off when the folder is opened again (as edge.live.ResultsLog): a review made is a
review kept. Images are written to a temporary name, fsynced and renamed before their result line,
so a line never names a missing image. Every captured cell is counted once, however long it stayed
in view. A verified count counts the technician's labels; "not_a_cell" removes a cell from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge.summary import Z95, wilson_interval

NOT_A_CELL = "not_a_cell"
SESSION_ID_DIGITS = 14  # YYYYMMDDHHMMSS, then two more digits when that second is taken


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AppendLog:
    """JSON lines appended in one write() each and fsynced; a partial last line (a crash mid-write)
    is cut off at open, a failed or short write is cut back off (the file only holds whole lines)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            start = max(0, size - (1 << 20))
            tail = os.pread(self.fd, size - start, start)
            os.ftruncate(self.fd, start + tail.rfind(b"\n") + 1 if b"\n" in tail else start)

    def records(self) -> list[dict]:
        with open(self.path, "rb") as handle:
            return [json.loads(line) for line in handle if line.endswith(b"\n")]

    def write(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        size = os.fstat(self.fd).st_size
        try:
            if os.write(self.fd, data) != len(data):
                raise OSError(28, "short write")
            os.fsync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, size)
            except OSError:
                pass
            raise

    def close(self) -> None:
        os.close(self.fd)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB image as PNG, whole or not at all (temporary name, fsync, rename)."""
    import cv2
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    temporary = path.with_name(path.name + ".part")
    with open(temporary, "wb") as handle:
        handle.write(data.tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class SessionLocked(Exception):
    """The session was approved: nothing more is captured or reviewed in it."""


class Bench:
    """One session's folder (see the module's docstring). Thread-safe: the loop captures while the
    web page reviews."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "session.json").read_text(encoding="utf-8"))
        self.labels = tuple(self.meta["labels"])
        self._lock = threading.Condition()
        (self.folder / "frames").mkdir(exist_ok=True)
        (self.folder / "cells").mkdir(exist_ok=True)
        self.results = AppendLog(self.folder / "results.jsonl")
        self.reviews = AppendLog(self.folder / "reviews.jsonl")
        self._cells = {r["cell"]: r for r in self.results.records() if "cell" in r}
        self._captures = max((r["capture"] for r in self._cells.values()), default=0)
        self._captures = max([self._captures] + [r["capture"] for r in self.results.records() if "cells" in r])
        self._review: dict[int, dict] = {}
        self.approved: dict | None = None
        for record in self.reviews.records():
            if record.get("event") == "approve":
                self.approved = record
            elif record.get("cell") in self._cells:
                self._review[record["cell"]] = record

    @classmethod
    def create(cls, root, name: str | None, *, labels, names: dict, model_path, mode: str,
               session_rule=None) -> "Bench":
        """A new session folder under root (made if missing), named by its start time."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        for suffix in [""] + [f"{n:02d}" for n in range(1, 100)]:
            folder = root / (stamp + suffix)
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise OSError(f"{root}: no free session folder for {stamp}")
        meta = {"id": folder.name, "name": name, "started": _now_iso(), "mode": mode,
                "model": Path(model_path).name, "model_sha256": file_sha256(model_path),
                "labels": list(labels), "names": dict(names),
                "session_rule": None if session_rule is None else session_rule.as_metadata()}
        temporary = folder / "session.json.part"
        temporary.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, folder / "session.json")
        return cls(folder)

    @property
    def id(self) -> str:
        return self.meta["id"]

    def close(self) -> None:
        self.results.close()
        self.reviews.close()

    # -- the loop's side -----------------------------------------------------------------------
    def capture(self, rgb: np.ndarray, record: dict, frame: int | None = None, crops=None) -> list[int]:
        """One captured field (record["cells"]: each cell with its box and answer; crops: the cells as
        the model saw them, else cut from the frame) or one cell (the whole frame, record holds its
        answer). -> the new cells' ids."""
        with self._lock:
            if self.approved:
                raise SessionLocked("the session is approved")
            number = self._captures + 1
            frame_path = self.folder / "frames" / f"{number:06d}.png"
            _write_png(frame_path, rgb)
            answers = record["cells"] if "cells" in record else [dict(record, box=None)]
            ids = []
            for index, answer in enumerate(answers, 1):
                if crops is not None:
                    crop = crops[index - 1]
                elif answer.get("box") is None:
                    crop = rgb
                else:
                    x, y, w, h = answer["box"]
                    crop = rgb[max(0, y):y + h, max(0, x):x + w]
                crop_path = self.folder / "cells" / f"{number:06d}-{index:03d}.png"
                _write_png(crop_path, crop)
                cell = {"cell": len(self._cells) + 1, "capture": number, "index": index, "time": _now_iso(),
                        "frame": frame, "box": answer.get("box"),
                        **{k: answer[k] for k in ("label", "probability", "model_label", "reason",
                                                  "out_of_domain", "domain_score") if k in answer},
                        "crop": f"cells/{crop_path.name}"}
                self.results.write(cell)
                self._cells[cell["cell"]] = cell
                ids.append(cell["cell"])
            self.results.write({"capture": number, "time": _now_iso(), "frame": frame,
                                "image": f"frames/{frame_path.name}", "cells": len(ids)})
            self._captures = number
            self._lock.notify_all()
            return ids

    def wait_for_capture(self, after: int, timeout: float) -> int:
        """The number of captures once it is above `after` (or when timeout passes)."""
        with self._lock:
            self._lock.wait_for(lambda: self._captures > after, timeout)
            return self._captures

    @property
    def captures(self) -> int:
        with self._lock:
            return self._captures

    # -- the technician's side -----------------------------------------------------------------
    def review(self, cell: int, label: str, by: str | None = None) -> dict:
        """Confirm or reclassify a cell (a class code) or strike it (not_a_cell); the latest counts."""
        if label not in (*self.labels, NOT_A_CELL):
            raise ValueError(f'"label" must be one of {", ".join((*self.labels, NOT_A_CELL))}')
        with self._lock:
            if self.approved:
                raise SessionLocked("the session is approved; its reviews are final")
            if cell not in self._cells:
                raise KeyError(cell)
            record = {"cell": cell, "label": label, "time": _now_iso(), **({"by": by} if by else {})}
            self.reviews.write(record)
            self._review[cell] = record
            return record

    def approve(self, by: str) -> dict:
        with self._lock:
            if self.approved:
                raise SessionLocked("the session is already approved")
            unreviewed = [c for c in self._cells if c not in self._review]
            if unreviewed:
                raise ValueError(f"{len(unreviewed)} cells are not reviewed yet")
            record = {"event": "approve", "by": by, "time": _now_iso()}
            self.reviews.write(record)
            self.approved = record
            return record

    def cells(self) -> list[dict]:
        with self._lock:
            return [{**cell, "review": self._review.get(cell["cell"], {}).get("label")}
                    for cell in self._cells.values()]

    def crop_path(self, cell: int) -> Path | None:
        with self._lock:
            record = self._cells.get(cell)
        return None if record is None else self.folder / record["crop"]

    def summary(self) -> dict:
        """The device's count beside the verified count, the verified positive share with its Wilson
        95% interval, and how often the technician agreed with the device's class."""
        negative, positive = self.labels
        cells = self.cells()
        device = dict.fromkeys((*self.labels, "uncertain", "out_of_domain"), 0)
        for cell in cells:
            label = cell.get("label")
            device[label if label in device else "out_of_domain" if label == "rejected" else "uncertain"] += 1
        verified = dict.fromkeys((*self.labels, NOT_A_CELL), 0)
        for cell in cells:
            if cell["review"]:
                verified[cell["review"]] += 1
        counted = verified[negative] + verified[positive]
        low, high = wilson_interval(verified[positive], counted, Z95)
        judged = [c for c in cells if c["review"] and c.get("label") in self.labels]
        agreed = sum(c["review"] == c["label"] for c in judged)
        device_classified = device[negative] + device[positive]
        return {"session": self.meta["name"], "id": self.id, "captures": self.captures, "cells": len(cells),
                "reviewed": sum(1 for c in cells if c["review"]), "device": device,
                "device_positive_fraction": round(device[positive] / device_classified, 4) if device_classified else None,
                "verified": verified, "verified_counted": counted,
                "verified_positive_fraction": round(verified[positive] / counted, 4) if counted else None,
                "verified_positive_fraction_ci95": [round(low, 4), round(high, 4)] if counted else None,
                "agreement": {"cells": len(judged), "agreed": agreed,
                              "fraction": round(agreed / len(judged), 4) if judged else None},
                "approved": self.approved}

    def export(self) -> dict:
        """The reviewed cells of each class into export/{class}/ inside the session folder, named
        UID_<session id>_<capture>_<cell>_<class>.png: python -m train's loader reads the session id as the
        patient, so a grouped split keeps a session's cells together. -> its path and counts."""
        destination = self.folder / "export"
        counts = dict.fromkeys(self.labels, 0)
        for cell in self.cells():
            label = cell["review"]
            if label not in self.labels:
                continue
            folder = destination / label
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"UID_{self.id}_{cell['capture']}_{cell['index']}_{label}.png"
            data = (self.folder / cell["crop"]).read_bytes()
            temporary = target.with_name(target.name + ".part")
            temporary.write_bytes(data)
            os.replace(temporary, target)
            counts[label] += 1
        for cell in self.cells():  # a cell reclassified since an earlier export leaves the other folder
            for label in self.labels:
                if cell["review"] != label:
                    stale = destination / label / f"UID_{self.id}_{cell['capture']}_{cell['index']}_{label}.png"
                    if stale.exists():
                        stale.unlink()
        return {"path": str(destination), "counts": counts}


# -- the hook edge-live calls (edge/live.py: --sessions DIR) ------------------------------------
def start_for_run(run, name: str | None) -> None:
    """A new session folder for the run's session under --sessions (None: no session, no folder)."""
    old, run.bench = getattr(run, "bench", None), None
    if old is not None:
        old.close()
    if not getattr(run.args, "sessions", None) or name is None:
        return
    spec = run.classifier.spec
    run.bench = Bench.create(run.args.sessions, name, labels=run.classifier.labels,
                             names={code: spec.display_name(code) for code in
                                    (*run.classifier.labels, "uncertain", "out_of_domain", "rejected")},
                             model_path=run.classifier.model_path, mode=run.args.mode,
                             session_rule=spec.session_rule)


def capture_for_run(run, rgb, record: dict, number: int, crops=None) -> None:
    """Called by the loop for the frame just classified when a capture was asked for."""
    bench = getattr(run, "bench", None)
    if bench is None:
        run.event("capture_failed", "nothing captured: no session is open (start one, with --sessions DIR)")
        return
    try:
        ids = bench.capture(rgb, record, number, crops)
    except SessionLocked:
        run.event("capture_failed", "nothing captured: the session is approved (start a new one)")
        return
    except OSError as error:
        run.event("capture_failed", f"capture not saved ({error.strerror or error})")
        return
    if run.state:
        run.state.add_event("capture", f"capture {bench.captures}: {len(ids)} cells")
