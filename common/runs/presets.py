"""Preset names shared by both model packages: "seed" once named the lab's reference architecture,
and now means only random seeds (--seed, --split-seed). The old names keep working with a notice."""

from __future__ import annotations

import sys

from common.errors import ConfigError

RENAMED_PRESETS = {"seed": "reference", "seed_literal": "reference_literal", "seed_recipe": "reference_recipe"}


def canonical_preset(name: str, *, notice: bool = True) -> str:
    """The current name of preset `name`; an old name prints a one-line notice (notice=True)."""
    new = RENAMED_PRESETS.get(name)
    if new is None:
        return name
    if notice:
        print(f"notice: preset '{name}' is now called '{new}' (the old name still works)", file=sys.stderr)
    return new


# A preset names an architecture only; these two fields of a model config come from the data (--shape and
# the dataset's classes) and are bound by `with_data` just before a network is built.
DATA_FIELDS = ("input_shape", "num_classes")


def check_data_binding(input_shape, num_classes) -> tuple[int, int, int] | None:
    """input_shape as a tuple of ints (None while unbound), after checking both data fields: both set or
    both unset, three positive sizes, at least 2 classes."""
    if (input_shape is None) != (num_classes is None):
        raise ConfigError(f"input_shape {input_shape} and num_classes {num_classes}: bind both with with_data()")
    if input_shape is None:
        return None
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape {tuple(input_shape)}: expected three positive sizes (D, H, W)")
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes {num_classes}: a classifier needs at least 2 classes")
    return shape


def require_data(config) -> tuple[int, int, int]:
    """The input shape of a model config bound to data; a preset alone (no shape) is refused."""
    if config.input_shape is None:
        raise ConfigError(f"{type(config).__name__} has no input_shape/num_classes: a preset names an architecture "
                          "only; bind the data with config.with_data(input_shape=..., num_classes=...)")
    return config.input_shape
