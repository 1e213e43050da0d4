"""The one precision policy of both trainers: what `--precision auto` becomes, and why.

GPUs: bf16 autocast where the GPU supports it, else fp16 with a gradient scaler. CPUs: fp32, unless
a timed probe of the actual model on this machine (supplied by the framework package) measured bf16
to be clearly faster. A CPU's name or flags never decide it: on a Zen 4 CPU with AVX512-BF16 the
demo ResNet failed to learn in bf16 where it learned in fp32, and the speed-up differs per CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.runs.record import PrecisionDecision

# bf16 must beat fp32 by this factor on the probe to be chosen on a CPU. bf16 keeps 8 significant
# bits, and the seed ResNet's residual sums grow through its 20 ReLU-before-add blocks, so small
# updates are rounded away: on a 2-core AMD EPYC the demo ResNet (seed 0) reached test accuracy 0.625
# in bf16 and 1.00 in fp32, same everything else (fp32 also 1.00 with seeds 1 and 2). Only a halving
# of the time is worth that risk; a smaller gain also sits within the probe's noise.
CPU_BF16_MIN_SPEEDUP = 2.0


@dataclass(frozen=True)
class Hardware:
    device_type: str  # "cpu" | "cuda"
    name: str
    gpu_bf16: bool = False  # the GPU computes bf16 natively (Ampere and newer)


def decide_precision(requested: str, hardware: Hardware, *,
                     probe: Callable[[], dict[str, float]] | None = None) -> PrecisionDecision:
    """probe() -> samples/s of a few training steps per candidate ("fp32", "bf16") on this machine."""
    if requested != "auto":
        return PrecisionDecision(requested, requested, f"--precision {requested} given")
    if hardware.device_type == "cuda":
        if hardware.gpu_bf16:
            return PrecisionDecision("auto", "bf16", f"{hardware.name} supports bf16: bf16 autocast")
        return PrecisionDecision("auto", "fp16", f"{hardware.name} lacks bf16: fp16 autocast + gradient scaler")
    if probe is None:
        return PrecisionDecision("auto", "fp32", "CPU: fp32 (bf16 only when a probe measures it clearly faster)")
    speeds = probe()
    ratio = speeds.get("bf16", 0.0) / speeds["fp32"] if speeds.get("fp32") else 0.0
    measured = {f"{k}_samples_per_second": round(v, 3) for k, v in speeds.items()}
    if ratio >= CPU_BF16_MIN_SPEEDUP:
        return PrecisionDecision("auto", "bf16", f"CPU probe: bf16 {ratio:.2f}x fp32 "
                                 f"(>= {CPU_BF16_MIN_SPEEDUP}x)", measured)
    return PrecisionDecision("auto", "fp32", f"CPU probe: bf16 {ratio:.2f}x fp32 (< {CPU_BF16_MIN_SPEEDUP}x)", measured)
