"""Fault injection for the resume tests: VOLCLS_KILL_AFTER_STEPS=N makes a trainer SIGKILL itself
after N optimizer steps, exactly like `kill -9` mid-epoch (no cleanup, no final writes)."""

from __future__ import annotations

import os
import signal


def kill_after_steps() -> int | None:
    value = os.environ.get("VOLCLS_KILL_AFTER_STEPS")
    return int(value) if value else None


def maybe_kill(steps_done: int, limit: int | None) -> None:
    if limit is not None and steps_done >= limit:
        os.kill(os.getpid(), signal.SIGKILL)
