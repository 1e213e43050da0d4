"""What the machine offers, read without any deep-learning framework."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# The vector units that decide which kernels are fast (TensorFlow enables oneDNN by itself only with the
# last three; bf16 pays off only with AVX512-BF16 or AMX): /proc/cpuinfo flag -> name.
VECTOR_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
                   "amx_tile": "AMX"}


def vector_features(cpuinfo: str) -> list[str]:
    """The VECTOR_FEATURES named in the first `flags` line of a /proc/cpuinfo text, in that order."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [name for flag, name in VECTOR_FEATURES.items() if flag in flags]
    return []


def _cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def has_bf16_units(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (x86 AVX512-BF16 or AMX, from /proc/cpuinfo; False where it
    cannot be read). Elsewhere bf16 is emulated: the recipe ResNet trained at 0.05-0.09x its fp32 speed on
    an AVX2-only AMD EPYC."""
    features = vector_features(_cpuinfo() if cpuinfo is None else cpuinfo)
    return bool({"AVX512-BF16", "AMX"} & set(features))


def cpu_description() -> str:
    """The model name, the logical CPUs and the vector units (Linux), e.g. "AMD EPYC, 2 logical CPUs, AVX2"."""
    model, cpuinfo = platform.processor() or platform.machine(), _cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    features = vector_features(cpuinfo)
    return f"{model}, {os.cpu_count()} logical CPUs" + "".join(f", {name}" for name in features)
