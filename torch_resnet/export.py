"""`python -m torch_resnet export`: each run's selected weights as an ONNX graph (torch.onnx, the dynamo
exporter), input (B, 1, D, H, W) float32 with a dynamic batch, output logits (B, N)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from torch_resnet import checkpoints
from torch_resnet.model import build_resnet

INPUT_LAYOUT = "NCDHW"  # (batch, channel, D, H, W)


def export_network(net: nn.Module, example: torch.Tensor, out: Path, *, input_name: str = "x") -> None:
    """`net` in eval mode as one self-contained ONNX file (no external data), batch dimension dynamic."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(out), input_names=["volume"], output_names=["logits"],
                          dynamic_shapes={input_name: {0: batch}}, dynamo=True, external_data=False, verbose=False)


def export_run(run_dir: Path, out: Path) -> None:
    payload, config = checkpoints.load_selected(run_dir)
    net = build_resnet(config)
    net.load_state_dict(payload["state_dict"])
    export_network(net, torch.zeros(2, config.in_channels, *config.input_shape), out)
