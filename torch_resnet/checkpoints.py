"""Checkpoints: `model.pt` (the selected weights) and `resume.pt` (everything to continue a run).

Both are plain dicts of tensors and builtins, loadable with torch.load(weights_only=True), and both
record the architecture so a checkpoint for another model or class count is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import atomic_write
from common.errors import DataError
from torch_resnet.config import ResNetConfig

FORMAT = "torch_resnet/1"


def save(path: Path, payload: dict) -> None:
    atomic_write(Path(path), lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))


def load(path: Path, *, expected: ResNetConfig | None = None) -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: checkpoint not found") from exc
    except Exception as exc:
        raise DataError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a torch_resnet checkpoint (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    if expected is not None:
        stored = ResNetConfig(**_tuples(payload["model_config"]))
        if stored != expected:
            diff = {k: (v, getattr(expected, k)) for k, v in stored.to_dict().items() if getattr(expected, k) != v}
            raise DataError(f"{path}: checkpoint is for another architecture; (checkpoint, requested) differ in {diff}")
    return payload


def load_selected(run_dir: Path) -> tuple[dict, ResNetConfig]:
    """The run's model.pt and its config, refused unless the checkpoint is the network its config.json
    describes (the record itself is checked against its data by read_record)."""
    from common.runs.record import read_record

    expected = model_config_of({"model_config": read_record(run_dir).model_config})
    payload = load(Path(run_dir) / "model.pt", expected=expected)
    return payload, expected


def model_config_of(payload: dict) -> ResNetConfig:
    return ResNetConfig(**_tuples(payload["model_config"]))


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
