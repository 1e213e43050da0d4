"""Benchmarks, capacity and memory plans: what `make bench` and `make bench-gpu` measure and render, and the
export speed table. Nothing here is on a training run's path (the timed precision probe is common.runs.probe)."""
