"""The one precision policy of both trainers: what `--precision auto` becomes, and why.

GPUs: bf16 autocast where the GPU supports it, else fp16 with a gradient scaler. CPUs: fp32, unless
a timed probe of the actual model on this machine (supplied by the framework package) measured bf16
to be clearly faster. A CPU's name or flags never decide it: on a Zen 4 CPU with AVX512-BF16 the
demo ResNet failed to learn in bf16 where it learned in fp32, and the speed-up differs per CPU.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from common.runs.record import PrecisionDecision

# bf16 must beat fp32 by this factor on the probe to be chosen on a CPU. bf16 keeps 8 significant
# bits, and the seed ResNet's residual sums grow through its 20 ReLU-before-add blocks, so small
# updates are rounded away: on a 2-core AMD EPYC the demo ResNet (seed 0) reached test accuracy 0.625
# in bf16 and 1.00 in fp32, same everything else (fp32 also 1.00 with seeds 1 and 2). Only a halving
# of the time is worth that risk; a smaller gain also sits within the probe's noise.
CPU_BF16_MIN_SPEEDUP = 2.0
# A probe's ratio within this factor of the rule is a close call: a busy machine moves a ratio by more
# (one Intel AMX machine read bf16 as 12.6x fp32 under load and 2.1x minutes later). It is measured again,
# up to CLOSE_CALL_PROBES times in all or until a reading is clear of the margin. bf16 is chosen only if
# every reading clears the rule and one clears the margin; readings on both sides of the rule, or none clear
# of its margin, are a close call: fp32, the safe side, and the run says so.
CLOSE_CALL_MARGIN = 1.25
CLOSE_CALL_PROBES = 3
# A model step gains from bf16 no more than its matrix products do (mixed precision adds casts and keeps
# reductions in fp32), so a CPU whose bf16 products are not CPU_BF16_MIN_SPEEDUP x its fp32 ones cannot meet
# the rule, and its bf16 candidates are not timed. Without AVX512-BF16 or AMX bf16 is emulated: on a 2-core
# AVX2 EPYC torch's products ran at 0.01-0.02x fp32 (the 64^3 ResNet's bf16 probe steps ~80 s each) and
# Keras' at 0.86-1.80x while the transformer's bf16 steps ran at 0.03-0.08x: its probe took ~10 minutes of
# each run for a foregone answer. Measured by a second-long matmul check where the run is, never read off
# the CPU's flags.
BF16_MATMUL_MIN_RATIO = CPU_BF16_MIN_SPEEDUP


@dataclass(frozen=True)
class Hardware:
    device_type: str  # "cpu" | "cuda"
    name: str
    gpu_bf16: bool = False  # the GPU computes bf16 natively (Ampere and newer)


def decide_precision(requested: str, hardware: Hardware, *, probe: Callable[..., dict[str, float]] | None = None,
                     bf16_matmul: Callable[[], float] | None = None) -> PrecisionDecision:
    """probe() -> samples/s of a few training steps per candidate ("fp32", "bf16") on this machine;
    probe(fresh=True) measures again instead of reading the machine's cached probe. bf16_matmul() -> bf16's
    matrix-product throughput over fp32's here: under BF16_MATMUL_MIN_RATIO the probe is not run."""
    if requested != "auto":
        return PrecisionDecision(requested, requested, f"--precision {requested} given")
    if hardware.device_type == "cuda":
        if hardware.gpu_bf16:
            return PrecisionDecision("auto", "bf16", f"{hardware.name} supports bf16: bf16 autocast")
        return PrecisionDecision("auto", "fp16", f"{hardware.name} lacks bf16: fp16 autocast + gradient scaler")
    if probe is None:
        return PrecisionDecision("auto", "fp32", "CPU: fp32 (bf16 only when a probe measures it clearly faster)")
    if bf16_matmul is not None:
        ratio = bf16_matmul()
        if ratio < BF16_MATMUL_MIN_RATIO:
            return PrecisionDecision("auto", "fp32", f"CPU: bf16 matrix products {ratio:.2f}x fp32 here (emulated), "
                                     f"no step can gain {CPU_BF16_MIN_SPEEDUP}x: fp32, bf16 steps not probed",
                                     {"bf16_over_fp32_matmul": round(ratio, 3)})
    speeds = probe()
    ratios = [_bf16_ratio(speeds)]
    while _near_the_rule(ratios[-1]) and len(ratios) < CLOSE_CALL_PROBES:
        speeds = probe(fresh=True)
        ratios.append(_bf16_ratio(speeds))
    measured = {f"{k}_samples_per_second": round(v, 3) for k, v in speeds.items()}
    median = statistics.median(ratios)
    shown = ", ".join(f"{r:.2f}x" for r in ratios)
    if len(ratios) > 1:
        measured.update(bf16_over_fp32_probes=[round(r, 3) for r in ratios])
        straddles = min(ratios) < CPU_BF16_MIN_SPEEDUP <= max(ratios)
        if straddles or all(_near_the_rule(r) for r in ratios):  # no reading got clear of the rule's margin
            measured.update(close_call=True)
            return PrecisionDecision("auto", "fp32", f"CPU probe, a close call: bf16 {shown} fp32 over {len(ratios)} "
                                     f"probes, within {CLOSE_CALL_MARGIN}x of the {CPU_BF16_MIN_SPEEDUP}x rule: fp32, "
                                     "the safe side", measured)
    resolved = "bf16" if median >= CPU_BF16_MIN_SPEEDUP else "fp32"
    sign = ">=" if resolved == "bf16" else "<"
    reading = (f"{shown} fp32 ({sign} {CPU_BF16_MIN_SPEEDUP}x)" if len(ratios) == 1
               else f"{shown} fp32 over {len(ratios)} probes (median {sign} {CPU_BF16_MIN_SPEEDUP}x)")
    return PrecisionDecision("auto", resolved, f"CPU probe: bf16 {reading}", measured)


def _bf16_ratio(speeds: dict[str, float]) -> float:
    return speeds.get("bf16", 0.0) / speeds["fp32"] if speeds.get("fp32") else 0.0


def _near_the_rule(ratio: float) -> bool:
    return CPU_BF16_MIN_SPEEDUP / CLOSE_CALL_MARGIN <= ratio < CPU_BF16_MIN_SPEEDUP * CLOSE_CALL_MARGIN
