"""A short timed probe of training steps, per candidate setting, on the machine the run is on.

As `torch.backends.cudnn.benchmark` does for kernels: a few real training steps of the actual model
per candidate (precision, memory layout), timed, the fastest kept. The result is cached per
(machine, framework, model config, input shape, batch, candidates) so a machine decides once, and
the timings go into the run record. Framework-free: the framework supplies one step per candidate.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from common.atomic import atomic_write_text

PROBE_FORMAT = 1
TIMED_STEPS = 3  # after one untimed warm-up step (allocation, kernel selection, tracing)
SLOW_STEP_SECONDS = 5.0  # a warm-up slower than this: time a single step (big models on a CPU)


def probe_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps({"format": PROBE_FORMAT, **facts}, sort_keys=True, default=str)
                          .encode()).hexdigest()[:20]


def timed_probe(candidates: list[str], make_step: Callable[[str], Callable[[], None]], *, batch_size: int,
                cache_file: Path | None = None, timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """samples/s per candidate: the median of a few timed steps of `make_step(candidate)`.

    Candidates already in `cache_file` (one JSON object per probe context) are not measured again.
    """
    known: dict[str, float] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            known = {str(k): float(v) for k, v in json.loads(cache_file.read_text()).items()}
        except (ValueError, AttributeError):
            known = {}  # a damaged cache entry is measured again
    missing = [c for c in candidates if c not in known]
    for candidate in missing:
        step = make_step(candidate)
        started = timer()
        step()  # warm-up, not timed
        warmup = timer() - started
        times = []
        for _ in range(1 if warmup > SLOW_STEP_SECONDS else TIMED_STEPS):
            started = timer()
            step()
            times.append(timer() - started)
        median = sorted(times)[len(times) // 2]
        known[candidate] = round(batch_size / median, 3) if median > 0 else float("inf")
    if missing and cache_file is not None:
        atomic_write_text(cache_file, json.dumps(known, indent=1))
    return {c: known[c] for c in candidates}


def best_of(speeds: dict[str, float], prefix: str) -> float:
    """The best samples/s among candidates named `<prefix>/...` (or exactly `prefix`)."""
    values = [v for k, v in speeds.items() if k == prefix or k.startswith(prefix + "/")]
    return max(values) if values else 0.0
