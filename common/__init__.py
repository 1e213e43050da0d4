"""Framework-free core shared by both trainers: data sources, preprocessing, cache, splits,
augmentation, the run-directory contract, metrics, plots and the comparison report.

This package must never import torch, tensorflow or keras (tests/test_no_framework_import.py).
"""

from common.errors import DataError

__all__ = ["DataError"]
