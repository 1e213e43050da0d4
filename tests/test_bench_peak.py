"""The matmul peak's product size (common.bench.peak): it grows until one product is long enough to time,
so an emulated precision is measured in seconds, and never past the largest size."""

import pytest

import common.bench.peak as peak


@pytest.fixture
def cubic_clock(monkeypatch):
    """A product of n x n takes (n / 1024)^3 x 0.25 s: 1024 is the first size that is long enough."""
    made = []

    def multiply_for(n):
        made.append(n)
        return lambda: n

    monkeypatch.setattr(peak, "_timed", lambda multiply: (multiply() / 1024) ** 3 * peak.ENOUGH_SECONDS)
    return multiply_for, made


def test_the_product_grows_until_one_is_long_enough_to_time(cubic_clock):
    multiply_for, made = cubic_clock
    flops, n = peak.matmul_peak(multiply_for)
    assert n == 1024 and made == [256, 512, 1024]
    assert flops == pytest.approx(2 * 1024**3 / peak.ENOUGH_SECONDS)


def test_the_product_stops_at_the_largest_size(cubic_clock):
    multiply_for, made = cubic_clock
    flops, n = peak.matmul_peak(multiply_for, largest_n=512)
    assert n == 512 and made == [256, 512]
    assert flops == pytest.approx(2 * 512**3 / ((512 / 1024) ** 3 * peak.ENOUGH_SECONDS))
