"""Numbers as the reports print them: three decimals, "n/a" for a missing or non-finite value, CIs."""

from __future__ import annotations

import numpy as np


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def with_ci(metrics: dict, key: str) -> str:
    value = fmt(metrics[key])
    if key in metrics["ci95"]:
        low, high = metrics["ci95"][key]
        value += f" ({fmt(low)}–{fmt(high)})"
    return value
