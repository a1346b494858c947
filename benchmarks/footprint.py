"""Memory footprint: peak RSS of a fresh process that loads one model and runs it, and of a
baseline process that only imports numpy and the interpreter, so the model's own share is the
difference.

The child reports its own high-water mark (VmHWM in /proc/self/status). The ru_maxrss that
os.wait4 returns (benchmarks/studies/cold_start.py) is not used here: Linux carries the parent's peak
over into a child it forks and execs, so from a benchmark process that has already loaded models
and scikit-learn (about 180 MB) every child would read about 180 MB.

    python -m benchmarks.footprint MODEL [--runtime NAME] [--threads N] [--runs 10]   # the child
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# The folder holding the top-level package: the checkout (benchmarks.footprint) or site-packages
# (edge.benchmarks.footprint, in the device wheel); the child is started under the same module name.
PACKAGE_ROOT = Path(__file__).resolve().parents[__name__.count(".")]
BASELINE = "-"  # the child's model argument for "import the runtime, load nothing"


def peak_rss_mb(model: str | os.PathLike, runtime: str | None = None, threads: int | None = None,
                runs: int = 10, python: str = sys.executable) -> float:
    """Peak resident memory in MB of `python -m benchmarks.footprint MODEL` (BASELINE: no model)."""
    command = [python, "-m", __name__, os.fspath(model), "--runs", str(runs)]
    if runtime:
        command += ["--runtime", runtime]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    if process.returncode != 0:
        error = process.stderr.strip()
        raise RuntimeError(f"footprint process failed: {error.splitlines()[-1] if error else process.returncode}")
    return int(process.stdout.split()[-1]) / 1024


def high_water_kb() -> int:
    """This process's peak resident memory in kB (Linux)."""
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith("VmHWM:")).split()[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help=f"a .tflite path, or {BASELINE} to load no model")
    parser.add_argument("--runtime")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    import numpy as np

    from edge.interpreter import input_details, interpreter_class, make_interpreter, run_batch

    if args.model == BASELINE:
        interpreter_class(args.runtime)
    else:
        interpreter, _ = make_interpreter(args.model, args.runtime, args.threads)
        shape = input_details(interpreter)["shape"]
        image = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)
        for _ in range(args.runs):
            run_batch(interpreter, image)
    print(high_water_kb())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
