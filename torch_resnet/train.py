"""Training of the ResNet: the PyTorch adapter of the shared driver (common.runs.driver).

The driver owns the run directory, the epoch loop's bookkeeping and the final predictions; this
module owns the model, the optimizer, autocast, memory layout, DDP and torch's training step.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.data.batches import EpochBatches, batch_slices
from common.data.dataset import PreparedDataset
from common.runs.config import RuntimeConfig, TrainConfig
from common.runs.driver import AdapterFacts, EpochStats, Processes, run_training
from common.runs.hardware import cpu_description
from common.runs.precision import Hardware
from common.runs.record import PrecisionDecision
from torch_resnet import checkpoints
from torch_resnet.config import ResNetConfig
from torch_resnet.distributed import DistContext, barrier, broadcast_object, sum_across_ranks
from torch_resnet.model import ResNet3D, build_resnet, count_parameters, flops_per_sample
from torch_resnet.options import TorchOptions

MODEL = "torch_resnet"


def hardware_of(device: torch.device) -> Hardware:
    if device.type == "cuda":
        return Hardware("cuda", torch.cuda.get_device_name(device), gpu_bf16=torch.cuda.is_bf16_supported())
    return Hardware("cpu", f"CPU {cpu_description()}; {torch.get_num_threads()} threads")


def resolve_channels_last(config: ResNetConfig) -> bool:
    """channels_last_3d pays off with wide convolutions only: measured on a 2-core AMX CPU with bf16,
    32 filters (seed) 1.5x faster, 8 filters (small) 0.5-0.8x."""
    return config.filters >= 16


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def to_model_input(batch: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """(B, D, H, W) float32 numpy -> (B, 1, D, H, W) tensor on device."""
    x = torch.from_numpy(batch).unsqueeze(1).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


@torch.no_grad()
def predict_probabilities(model: nn.Module, x: np.ndarray, *, batch_size: int, precision: str, device: torch.device,
                          channels_last: bool) -> np.ndarray:
    """(N, D, H, W) -> (N, n_classes) softmax probabilities, in eval mode."""
    model.eval()
    out = []
    for sl in batch_slices(len(x), batch_size):
        with autocast(precision, device):
            logits = model(to_model_input(np.asarray(x[sl], dtype=np.float32), device, channels_last))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def make_optimizer(parameters, training: TrainConfig) -> torch.optim.Optimizer:
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=0.9, nesterov=True, weight_decay=training.weight_decay)


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean(weight_i * CE_i) over the batch: the same reduction as Keras' sample weights."""
    return (F.cross_entropy(logits.float(), y, reduction="none") * weight).mean()


class TorchAdapter:
    """The ResNet behind the driver's ModelAdapter protocol."""

    model_file = "model.pt"
    state_suffix = ".pt"

    def __init__(self, config: ResNetConfig, training: TrainConfig, options: TorchOptions,
                 precision: PrecisionDecision, ctx: DistContext, classes: list[str], dataset: PreparedDataset):
        self.config, self.training, self.ctx, self.classes = config, training, ctx, classes
        self.device = ctx.device
        self.precision = precision.resolved
        self.preprocess = dataset.preprocess
        self.channels_last = resolve_channels_last(config) if options.channels_last is None else options.channels_last
        self.options = {**asdict(options), "channels_last": self.channels_last}
        torch.manual_seed(training.seed)
        self.net: ResNet3D = build_resnet(config, activation_checkpointing=options.activation_checkpointing)
        self.net.to(self.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        self.model: nn.Module = self.net
        if ctx.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if options.compile:
            self.model = torch.compile(self.model)
        self.optimizer = make_optimizer(self.net.parameters(), training)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def facts(self) -> AdapterFacts:
        return AdapterFacts(model_config=self.config.to_dict(), parameters=count_parameters(self.net),
                            flops_per_sample=flops_per_sample(self.config), device=hardware_of(self.device).name,
                            options=self.options,
                            versions={"torch": torch.__version__})

    def fit_epoch(self, batches: EpochBatches, *, learning_rate: float, on_step: Callable[[float], None]) -> EpochStats:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train()
        totals = torch.zeros(3, dtype=torch.float64)  # weighted loss sum, correct, count
        with ThreadPoolExecutor(1) as prefetch:  # read + augment batch i+1 while batch i computes
            pending = prefetch.submit(batches.__getitem__, 0)
            for step in range(len(batches)):
                batch = pending.result()
                if step + 1 < len(batches):
                    pending = prefetch.submit(batches.__getitem__, step + 1)
                x = to_model_input(batch.x, self.device, self.channels_last)
                y = torch.from_numpy(batch.y).to(self.device)
                weight = torch.from_numpy(batch.weight).to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                with autocast(self.precision, self.device):
                    logits = self.model(x)
                loss = weighted_cross_entropy(logits, y, weight)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_value = loss.item()
                totals += torch.tensor([loss_value * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                                       dtype=torch.float64)
                on_step(loss_value)
        totals = sum_across_ranks(self.ctx, totals)
        return EpochStats(float(totals[0] / totals[2]), float(totals[1] / totals[2]), int(totals[2]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_probabilities(self.net, x, batch_size=self.training.batch_size, precision=self.precision,
                                     device=self.device, channels_last=self.channels_last)

    def save_model(self, path: Path) -> None:
        checkpoints.save(path, {"model_config": self.config.to_dict(), "state_dict": self.net.state_dict(),
                                "classes": self.classes, "preprocess": self.preprocess.to_dict()})

    def load_model(self, path: Path) -> None:
        self.net.load_state_dict(checkpoints.load(path, expected=self.config)["state_dict"])

    def save_state(self, path: Path) -> None:
        checkpoints.save(path, {"model_config": self.config.to_dict(), "model": self.net.state_dict(),
                                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                                "torch_rng": torch.get_rng_state()})

    def load_state(self, path: Path) -> None:
        state = checkpoints.load(path, expected=self.config)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])

    def peak_memory_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def train(dataset: PreparedDataset, *, preset: str, model_config: ResNetConfig, training: TrainConfig,
          runtime: RuntimeConfig, options: TorchOptions, ctx: DistContext = DistContext()) -> Path:
    """Train (or resume) one ResNet run on `dataset`; returns the run directory."""
    processes = Processes(ctx.rank, ctx.world_size, barrier=lambda: barrier(ctx),
                          broadcast=lambda value: broadcast_object(ctx, value))
    return run_training(
        model=MODEL, preset=preset, model_config=model_config.to_dict(), dataset=dataset, training=training,
        runtime=runtime, hardware=hardware_of(ctx.device), processes=processes,
        build=lambda precision: TorchAdapter(model_config, training, options, precision, ctx, dataset.classes, dataset))
