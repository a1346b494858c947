"""Cold start of edge-classify: wall time from process start to the first result, and the peak
memory of that process, over several fresh processes (median reported).

    python -m benchmarks.studies.cold_start --model leukemia_int8 IMAGE [--python /path/to/edge-only/python] [--runs 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def one_run(python: str, model: str, image: str, threads: int | None) -> tuple[float, float]:
    """-> (wall seconds, peak RSS in MB) of one `python -m edge.cli --model M IMAGE` process."""
    command = [python, "-m", "edge.cli", "--model", model, "--json", image]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"cold_start: edge-classify failed: {process.stderr.read().decode().strip()}")
    assert '"label"' in out
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in kB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--model", default="leukemia_int8")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    results = [one_run(args.python, args.model, args.image, args.threads) for _ in range(args.runs)]
    walls, peaks = zip(*results)
    print(f"model {args.model}, {args.runs} fresh processes with {args.python}")
    print(f"cold start to first result: median {statistics.median(walls) * 1000:.0f} ms "
          f"(min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f})")
    print(f"peak RSS: median {statistics.median(peaks):.1f} MB (max {max(peaks):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
