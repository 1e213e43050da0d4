"""Keras runtime options (generated into the CLI; importable before the Keras backend is chosen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError
from common.runs.typed import option


@dataclass(frozen=True, kw_only=True)
class KerasOptions:
    """Keras runtime options: how the run executes, not what it learns."""

    jit_compile: str = field(default="false", metadata=option(
        "XLA compilation of the train step (false: faster on CPU per BENCHMARKS.md; auto: Keras decides)",
        choices=("false", "true", "auto")))
    distribute: str = field(default="none", metadata=option(
        "tf.distribute.MirroredStrategy over this machine's GPUs (TensorFlow backend)",
        choices=("none", "mirrored")))
    logical_cpu_devices: int = field(default=0, metadata=option(
        "with --distribute mirrored on a CPU: split it into N logical devices"))

    def __post_init__(self):
        if self.logical_cpu_devices < 0:
            raise ConfigError(f"--logical-cpu-devices {self.logical_cpu_devices}: must be >= 0")

    @property
    def jit(self):
        return {"auto": "auto", "true": True, "false": False}[self.jit_compile]
