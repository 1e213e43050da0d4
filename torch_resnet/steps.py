"""The ResNet's autocast context and one synthetic training step: what the timed probe, the benchmarks
and the GPU benchmark time. Imports only torch and the model, so it runs on a machine that has torch
and numpy but not the rest of the project's dependencies (a borrowed GPU machine).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from common.runs.hardware import peak_rss_bytes
from torch_resnet.config import ResNetConfig
from torch_resnet.model import build_resnet


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def synthetic_training_step(config: ResNetConfig, *, batch_size: int, precision: str, channels_last: bool,
                            device: torch.device = torch.device("cpu"), compile_model: bool = False,
                            activation_checkpointing: bool = False):
    """A real training step (AdamW) of a freshly built model on one fixed random batch; returns the loss.
    The probe times it per candidate; `torch_resnet.bench` measures speed and memory with it."""
    torch.manual_seed(0)
    net = build_resnet(config, activation_checkpointing=activation_checkpointing).to(device)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, config.in_channels, *config.input_shape, generator=generator).to(device)
    y = torch.randint(0, config.num_classes, (batch_size,), generator=generator).to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    model = torch.compile(net) if compile_model else net

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        return loss.item()  # also waits for the device, so a timer around step() is honest on a GPU

    return step


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of training on `device`: the GPU's peak allocation, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()
