"""Fault injection for the resume tests: a trainer SIGKILLs itself, exactly like `kill -9` (no cleanup).

VOLCLS_KILL_AFTER_STEPS=N: after N optimizer steps (mid-epoch).
VOLCLS_KILL_AT=POINT: at a named point of the driver's epoch-end writes (after_model_save,
after_state_save, after_resume_record, after_history, after_predictions).
"""

from __future__ import annotations

import os
import signal


def kill_after_steps() -> int | None:
    value = os.environ.get("VOLCLS_KILL_AFTER_STEPS")
    return int(value) if value else None


def maybe_kill(steps_done: int, limit: int | None) -> None:
    if limit is not None and steps_done >= limit:
        os.kill(os.getpid(), signal.SIGKILL)


def kill_point(name: str) -> None:
    if os.environ.get("VOLCLS_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
