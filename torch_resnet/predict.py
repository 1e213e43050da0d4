"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.data.inference import load_inputs, write_probabilities
from common.errors import ConfigError
from common.runs.decision import decide
from common.runs.ensemble import ensemble_members, ensemble_threshold, record_members
from torch_resnet import checkpoints
from torch_resnet.model import build_resnet
from torch_resnet.train import MODEL, predict_probabilities


def inference_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def predict_files(run_dir: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                  batch_size: int = 4, workers: int = 1, device: str = "auto") -> Path:
    """The run's preprocessing, weights and resolved precision (fp32 on a CPU if it trained in fp16).

    `run_dir` may also be a folder of runs (a cross-validation's cv/<name>/resnet): their class
    probabilities are averaged (a fold ensemble).
    """
    members = ensemble_members(Path(run_dir), MODEL)
    first = members[0][1]
    torch_device = inference_device(device)
    sample_ids, volumes = load_inputs(inputs, manifest, first.data.preprocess, workers=workers)
    total = None
    for member_dir, record in members:
        probabilities = _predict_one(member_dir, record, volumes.astype(np.float32), batch_size, torch_device)
        total = probabilities if total is None else total + probabilities
    probabilities = total / len(members)
    written = write_probabilities(out, sample_ids, list(first.data.classes), probabilities,
                                  decide(probabilities, ensemble_threshold(members)))
    record_members(written, members)
    return written


def _predict_one(run_dir: Path, record, volumes: np.ndarray, batch_size: int, torch_device: torch.device):
    payload, config = checkpoints.load_selected(run_dir)
    net = build_resnet(config)
    net.load_state_dict(payload["state_dict"])
    net.to(torch_device)
    channels_last = bool(record.options.get("channels_last", False))  # the layout it trained in
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)
    precision = record.precision.resolved
    if precision == "fp16" and torch_device.type == "cpu":
        precision = "fp32"  # fp16 autocast is a GPU mode
    return predict_probabilities(net, volumes, batch_size=batch_size, precision=precision, device=torch_device,
                                 channels_last=channels_last)
