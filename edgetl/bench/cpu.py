"""What this CPU can do, printed beside every latency number.

int8 is only faster than fp32 where the CPU has int8 dot-product instructions
(x86: AVX-512 VNNI, AVX-VNNI or AMX; ARM: the dotprod extension of Pi 5 / A76 and
newer). Without them (this project's 2-core AVX2 CI machine) int8 is often slower.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

INTERESTING = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16",
               "neon", "asimd", "asimddp", "i8mm", "sve")


def cpu_features() -> dict:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("flags", "features"):
                flags.update(value.split())
            elif key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
    found = sorted(f for f in INTERESTING if f in flags)
    int8_dot = bool({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"} & flags)
    return {
        "model": model,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "features": found,
        "int8_dot_product": int8_dot,
        "note": None if int8_dot else "no int8 dot-product instructions (VNNI/AMX/dotprod): int8 is not expected to "
                                      "beat fp32 on this CPU",
    }
