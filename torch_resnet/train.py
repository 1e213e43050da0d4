"""Training of the ResNet: the PyTorch adapter of the shared driver (common.runs.driver).

The driver owns the run directory, the epoch loop's bookkeeping and the final predictions; this
module owns the model, the optimizer, autocast, memory layout, DDP and torch's training step.
"""

from __future__ import annotations

import json
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
from common.runs.probe import best_of, probe_key, timed_probe
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


LAYOUTS = {"ncdhw": False, "channels_last": True}


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


def make_probe_step(config: ResNetConfig, candidate: str, *, batch_size: int, device: torch.device):
    """The training step of a "<precision>/<layout>" candidate."""
    precision, layout = candidate.split("/")
    return synthetic_training_step(config, batch_size=batch_size, precision=precision,
                                   channels_last=LAYOUTS[layout], device=device)


class SpeedProbe:
    """Timed training steps per "<precision>/<layout>" candidate, measured once and cached per machine."""

    def __init__(self, config: ResNetConfig, batch_size: int, device: torch.device, cache_dir: Path | None):
        self.config, self.batch_size, self.device = config, batch_size, device
        facts = {"framework": f"torch {torch.__version__}", "device": hardware_of(device).name,
                 "threads": torch.get_num_threads(), "model": config.to_dict(), "batch": batch_size}
        self.cache_file = cache_dir / f"resnet-{probe_key(facts)}.json" if cache_dir else None

    def __call__(self, candidates: list[str]) -> dict[str, float]:
        return timed_probe(candidates, lambda c: make_probe_step(self.config, c, batch_size=self.batch_size,
                                                                 device=self.device),
                           batch_size=self.batch_size, cache_file=self.cache_file)


def resolve_channels_last(requested: bool | None, precision: str, probe: SpeedProbe | None) -> tuple[bool, str]:
    """(channels_last, why): an explicit flag wins, else the faster layout on this machine by the probe."""
    if requested is not None:
        return requested, f"--{'' if requested else 'no-'}channels-last given"
    if probe is None:
        return False, "no probe (several processes): NCDHW"
    speeds = probe([f"{precision}/ncdhw", f"{precision}/channels_last"])
    ratio = speeds[f"{precision}/channels_last"] / speeds[f"{precision}/ncdhw"]
    return ratio > 1.0, f"probe: channels_last {ratio:.2f}x NCDHW in {precision}"


def precision_probe(requested_layout: bool | None, probe: SpeedProbe | None):
    """For `decide_precision`: best samples/s per precision over the layouts still open."""
    if probe is None:
        return None
    layouts = list(LAYOUTS) if requested_layout is None else [k for k, v in LAYOUTS.items() if v == requested_layout]

    def measure() -> dict[str, float]:
        speeds = probe([f"{p}/{layout}" for p in ("fp32", "bf16") for layout in layouts])
        return {p: best_of(speeds, p) for p in ("fp32", "bf16")}

    return measure


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


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, *,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """mean(weight_i * CE_i) over the batch: the same reduction as Keras' sample weights."""
    return (F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=label_smoothing) * weight).mean()


class TorchAdapter:
    """The ResNet behind the driver's ModelAdapter protocol."""

    model_file = "model.pt"
    state_suffix = ".pt"

    def __init__(self, config: ResNetConfig, training: TrainConfig, options: TorchOptions,
                 precision: PrecisionDecision, ctx: DistContext, classes: list[str], dataset: PreparedDataset,
                 probe: SpeedProbe | None = None):
        self.config, self.training, self.ctx, self.classes = config, training, ctx, classes
        self.device = ctx.device
        self.precision = precision.resolved
        self.preprocess = dataset.preprocess
        self.channels_last, layout_reason = resolve_channels_last(options.channels_last, self.precision, probe)
        self.options = {**asdict(options), "channels_last": self.channels_last, "layout_reason": layout_reason}
        if probe is not None and probe.cache_file is not None and probe.cache_file.is_file():
            self.options["probe_samples_per_second"] = json.loads(probe.cache_file.read_text())
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
                loss = weighted_cross_entropy(logits, y, weight, label_smoothing=self.training.label_smoothing)
                self.scaler.scale(loss).backward()
                if self.training.grad_clip:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
                    nn.utils.clip_grad_norm_(self.net.parameters(), self.training.grad_clip)
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
    # One process: measure what is fastest here. Several: every rank must agree, so no probe (NCDHW).
    probe = None if ctx.enabled else SpeedProbe(model_config, training.batch_size, ctx.device,
                                                dataset.folder.parent.parent / "probes")
    return run_training(
        model=MODEL, preset=preset, model_config=model_config.to_dict(), dataset=dataset, training=training,
        runtime=runtime, hardware=hardware_of(ctx.device), processes=processes,
        probe=precision_probe(options.channels_last, probe),
        build=lambda precision: TorchAdapter(model_config, training, options, precision, ctx, dataset.classes, dataset,
                                             probe))
