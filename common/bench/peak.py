"""A matrix multiply's peak FLOP/s on this CPU, for every framework: the product grows until one takes long
enough to time, so a CPU that emulates a precision (bf16 without AVX512-BF16 or AMX: ~0.5 GFLOP/s, where a
4096^2 product takes over ten minutes) is measured in seconds, not hours."""

from __future__ import annotations

import time
from collections.abc import Callable

SMALLEST_N = 256
LARGEST_N = 4096
ENOUGH_SECONDS = 0.25  # one product at least this long: timer noise below 1 %


def matmul_peak(multiply_for: Callable[[int], Callable[[], object]], *, repeats: int = 5,
                largest_n: int = LARGEST_N, enough_seconds: float = ENOUGH_SECONDS) -> tuple[float, int]:
    """(best FLOP/s, n) of an n x n product: `multiply_for(n)` makes the operands and returns a function that
    multiplies them once and waits for the result. n doubles from SMALLEST_N until one product takes
    `enough_seconds` or n reaches `largest_n`; the best of `repeats` timings at that n counts."""
    n = SMALLEST_N
    while True:
        multiply = multiply_for(n)
        multiply()  # warm-up: allocation, thread pool, kernel choice
        seconds = _timed(multiply)
        if seconds >= enough_seconds or n >= largest_n:
            break
        n *= 2
    best = min([seconds] + [_timed(multiply) for _ in range(repeats - 1)])
    return 2 * n**3 / best, n


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
