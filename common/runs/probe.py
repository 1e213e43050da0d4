"""A short timed probe of training steps, per candidate setting, on the machine the run is on.

As `torch.backends.cudnn.benchmark` does for kernels: a few real training steps of the actual model
per candidate (precision, memory layout), timed, the fastest kept. The result is cached per
(machine, framework, model config, input shape, batch, candidates) so a machine decides once, and
the timings go into the run record. Framework-free: the framework supplies one step per candidate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text

PROBE_FORMAT = 3  # 2: warm-up seconds kept beside samples/s; 3: interleaved rounds, fastest step
TIMED_STEPS = 3  # after one untimed warm-up step (allocation, kernel selection, tracing)
SLOW_STEP_SECONDS = 5.0  # a warm-up slower than this: time a single step (big models on a CPU)
# VOLCLS_REPROBE=1: measure again and overwrite the cached probe results of this machine.
REPROBE_ENV = "VOLCLS_REPROBE"
# Cached speeds of one model's candidates further apart than this are not believed (bf16 vs fp32,
# layouts and compilation differ by well under 20x on any CPU or GPU this project has met).
MAX_PLAUSIBLE_RATIO = 50.0


def probe_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps({"format": PROBE_FORMAT, **facts}, sort_keys=True, default=str)
                          .encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StepTimes:
    warmup_seconds: float
    seconds: list[float]  # one per timed step
    outputs: list  # what each call returned, the warm-up's first (e.g. the losses)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_steps(step: Callable[[], object], steps: int, *, timer: Callable[[], float] = time.perf_counter) -> StepTimes:
    """One untimed warm-up call of `step` (allocation, kernel selection, tracing, compilation), then
    `steps` timed calls. Both packages' benchmarks time with it; the probe times in interleaved rounds."""
    started = timer()
    outputs = [step()]
    warmup = timer() - started
    seconds = []
    for _ in range(steps):
        started = timer()
        outputs.append(step())
        seconds.append(timer() - started)
    return StepTimes(warmup, seconds, outputs)


def timed_probe(candidates: list[str], make_step: Callable[[str], Callable[[], None]], *, batch_size: int,
                cache_file: Path | None = None, timer: Callable[[], float] = time.perf_counter,
                warmups: dict[str, float] | None = None, fresh: bool = False) -> dict[str, float]:
    """samples/s per candidate: its fastest of a few steps timed in interleaved rounds (`_interleaved_timing`).

    Candidates already in `cache_file` (one JSON object per probe context) are not measured again.
    `warmups`, if given, receives each candidate's untimed first step in seconds (what a compilation costs).
    fresh=True (or VOLCLS_REPROBE=1) measures every candidate again and overwrites the cache.
    """
    known, known_warmups = _parse_probe_cache(_read_json_cache(cache_file, fresh))
    missing = [c for c in candidates if c not in known or c not in known_warmups]
    if missing:
        speeds, warmup_seconds = _interleaved_timing(missing, make_step, batch_size, timer)
        known.update(speeds)
        known_warmups.update(warmup_seconds)
        _write_json_cache(cache_file, {"samples_per_second": known, "warmup_seconds": known_warmups})
    if warmups is not None:
        warmups.update({c: known_warmups[c] for c in candidates})
    return {c: known[c] for c in candidates}


def _read_json_cache(cache_file: Path | None, fresh: bool = False) -> dict:
    """The JSON object kept in a probe cache file; {} (measure again) when there is none, when fresh=True or
    VOLCLS_REPROBE=1 asks for a new measurement, or when the file is unreadable or not a JSON object."""
    if cache_file is None or fresh or os.environ.get(REPROBE_ENV) or not cache_file.is_file():
        return {}
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_json_cache(cache_file: Path | None, content: dict) -> None:
    """Keeps `content` in `cache_file`, whole or not at all; nothing where a directory (or other non-file)
    stands in its place: the measurement is used and not kept."""
    if cache_file is not None and not (cache_file.exists() and not cache_file.is_file()):
        atomic_write_text(cache_file, json.dumps(content, indent=1))


def _parse_probe_cache(cached: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(samples/s, warm-up seconds) per candidate from a probe cache's content; nothing if any value is not
    a finite positive speed or a finite non-negative time (a damaged or edited file): measured again."""
    try:
        speeds = {str(k): float(v) for k, v in cached["samples_per_second"].items()}
        warmups = {str(k): float(v) for k, v in cached["warmup_seconds"].items()}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}, {}
    valid = (all(math.isfinite(v) and v > 0 for v in speeds.values())
             and all(math.isfinite(v) and v >= 0 for v in warmups.values()))
    if not valid or (len(speeds) >= 2 and max(speeds.values()) / min(speeds.values()) > MAX_PLAUSIBLE_RATIO):
        return {}, {}  # all measured again together (one candidate "100x" another is no measurement)
    return speeds, warmups


def _interleaved_timing(candidates: list[str], make_step, batch_size: int, timer) -> tuple[dict, dict]:
    """samples/s and warm-up seconds per candidate, timed in rounds (one step of each candidate per
    round) and judged by each one's fastest step: a machine busy for part of the probe then slows every
    candidate alike instead of whichever happened to run during the busy spell (a probe once measured
    channels_last at 0.37x NCDHW on a loaded CPU where it is 2x faster)."""
    steps = {c: make_step(c) for c in candidates}
    warmups = {}
    for candidate, step in steps.items():
        started = timer()
        step()
        warmups[candidate] = round(timer() - started, 3)
    rounds = 1 if max(warmups.values()) > SLOW_STEP_SECONDS else TIMED_STEPS
    seconds: dict[str, list[float]] = {c: [] for c in candidates}
    for _ in range(rounds):
        for candidate, step in steps.items():
            started = timer()
            step()
            seconds[candidate].append(timer() - started)
    speeds = {c: round(batch_size / max(min(s), 1e-9), 3) for c, s in seconds.items()}  # finite: JSON has no inf
    return speeds, warmups


def best_of(speeds: dict[str, float], prefix: str) -> float:
    """The best samples/s among candidates named `<prefix>/...` (or exactly `prefix`)."""
    values = [v for k, v in speeds.items() if k == prefix or k.startswith(prefix + "/")]
    return max(values) if values else 0.0


# The matmul check before a precision probe: products grown only until one takes this long, a few repeats.
# Its answer is a ratio compared with 1.0, not a peak: ~10x margins need no precision (about a second in all).
QUICK_MATMUL_SECONDS = 0.02
QUICK_MATMUL_REPEATS = 3


def cached_bf16_matmul_ratio(matmul_flops: Callable[[str], float], cache_file: Path | None) -> Callable[[], float]:
    """() -> bf16 over fp32 matrix-product FLOP/s on this machine (`matmul_flops(precision)` measures one),
    measured once and kept in `cache_file` (VOLCLS_REPROBE=1 measures again)."""
    def ratio() -> float:
        try:
            cached = float(_read_json_cache(cache_file)["bf16_over_fp32"])
        except (KeyError, ValueError, TypeError):
            cached = math.nan  # none kept, or damaged: measured again
        if math.isfinite(cached) and cached > 0:
            return cached
        measured = matmul_flops("bf16") / matmul_flops("fp32")
        _write_json_cache(cache_file, {"bf16_over_fp32": measured})
        return measured

    return ratio
