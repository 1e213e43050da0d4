"""Per-epoch learning-rate schedules shared by both trainers (so "cosine" means the same on each side)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant", "step")


def learning_rate(epoch: int, *, base_lr: float, epochs: int, schedule: str = "cosine", warmup_epochs: int = 0) -> float:
    """LR of 0-based `epoch`: linear warm-up over `warmup_epochs`, then the named decay."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule '{schedule}' is not one of {SCHEDULES}")
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    if schedule == "constant":
        return base_lr
    if schedule == "step":  # MedMNIST protocol: x0.1 at 50 % and 75 % of training
        return base_lr * (0.1 ** ((epoch >= epochs * 0.5) + (epoch >= epochs * 0.75)))
    span = max(epochs - warmup_epochs, 1)
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / span))
