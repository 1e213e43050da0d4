"""Training of the ResNet: the PyTorch adapter of the shared driver (common.runs.driver).

The driver owns the run directory, the epoch loop's bookkeeping and the final predictions; this
module owns the model, the optimizer, autocast, memory layout, DDP and torch's training step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from common.data.batches import EpochBatches, batch_slices
from common.data.dataset import PreparedDataset
from common.evaluation.metrics import report_finished_run
from common.runs.config import RuntimeConfig, TrainConfig
from common.runs.driver import AdapterFacts, EpochStats, Processes, run_training
from common.runs.hardware import cpu_description
from common.runs.precision import Hardware
from common.runs.probe import (
    QUICK_MATMUL_REPEATS,
    QUICK_MATMUL_SECONDS,
    best_of,
    cached_bf16_matmul_ratio,
    probe_key,
    timed_probe,
)
from common.runs.record import PrecisionDecision
from torch_resnet import checkpoints
from torch_resnet.config import ResNetConfig
from torch_resnet.distributed import DistContext, barrier, broadcast_object, sum_across_ranks
from torch_resnet.model import ResNet3D, build_resnet, count_parameters, flops_per_sample
from torch_resnet.options import TorchOptions
from torch_resnet.steps import autocast, peak_memory_bytes, synthetic_training_step

MODEL = "torch_resnet"


def hardware_of(device: torch.device) -> Hardware:
    if device.type == "cuda":
        return Hardware("cuda", torch.cuda.get_device_name(device), gpu_bf16=torch.cuda.is_bf16_supported())
    return Hardware("cpu", f"CPU {cpu_description()}; {torch.get_num_threads()} threads")


LAYOUTS = {"ncdhw": False, "channels_last": True}


def make_probe_step(config: ResNetConfig, candidate: str, *, batch_size: int, device: torch.device):
    """The training step of a "<precision>/<layout>[/compiled]" candidate."""
    precision, layout, *compiled = candidate.split("/")
    return synthetic_training_step(config, batch_size=batch_size, precision=precision,
                                   channels_last=LAYOUTS[layout], device=device, compile_model=bool(compiled))


class SpeedProbe:
    """Timed training steps per "<precision>/<layout>" candidate, measured once and cached per machine."""

    def __init__(self, config: ResNetConfig, batch_size: int, device: torch.device, cache_dir: Path | None):
        self.config, self.batch_size, self.device = config, batch_size, device
        facts = {"framework": f"torch {torch.__version__}", "device": hardware_of(device).name,
                 "threads": torch.get_num_threads(), "model": config.to_dict(), "batch": batch_size}
        self.cache_file = cache_dir / f"resnet-{probe_key(facts)}.json" if cache_dir else None

    def __call__(self, candidates: list[str], warmups: dict[str, float] | None = None, *,
                 fresh: bool = False) -> dict[str, float]:
        return timed_probe(candidates, lambda c: make_probe_step(self.config, c, batch_size=self.batch_size,
                                                                 device=self.device),
                           batch_size=self.batch_size, cache_file=self.cache_file, warmups=warmups, fresh=fresh)


def resolve_channels_last(requested: bool | None, precision: str, probe: SpeedProbe | None) -> tuple[bool, str]:
    """(channels_last, why): an explicit flag wins, else the faster layout on this machine by the probe."""
    if requested is not None:
        return requested, f"--{'' if requested else 'no-'}channels-last given"
    if probe is None:
        return False, "no probe (several processes): NCDHW"
    speeds = probe([f"{precision}/ncdhw", f"{precision}/channels_last"])
    ratio = speeds[f"{precision}/channels_last"] / speeds[f"{precision}/ncdhw"]
    return ratio > 1.0, f"probe: channels_last {ratio:.2f}x NCDHW in {precision}"


# A run whose eager training would take less than this is not worth probing torch.compile: the probe
# compiles once itself (about a minute on a CPU), so a shorter run could never gain it back.
COMPILE_PROBE_MIN_SECONDS = 600.0
# Compile only when the run is this many times longer than the payback: an epoch's ragged last batch
# (another input shape) and a resumed process each compile again.
COMPILE_PAYBACK_MARGIN = 2.0


def resolve_compile(requested: bool | None, *, precision: str, channels_last: bool, planned_steps: int,
                    probe) -> tuple[bool, str]:
    """(compile, why): an explicit flag wins; else compile when this run is long enough for the faster
    compiled steps, measured here, to pay back the compilation, also measured here."""
    if requested is not None:
        return requested, f"--{'' if requested else 'no-'}compile given"
    if probe is None:
        return False, "no probe (several processes): eager"
    eager = f"{precision}/{'channels_last' if channels_last else 'ncdhw'}"
    eager_step = probe.batch_size / probe([eager])[eager]
    if planned_steps * eager_step < COMPILE_PROBE_MIN_SECONDS:
        return False, (f"eager: {planned_steps} steps of ~{eager_step:.2f} s are too short a run to pay back a "
                       "compilation (not probed)")
    warmups: dict[str, float] = {}
    compiled = eager + "/compiled"
    speeds = probe([eager, compiled], warmups=warmups)
    compiled_step = probe.batch_size / speeds[compiled]
    if compiled_step >= eager_step:
        return False, f"probe: compiled steps {eager_step / compiled_step:.2f}x eager, no faster"
    payback = (warmups[compiled] - warmups[eager]) / (eager_step - compiled_step)
    chosen = planned_steps > COMPILE_PAYBACK_MARGIN * payback
    return chosen, (f"probe: compiled steps {eager_step / compiled_step:.2f}x eager; the compilation pays back after "
                    f"{payback:.0f} steps, this run has {planned_steps}")


def precision_probe(requested_layout: bool | None, probe: SpeedProbe | None):
    """For `decide_precision`: best samples/s per precision over the layouts still open."""
    if probe is None:
        return None
    layouts = list(LAYOUTS) if requested_layout is None else [k for k, v in LAYOUTS.items() if v == requested_layout]

    def measure(fresh: bool = False) -> dict[str, float]:
        candidates = [f"{p}/{layout}" for p in ("fp32", "bf16") for layout in layouts]
        speeds = probe(candidates, fresh=True) if fresh else probe(candidates)
        return {p: best_of(speeds, p) for p in ("fp32", "bf16")}

    return measure


def bf16_matmul_check(device: torch.device, cache_dir: Path) -> Callable[[], float]:
    """For `decide_precision`: bf16 over fp32 torch.mm throughput on this CPU, measured once per machine."""
    from torch_resnet.bench import matmul_peak

    facts = {"framework": f"torch {torch.__version__}", "device": hardware_of(device).name,
             "threads": torch.get_num_threads()}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    return cached_bf16_matmul_ratio(
        lambda p: matmul_peak(dtypes[p], repeats=QUICK_MATMUL_REPEATS, enough_seconds=QUICK_MATMUL_SECONDS),
        cache_dir / f"matmul-{probe_key(facts)}.json")


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


def decay_groups(net: nn.Module, training: TrainConfig):
    """All parameters in one group, or with --weight-decay-exclusions two: matrices and kernels decay;
    biases and norm parameters (every parameter of at most one dimension) do not."""
    if not training.weight_decay_exclusions:
        return list(net.parameters())
    params = list(net.parameters())
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(parameters, training: TrainConfig) -> torch.optim.Optimizer:
    if training.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=0.9, nesterov=True, weight_decay=training.weight_decay)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """mean(weight_i * CE(target_i, softmax(logits_i))) over the batch: the same reduction as Keras' sample
    weights. target: (B, K) probabilities (one-hot, or blended by mixup); smoothing applies to them."""
    return (F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=label_smoothing) * weight).mean()


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
        planned_steps = training.epochs * len(batch_slices(len(dataset.split("train").y), training.batch_size))
        self.compile, compile_reason = resolve_compile(options.compile, precision=self.precision,
                                                       channels_last=self.channels_last, planned_steps=planned_steps,
                                                       probe=probe)
        self.options = {**asdict(options), "channels_last": self.channels_last, "layout_reason": layout_reason,
                        "compile": self.compile, "compile_reason": compile_reason}
        if probe is not None and probe.cache_file is not None and probe.cache_file.is_file():
            self.options["probe"] = json.loads(probe.cache_file.read_text())
        torch.manual_seed(training.seed)
        self.net: ResNet3D = build_resnet(config, activation_checkpointing=options.activation_checkpointing)
        self.net.to(self.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        self.model: nn.Module = self.net
        if ctx.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.compile:
            self.model = torch.compile(self.model)
        self.optimizer = make_optimizer(decay_groups(self.net, training), training)
        # Weight EMA (--ema-decay): parameters and BatchNorm buffers averaged after every step; the average
        # is what validation sees, what selection saves and what predicts.
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(training.ema_decay),
                                 use_buffers=True) if training.ema_decay else None
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
        data_wait = 0.0  # seconds the loop waited for a batch the prefetch thread had not finished
        with ThreadPoolExecutor(1) as prefetch:  # read + augment batch i+1 while batch i computes
            pending = prefetch.submit(batches.__getitem__, 0)
            for step in range(len(batches)):
                waiting = time.perf_counter()
                batch = pending.result()
                data_wait += time.perf_counter() - waiting
                if step + 1 < len(batches):
                    pending = prefetch.submit(batches.__getitem__, step + 1)
                x = to_model_input(batch.x, self.device, self.channels_last)
                target = torch.from_numpy(batch.target).to(self.device)
                weight = torch.from_numpy(batch.weight).to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                with autocast(self.precision, self.device):
                    logits = self.model(x)
                loss = weighted_cross_entropy(logits, target, weight, label_smoothing=self.training.label_smoothing)
                self.scaler.scale(loss).backward()
                if self.training.grad_clip:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
                    nn.utils.clip_grad_norm_(self.net.parameters(), self.training.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update_parameters(self.net)
                loss_value = loss.item()
                # Accuracy against the target's top class, as Keras' CategoricalAccuracy counts it (with mixup
                # and class weights that can be the partner's class).
                hits = (logits.argmax(1) == target.argmax(1)).sum().item()
                n = len(batch.y)
                totals += torch.tensor([loss_value * n, hits, n], dtype=torch.float64)
                on_step(loss_value)
        totals = sum_across_ranks(self.ctx, totals)
        return EpochStats(float(totals[0] / totals[2]), float(totals[1] / totals[2]), int(totals[2]), data_wait)

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation, selection and prediction use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_probabilities(self.evaluated, x, batch_size=self.training.batch_size, precision=self.precision,
                                     device=self.device, channels_last=self.channels_last)

    def save_model(self, path: Path) -> None:
        checkpoints.save(path, {"model_config": self.config.to_dict(), "state_dict": self.evaluated.state_dict(),
                                "classes": self.classes, "preprocess": self.preprocess.to_dict()})

    def load_model(self, path: Path) -> None:
        self.evaluated.load_state_dict(checkpoints.load(path, expected=self.config)["state_dict"])

    def save_state(self, path: Path) -> None:
        checkpoints.save(path, {"model_config": self.config.to_dict(), "model": self.net.state_dict(),
                                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                                "ema": self.ema.state_dict() if self.ema is not None else None,
                                "torch_rng": torch.get_rng_state()})

    def load_state(self, path: Path) -> None:
        state = checkpoints.load(path, expected=self.config)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])

    def peak_memory_bytes(self) -> int:
        return peak_memory_bytes(self.device)


def train(dataset: PreparedDataset, *, preset: str, model_config: ResNetConfig, training: TrainConfig,
          runtime: RuntimeConfig, options: TorchOptions, ctx: DistContext = DistContext()) -> Path:
    """Train (or resume) one ResNet run on `dataset`; returns the run directory."""
    processes = Processes(ctx.rank, ctx.world_size, barrier=lambda: barrier(ctx),
                          broadcast=lambda value: broadcast_object(ctx, value))
    # One process: measure what is fastest here. Several: every rank must agree, so no probe (NCDHW).
    probe = None if ctx.enabled else SpeedProbe(model_config, training.batch_size, ctx.device,
                                                dataset.cache_root / "probes")
    run_dir = run_training(
        model=MODEL, preset=preset, model_config=model_config.to_dict(), dataset=dataset, training=training,
        runtime=runtime, hardware=hardware_of(ctx.device), processes=processes,
        probe=precision_probe(options.channels_last, probe),
        bf16_matmul=None if probe is None else bf16_matmul_check(ctx.device, dataset.cache_root / "probes"),
        build=lambda precision: TorchAdapter(model_config, training, options, precision, ctx, dataset.classes, dataset,
                                             probe))
    if ctx.is_main:
        report_finished_run(run_dir)
    return run_dir
