"""`predict`: a trained run directory + new NIfTI files (or a manifest) -> CSV of class probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.data.inference import load_inputs, write_probabilities
from common.data.preprocess import PreprocessConfig
from torch_resnet import checkpoints
from torch_resnet.model import build_resnet
from torch_resnet.train import predict_probabilities, resolve_precision


def predict_files(run_dir: Path, inputs: list[Path] | None, manifest: Path | None, out: Path, *,
                  batch_size: int = 4, workers: int = 1) -> Path:
    payload = checkpoints.load(Path(run_dir) / "model.pt")
    config = checkpoints.model_config_of(payload)
    preprocess = PreprocessConfig.from_dict(payload["preprocess"])
    sample_ids, volumes = load_inputs(inputs, manifest, preprocess, workers=workers)
    net = build_resnet(config)
    net.load_state_dict(payload["state_dict"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    probabilities = predict_probabilities(net, volumes.astype(np.float32), batch_size=batch_size,
                                          precision=resolve_precision("auto", device), device=device,
                                          channels_last=False)
    return write_probabilities(out, sample_ids, payload["classes"], probabilities)
