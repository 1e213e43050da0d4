"""Evaluation: metrics, statistics, plots and the comparison report (all from run files only)."""
