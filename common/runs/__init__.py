"""Runs: typed configs and their CLI, the run record and directory, the training driver, precision, locks."""
