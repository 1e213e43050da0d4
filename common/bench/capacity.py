"""How much fits on an accelerator: a bounded batch-size search, a memory plan on paper, and the
peak FLOP/s a measured throughput is compared with. Framework-free; each package supplies the
"does this batch fit" trial and the per-sample activation bytes of its own model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

# GPU memory sizes of the plan, in GB (10^9 bytes) as vendors quote them: 24 GB (L4, RTX 4090/A10),
# 40 GB (A100-40), 80 GB (A100-80, H100), 141 GB (H200).
PLAN_GPU_GB = (24, 40, 80, 141)
# Kept free of the plan: CUDA context, allocator fragmentation, cuDNN/cuBLAS workspaces and the
# transient gradient buffers of backward. 10 % is the margin PyTorch's own memory docs start from.
PLAN_RESERVE_FRACTION = 0.10
# Dense (no sparsity) bf16 tensor-core peak of common datacenter GPUs, FLOP/s, from the vendors'
# data sheets. Matched by substring of the device name, most specific first.
BF16_DENSE_PEAK = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12),
    ("RTX 4090", 165e12), ("A6000", 155e12), ("V100", 125e12),  # V100: fp16 tensor cores, no bf16
)
OOM_MARKERS = ("out of memory", "resource_exhausted", "resource exhausted", "outofmemory", "oom when allocating")


def bf16_dense_peak(device_name: str) -> float | None:
    """The data-sheet bf16 dense peak of a GPU by name, or None when the name is not in the table."""
    for marker, peak in BF16_DENSE_PEAK:
        if marker.lower() in device_name.lower():
            return peak
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """True for the out-of-memory errors of torch (OutOfMemoryError), XLA/JAX (RESOURCE_EXHAUSTED) and
    TensorFlow (ResourceExhaustedError), which share no base class."""
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in OOM_MARKERS)


def runs_in_memory(step: Callable[[], object], cleanup: Callable[[], None]) -> bool:
    """True if `step()` runs, False if it runs out of memory; any other error is a bug and propagates.
    `cleanup` (free the failed attempt's memory) runs either way."""
    try:
        step()
        return True
    except Exception as error:  # noqa: BLE001 - only out-of-memory is a "no"
        if not is_out_of_memory(error):
            raise
        return False
    finally:
        cleanup()


@dataclass(frozen=True)
class BatchSearch:
    largest: int  # the largest batch that ran a training step (0: not even batch 1)
    trials: tuple[tuple[int, bool], ...]  # (batch, fitted) in the order tried
    capped: bool  # the search stopped at max_batch, not at a failure: more may fit

    def to_dict(self) -> dict:
        return asdict(self)


def largest_batch(fits: Callable[[int], bool], max_batch: int) -> BatchSearch:
    """The largest batch in 1..max_batch for which `fits(batch)` is True, assuming fitting is monotone:
    doubling from 1 until a failure or the cap, then bisection between the last fit and the failure.
    At most 2 log2(max_batch) + 1 trials; `fits` returns False on out-of-memory instead of raising."""
    if max_batch < 1:
        raise ValueError(f"max_batch {max_batch}: must be >= 1")
    trials: list[tuple[int, bool]] = []

    def trial(batch: int) -> bool:
        ok = bool(fits(batch))
        trials.append((batch, ok))
        return ok

    good, bad, batch = 0, None, 1
    while batch <= max_batch:
        if not trial(batch):
            bad = batch
            break
        good = batch
        if batch == max_batch:
            break
        batch = min(batch * 2, max_batch)
    if bad is not None:
        while bad - good > 1:
            middle = (good + bad) // 2
            if trial(middle):
                good = middle
            else:
                bad = middle
    return BatchSearch(good, tuple(trials), capped=bad is None)


@dataclass(frozen=True)
class MemoryPlan:
    """Training memory of one model at one input size: fixed (weights, gradients, optimizer state)
    plus activations saved for backward per sample, with and without activation checkpointing."""

    model: str
    input_shape: tuple[int, int, int]
    precision: str
    fixed_bytes: int
    activation_bytes: int  # per sample, checkpointing off
    checkpointed_bytes: int | None  # per sample, checkpointing on (None: the model has none)
    method: str  # how the numbers were obtained
    batches: dict = field(default_factory=dict)  # "<GB>" -> {"off": batch, "on": batch}

    def to_dict(self) -> dict:
        return asdict(self)


def batch_for_memory(memory_bytes: float, fixed_bytes: int, per_sample_bytes: int,
                     reserve_fraction: float = PLAN_RESERVE_FRACTION) -> int:
    """The largest batch whose fixed + batch x per-sample bytes fit in the memory less its reserve."""
    usable = memory_bytes * (1 - reserve_fraction) - fixed_bytes
    return max(0, math.floor(usable / per_sample_bytes)) if per_sample_bytes > 0 else 0


def plan_batches(plan: MemoryPlan, gpu_gb=PLAN_GPU_GB) -> MemoryPlan:
    """`plan` with the batch each GPU size allows, with and without checkpointing."""
    batches = {}
    for gb in gpu_gb:
        row = {"off": batch_for_memory(gb * 1e9, plan.fixed_bytes, plan.activation_bytes)}
        if plan.checkpointed_bytes is not None:
            row["on"] = batch_for_memory(gb * 1e9, plan.fixed_bytes, plan.checkpointed_bytes)
        batches[str(gb)] = row
    return MemoryPlan(**{**asdict(plan), "batches": batches})


ADAMW_BYTES_PER_PARAMETER = 4 + 4 + 8  # fp32 weight, its gradient, AdamW's two moments


def training_state_bytes(parameters: int) -> int:
    """Weights + gradients + AdamW moments, all fp32 (autocast keeps fp32 master weights)."""
    return parameters * ADAMW_BYTES_PER_PARAMETER
