"""Multiply-accumulates of a TFLite model, and this CPU's peak MAC rate, to see how far a measured
latency is from the physical limit.

MACs come from the graph itself (no TensorFlow): for every CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED op, output elements x the weights each output element reads. Element-wise ops
(ADD, MUL, MEAN, LOGISTIC) are not counted.

The peak is derived from `lscpu`: cores x clock x MACs per cycle per core, where MACs per cycle =
SIMD lanes (register bits / 32 for fp32) x FMA pipes (2 on Intel since Haswell, AMD Zen and
Arm Cortex-A72/A76). AMD Zen 1 (family 23, model < 48) runs 256-bit AVX2 as two 128-bit halves:
one 256-bit FMA per cycle, so 8 fp32 MACs per cycle. int8 peak per cycle, relative to fp32:
x4 with a dot-product instruction (x86 VNNI, Arm asimddp); x2 on other AVX2 CPUs (VPMADDWD: two
int16 products per 32-bit lane on two pipes); x1 on Zen 1 (VPMADDWD on one pipe: 16 MACs every
2 cycles) and on Arm without asimddp. These are estimates from the instruction set, not vendor
figures; `python -m benchmarks.macs` also times a float32 matrix product with numpy as the rate
this machine reaches in practice.

    python -m benchmarks.macs models/leukemia_int8.tflite models/brain_float32.tflite
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import time

import numpy as np

from edge.interpreter import make_interpreter

from .machine import cpu_description, one_line

COUNTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ESTIMATE = "estimated, not measured: cores x clock x the MACs per cycle the instruction set allows (lscpu)"


def count_macs(model_path: str | os.PathLike, runtime: str | None = None) -> dict:
    """-> {"total": MACs of one inference, "by_op": {op name: MACs}, "ops": {op name: count}}."""
    interpreter, _ = make_interpreter(model_path, runtime, 1)
    shapes = {t["index"]: [int(v) for v in t["shape"]] for t in interpreter.get_tensor_details()}
    by_op, ops = {}, {}
    for op in interpreter._get_ops_details():  # the only op-level view the Python API offers
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        ops[name] = ops.get(name, 0) + 1
        if name not in COUNTED_OPS:
            continue
        output = int(np.prod(shapes[op["outputs"][0]]))
        weights = shapes[op["inputs"][1]]
        if name == "CONV_2D":  # weights (out_c, kh, kw, in_c)
            per_output = weights[1] * weights[2] * weights[3]
        elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, channels)
            per_output = weights[1] * weights[2]
        else:  # FULLY_CONNECTED: weights (units, inputs)
            per_output = weights[-1]
        by_op[name] = by_op.get(name, 0) + output * per_output
    return {"total": int(sum(by_op.values())), "by_op": by_op, "ops": ops}


def _lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def _cpuinfo_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo") as handle:
            match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return float(match.group(1)) if match else None


def cpu_peak() -> dict:
    """Cores, clock, per-cycle MAC rates and peak GMAC/s of this CPU, with how they were derived."""
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    cores = int(info.get("Core(s) per socket", 0) or 0) * int(info.get("Socket(s)", 1) or 1) or os.cpu_count() or 1
    mhz = float(info.get("CPU max MHz", 0) or 0) or _cpuinfo_mhz()
    mhz_source = "lscpu CPU max MHz" if info.get("CPU max MHz") else "/proc/cpuinfo cpu MHz, lscpu gives none"
    zen1 = (info.get("Vendor ID") == "AuthenticAMD" and info.get("CPU family") == "23"
            and int(info.get("Model", "0") or 0) < 48)
    if "avx512f" in flags:
        bits, isa = 512, "AVX-512"
    elif {"avx2", "fma"} <= flags:
        bits, isa = (128, "AVX2+FMA on the 128-bit datapath of AMD Zen 1") if zen1 else (256, "AVX2+FMA")
    else:
        bits, isa = 128, "128-bit SIMD (SSE or NEON)"
    fp32_per_cycle = bits // 32 * 2
    if flags & {"avx512_vnni", "avx_vnni", "asimddp"}:
        int8_factor, int8_how = 4, "dot-product instructions (VNNI / asimddp): x4"
    elif "avx2" in flags and not zen1:
        int8_factor, int8_how = 2, "AVX2 VPMADDWD on two pipes: x2"
    else:
        int8_factor, int8_how = 1, "no int8 dot product and one vector-integer multiply pipe: x1"
    ghz = mhz / 1000 if mhz else None
    return {
        "what": ESTIMATE, "model_name": info.get("Model name"), "cores": cores, "ghz": ghz, "isa": isa,
        "fp32_macs_per_cycle_per_core": fp32_per_cycle, "int8_macs_per_cycle_per_core": fp32_per_cycle * int8_factor,
        "peak_fp32_gmacs": cores * ghz * fp32_per_cycle if ghz else None,
        "peak_int8_gmacs": cores * ghz * fp32_per_cycle * int8_factor if ghz else None,
        "how": (f"{cores} cores x {ghz or float('nan'):.2f} GHz [{mhz_source}] x {fp32_per_cycle} fp32 MACs per cycle "
                f"per core [{isa}: {bits}-bit FMA / 32 bits x 2 pipes]; int8 per cycle: {int8_how}"),
    }


def peak_gmacs(peak: dict, precision: str, threads: int) -> float | None:
    """The peak for a model of this precision running on `threads` threads (at most all cores)."""
    total = peak["peak_int8_gmacs"] if precision == "int8" else peak["peak_fp32_gmacs"]
    return total * min(threads, peak["cores"]) / peak["cores"] if total else None


def numpy_sgemm_gmacs(size: int = 1024, repeats: int = 10) -> float:
    """Best float32 matrix-product rate of numpy's BLAS here (all its threads), in GMAC/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return size**3 / best / 1e9


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".tflite files")
    args = parser.parse_args(argv)
    for path in args.models:
        macs = count_macs(path)
        parts = ", ".join(f"{name} {value / 1e6:.1f} M" for name, value in macs["by_op"].items())
        print(f"{path}: {macs['total'] / 1e6:.1f} M MACs per inference ({parts}); ops {macs['ops']}")
    peak = cpu_peak()
    print(f"CPU: {one_line(cpu_description())}; {peak['how']}")
    print(f"estimated peak ({ESTIMATE}): fp32 {peak['peak_fp32_gmacs'] or float('nan'):.1f} GMAC/s, "
          f"int8 {peak['peak_int8_gmacs'] or float('nan'):.1f} GMAC/s")
    print(f"numpy float32 1024x1024 matrix product: {numpy_sgemm_gmacs():.1f} GMAC/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
