"""Preset names shared by both model packages: "seed" once named the lab's reference architecture,
and now means only random seeds (--seed, --split-seed). The old names keep working with a notice."""

from __future__ import annotations

import sys

RENAMED_PRESETS = {"seed": "reference", "seed_literal": "reference_literal", "seed_recipe": "reference_recipe"}


def canonical_preset(name: str, *, notice: bool = True) -> str:
    """The current name of preset `name`; an old name prints a one-line notice (notice=True)."""
    new = RENAMED_PRESETS.get(name)
    if new is None:
        return name
    if notice:
        print(f"notice: preset '{name}' is now called '{new}' (the old name still works)", file=sys.stderr)
    return new
