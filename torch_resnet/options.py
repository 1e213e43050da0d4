"""PyTorch runtime options (generated into the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.runs.typed import option


@dataclass(frozen=True, kw_only=True)
class TorchOptions:
    """PyTorch runtime options: how the run executes, not what it learns."""

    device: str = field(default="auto", metadata=option("auto: the GPU if there is one", choices=("auto", "cpu", "cuda")))
    channels_last: bool | None = field(default=None, metadata=option(
        "channels_last_3d memory format (default: the faster layout here, by a timed probe)"))
    compile: bool | None = field(default=None, metadata=option(
        "torch.compile the model (default: when this run is long enough to pay back the compilation here, "
        "by a timed probe)"))
    activation_checkpointing: bool = field(default=False, metadata=option(
        "recompute each stage's activations in backward (less memory, more compute)"))
