"""The registry of model packages: every list of models in `common` reads it.

`common` never imports a model package: it starts a trainer as a child process
(`python -m <package> train ...`) and reads what the trainer wrote. Adding a model is one entry
here plus its package (a `__main__` with `train`, `predict` and `explain`, and the driver adapter).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from common.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what a user types: `cv --models NAME`, `--NAME-args`
    package: str  # the Python package, recorded as `model` in config.json
    label: str  # the report's name for it
    run_prefix: str  # default run directories: runs/<prefix>-<UTC time>
    model_file: str  # the selected weights in a run directory
    explain_device: bool = False  # its `explain` takes --device

    def command(self, subcommand: str, *args: str) -> list[str]:
        """The command line that runs this model's `subcommand` in a child process."""
        return [sys.executable, "-m", self.package, subcommand, *args]


# Report order: the transformer first.
MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("transformer", "tf_transformer", "Transformer", "vit", "model.keras"),
    ModelEntry("resnet", "torch_resnet", "ResNet", "resnet", "model.pt", explain_device=True),
)
PACKAGES = tuple(m.package for m in MODELS)
NAMES = tuple(m.name for m in MODELS)


def by_package(package: str) -> ModelEntry:
    for entry in MODELS:
        if entry.package == package:
            return entry
    raise ConfigError(f"model '{package}' is not one of {list(PACKAGES)}")


def by_name(name: str) -> ModelEntry:
    for entry in MODELS:
        if entry.name == name:
            return entry
    raise ConfigError(f"model '{name}' is not one of {list(NAMES)}")
