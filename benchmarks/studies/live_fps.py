"""Frame rate and capture-to-result latency of edge-live, from the summary it logs.

    python -m benchmarks.studies.live_fps [--data ../shared/data] [--threads N] [--frames 300] [--viewers 2]

Cell mode: a 640x480 MJPEG video made of held-out C-NMC test cells (the leukemia test split),
each centred on black as the model expects, played like a camera at the target rate (30 fps: does
it keep up, and the latency from capture to result) and at twice that (the capacity: how many
frames it classifies while the newest-frame reader drops the rest). Field mode: the 200 real blood
smear fields replayed at 10 and 20 fps. Each run is a fresh `edge-live` process. (Unpaced replay
says little here: the reader decodes the whole file in a fraction of a second and the loop
classifies only the frames it catches.) --viewers N adds the cell-mode rows again with
`--serve 127.0.0.1:0` and N clients reading /stream.mjpg throughout (does watching slow it?).
Without --threads, edge-live takes the fastest thread count it measures for the model at start.
"""
from __future__ import annotations

import argparse
import json
import http.client
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

from edge.images import load_image
from edge.model_store import resolve_model

ROOT = Path(__file__).resolve().parents[2]


def make_cell_video(data: Path, path: Path, frames: int) -> Path:
    """Cells of the shipped leukemia model's split (its test subset when it has one; a cross-validated
    model has none), centred on a black 640x480 frame."""
    split = json.loads((resolve_model("leukemia_int8").parent / "leukemia_split.json").read_text())
    rows = [s for s in split["samples"] if s["subset"] == "test"] or split["samples"]
    names = {Path(s["path"]).name for s in rows}
    chosen = sorted(p for p in (data / "cnmc").rglob("*") if p.name in names)
    if not chosen:
        raise SystemExit(f"live_fps: none of the leukemia test cells found under {data / 'cnmc'}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(frames):
        cell = load_image(chosen[i % len(chosen)])
        frame = np.zeros((480, 640, 3), dtype=np.uint8)
        top, left = (480 - cell.shape[0]) // 2, (640 - cell.shape[1]) // 2
        frame[top:top + cell.shape[0], left:left + cell.shape[1]] = cell
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_stream(port: int, parts: list[int], index: int) -> None:
    """A viewer of /stream.mjpg: counts the JPEG parts until edge-live stops."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/stream.mjpg")
        response = connection.getresponse()
        while True:
            line = response.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                response.readline()
                response.read(int(line.split(b":")[1]))
                parts[index] += 1
    except OSError:
        return


def run_live(source: Path, mode: str, fps: float, threads: int | None, log: Path, viewers: int = 0) -> dict:
    command = [sys.executable, "-m", "edge.live", "--source", str(source), "--mode", mode, "--fps", str(fps),
               *(["--threads", str(threads)] if threads else []), "--headless", "--model", "leukemia_int8",
               "--log", str(log)]
    parts = [0] * viewers
    if viewers:
        process = subprocess.Popen(command + ["--serve", "127.0.0.1:0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        readers, stderr = [], []
        for line in process.stderr:  # the page's address comes before the first frame
            stderr.append(line)
            if found := re.search(r"live page at http://[^:]+:(\d+)/", line):
                readers = [threading.Thread(target=read_stream, args=(int(found[1]), parts, i)) for i in range(viewers)]
                for reader in readers:
                    reader.start()
        process.wait()
        for reader in readers:
            reader.join()
        completed = subprocess.CompletedProcess(command, process.returncode, "", "".join(stderr))
    else:
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"live_fps: edge-live failed: {completed.stderr.strip()}")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    frames = [r for r in records if "latency_ms" in r]
    summary = records[-1]
    end_to_end = np.array([r["latency_ms"]["end_to_end"] for r in frames])
    return {"mode": mode, "paced_fps": fps, "viewers": viewers,
            "stream_fps": [round(n / summary["seconds"], 1) for n in parts], "frames": summary["frames"], "captured": summary["captured"],
            "dropped": summary["dropped"], "fps": summary["fps"], "median_ms": summary["median_ms"],
            "end_to_end_p90_ms": round(float(np.percentile(end_to_end, 90)), 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, help="interpreter threads (default: edge-live's measured choice)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--viewers", type=int, default=0, help="also run cell mode with --serve and this many "
                                                                   "/stream.mjpg viewers")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    fields = args.data / "blood_smear_fields"
    if not (args.data / "cnmc").is_dir() or not fields.is_dir():
        raise SystemExit(f"live_fps: needs {args.data}/cnmc and {fields}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_cell_video(args.data, tmp / "cells.avi", args.frames)
        field_frames = tmp / "fields"
        field_frames.mkdir()
        for i, path in enumerate(sorted(fields.rglob("*.jpg"))):
            (field_frames / f"{i:03d}_{path.parent.name}_{path.name}").symlink_to(path.resolve())
        for source, mode, fps in ((video, "cell", 30), (video, "cell", 60), (field_frames, "field", 10),
                                  (field_frames, "field", 20)):
            results.append(run_live(source, mode, fps, args.threads, tmp / f"{mode}_{fps}.jsonl"))
        for fps in (30, 60) if args.viewers > 0 else ():
            results.append(run_live(video, "cell", fps, args.threads, tmp / f"cell_{fps}_viewers.jsonl", args.viewers))
    print(f"| mode | source pacing | stream viewers (frames/s each) | frames classified / captured | fps "
          f"| median ms: {', '.join(results[0]['median_ms'])} | end-to-end p90 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        pacing = "unpaced" if not r["paced_fps"] else f"{r['paced_fps']:g} fps"
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["median_ms"].items())
        viewers = f"{r['viewers']} ({', '.join(map(str, r['stream_fps']))})" if r["viewers"] else "0"
        print(f"| {r['mode']} | {pacing} | {viewers} | {r['frames']} / {r['captured']} | {r['fps']:.1f} | {stages} "
              f"| {r['end_to_end_p90_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
