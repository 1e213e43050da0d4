"""What the machine offers, read without any deep-learning framework."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: bf16 matrix multiplies run natively (and fast) on this CPU."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"
