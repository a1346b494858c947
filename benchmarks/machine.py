"""Which CPU a figure was measured on: its model name and the SIMD extensions that decide how fast
int8 and float kernels run (XNNPACK picks its kernels by them), so a timing never travels without
its machine.

    python -m benchmarks.machine      # prints the description as JSON
"""
from __future__ import annotations

import json
import os
import platform
import subprocess

# x86: AVX2 + FMA (float and widening int8), AVX-512, int8 dot products (VNNI), bf16, AMX int8 tiles.
X86_SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
# Arm: NEON (asimd), int8 dot product (asimddp, Armv8.2: Cortex-A76 / Pi 5, not Cortex-A72 / Pi 4),
# int8 matrix multiply (i8mm), SVE.
ARM_SIMD = ("asimd", "asimddp", "i8mm", "sve")


def _read_cpuinfo(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _fields(text: str) -> dict[str, str]:
    """The first value of every `key : value` line of /proc/cpuinfo (keys lower-cased)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in found:
            found[key] = value.strip()
    return found


def _lscpu_model() -> str | None:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip() not in ("", "-"):
            return value.strip()
    return None


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """-> {"model": CPU model name, "cores": os.cpu_count(), "simd": [the int8/float-relevant SIMD
    extensions present], "machine": platform.machine()}. Linux reads /proc/cpuinfo (x86 `model name`
    and `flags`; Arm `Features`, and lscpu's model name, e.g. Cortex-A76, since Arm's cpuinfo has
    none; a Raspberry Pi's `Model` line is appended); elsewhere model is platform.processor() and simd
    is empty."""
    fields = _fields(_read_cpuinfo(cpuinfo))
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or _lscpu_model() or platform.processor() or None
    if fields.get("model") and not fields["model"].isdigit():  # Raspberry Pi: "Raspberry Pi 5 Model B Rev 1.0"
        model = f"{model} ({fields['model']})" if model else fields["model"]
    machine = platform.machine()
    known = ARM_SIMD if ("features" in fields and "flags" not in fields) or machine in ("aarch64", "arm64") else X86_SIMD
    return {"model": model, "cores": os.cpu_count(), "simd": [name for name in known if name in flags],
            "machine": machine}


def one_line(cpu: dict) -> str:
    """'Intel(R) Xeon(R) Processor, x86_64, 2 cores, SIMD: avx2 fma ...'"""
    simd = " ".join(cpu.get("simd") or []) or "none found"
    return f"{cpu.get('model') or 'unknown CPU'}, {cpu.get('machine')}, {cpu.get('cores')} cores, SIMD: {simd}"


if __name__ == "__main__":
    description = cpu_description()
    print(json.dumps(description))
    print(one_line(description))
