"""Training of the ResNet: train on train, select on val, predict val and test, write the run directory."""

from __future__ import annotations

import argparse
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from common.data.batches import (
    balanced_class_weights,
    batch_slices,
    epoch_order,
    epoch_rng,
    load_batch,
    shard,
)
from common.data.dataset import PreparedDataset
from common.runs.faults import kill_after_steps, maybe_kill
from common.runs.hardware import cpu_description
from common.runs.options import augment_config, dataset_from_args, training_config
from common.runs.rundir import new_run_dir
from common.runs.schedules import learning_rate
from common.runs.training import RunRecorder, is_better
from torch_resnet import checkpoints
from torch_resnet.config import ResNetConfig, preset
from torch_resnet.distributed import DistContext, barrier, init_distributed, mean_across_ranks, shutdown
from torch_resnet.model import ResNet3D, build_resnet, count_parameters, flops_per_sample

# Options whose change makes an existing resume state unusable for this command.
RESUME_KEYS = ("preset", "epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs", "seed",
               "augment", "flip_axes", "class_weights", "balanced_sampler", "select_metric")


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it (else fp16), bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


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


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class Trainer:
    def __init__(self, args: argparse.Namespace, dataset: PreparedDataset, ctx: DistContext, run_dir: Path):
        self.args, self.dataset, self.ctx, self.run_dir = args, dataset, ctx, run_dir
        self.device = ctx.device
        self.precision = resolve_precision(args.precision, self.device)
        self.config: ResNetConfig = preset(args.preset).with_data(
            input_shape=dataset.preprocess.shape, num_classes=len(dataset.classes))
        if args.channels_last is None:
            args.channels_last = resolve_channels_last(self.config)
        torch.manual_seed(args.seed)
        self.net: ResNet3D = build_resnet(self.config, activation_checkpointing=args.activation_checkpointing)
        self.net.to(self.device)
        if args.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        self.model: nn.Module = self.net
        if ctx.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if args.compile:
            self.model = torch.compile(self.model)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.train_split = dataset.split("train")
        self.val_split = dataset.split("val")
        weights = balanced_class_weights(self.train_split.y, len(dataset.classes)) if args.class_weights else None
        self.loss_fn = nn.CrossEntropyLoss(
            weight=None if weights is None else torch.tensor(weights, dtype=torch.float32, device=self.device))
        self.augment = augment_config(args)
        self.recorder = RunRecorder(run_dir, enabled=ctx.is_main)
        self.start_epoch, self.best, self.best_epoch, self.stale_epochs, self.finished = 0, None, 0, 0, False
        self.train_seconds, self.samples_seen = 0.0, 0

    # ---- state -------------------------------------------------------------------------------
    def resume_state(self) -> dict:
        return {
            "model_config": self.config.to_dict(), "training": training_config(self.args),
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.start_epoch, "best": self.best, "best_epoch": self.best_epoch,
            "stale_epochs": self.stale_epochs, "finished": self.finished,
            "train_seconds": self.train_seconds, "samples_seen": self.samples_seen,
            "torch_rng": torch.get_rng_state(),
        }

    def try_resume(self) -> bool:
        path = self.run_dir / "resume.pt"
        if not path.is_file():
            return False
        state = checkpoints.load(path, expected=self.config)
        wanted = {k: v for k, v in training_config(self.args).items() if k in RESUME_KEYS}
        stored = {k: state["training"].get(k) for k in RESUME_KEYS}
        changed = {k: (stored[k], wanted[k]) for k in RESUME_KEYS if _norm(stored[k]) != _norm(wanted[k])}
        if changed:
            raise SystemExit(f"error: {path} was made with other options (stored, requested): {changed}; "
                             "use a new --run-dir")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        for key in ("best", "best_epoch", "stale_epochs", "finished", "train_seconds", "samples_seen"):
            setattr(self, key, state[key])
        self.start_epoch = state["epoch"]
        self.recorder.resume_history(self.start_epoch)
        if self.ctx.is_main:
            print(f"resuming {self.run_dir} after epoch {self.start_epoch}")
        return True

    def save_best(self, epoch: int, value: float) -> None:
        checkpoints.save(self.run_dir / "model.pt", {
            "model_config": self.config.to_dict(), "state_dict": self.net.state_dict(), "classes": self.dataset.classes,
            "preprocess": self.dataset.preprocess.to_dict(), "epoch": epoch, self.args.select_metric: value})

    # ---- loops -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, steps_done: int, kill_limit: int | None) -> tuple[float, float, int]:
        self.model.train()
        order = epoch_order(self.train_split.y, seed=self.args.seed, epoch=epoch, balanced=self.args.balanced_sampler)
        order = shard(order, rank=self.ctx.rank, world_size=self.ctx.world_size)
        rng = epoch_rng(self.args.seed, epoch, 1 + self.ctx.rank)
        slices = batch_slices(len(order), self.args.batch_size)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count

        def load(sl):
            return load_batch(self.train_split.x, order[sl], augment=self.augment, rng=rng), self.train_split.y[order[sl]]

        bar = tqdm(total=len(slices), desc=f"epoch {epoch + 1}", leave=False,
                   disable=self.args.quiet or not self.ctx.is_main)
        with ThreadPoolExecutor(1) as prefetch:  # read + augment batch i+1 while batch i computes
            pending = prefetch.submit(load, slices[0])
            for i in range(len(slices)):
                xb, yb = pending.result()
                if i + 1 < len(slices):
                    pending = prefetch.submit(load, slices[i + 1])
                x = to_model_input(xb, self.device, self.args.channels_last)
                y = torch.from_numpy(yb).to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                with autocast(self.precision, self.device):
                    logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                totals += torch.tensor([loss.item() * len(yb), (logits.argmax(1) == y).sum().item(), len(yb)],
                                       dtype=torch.float64)
                steps_done += 1
                bar.update()
                bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}")
                maybe_kill(steps_done, kill_limit)
        bar.close()
        totals = mean_across_ranks(self.ctx, totals)
        self.samples_seen += int(totals[2].item() * self.ctx.world_size)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2]), steps_done

    def evaluate(self, split) -> tuple[float, float]:
        """(mean cross-entropy, accuracy); unweighted even with --class-weights, as Keras reports val_loss."""
        probs = self.predict(split.x)
        y = split.y
        loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).mean())
        return loss, float((probs.argmax(1) == y).mean())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_probabilities(self.net, x, batch_size=self.args.batch_size, precision=self.precision,
                                     device=self.device, channels_last=self.args.channels_last)

    def fit(self) -> None:
        args = self.args
        kill_limit = kill_after_steps()
        steps_done = 0
        for epoch in range(self.start_epoch, args.epochs):
            if self.finished:
                break
            lr = learning_rate(epoch, base_lr=args.lr, epochs=args.epochs, schedule=args.schedule,
                               warmup_epochs=args.warmup_epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            started = time.perf_counter()
            train_loss, train_acc, steps_done = self.train_epoch(epoch, steps_done, kill_limit)
            train_time = time.perf_counter() - started
            val_loss, val_acc = self.evaluate(self.val_split)
            seconds = time.perf_counter() - started
            self.train_seconds += train_time
            value = val_loss if args.select_metric == "val_loss" else val_acc
            if is_better(args.select_metric, value, self.best):
                self.best, self.best_epoch, self.stale_epochs = value, epoch + 1, 0
                if self.ctx.is_main:
                    self.save_best(epoch + 1, value)
            else:
                self.stale_epochs += 1
            self.recorder.epoch(dict(epoch=epoch + 1, train_loss=train_loss, train_accuracy=train_acc,
                                     val_loss=val_loss, val_accuracy=val_acc, lr=lr, seconds=seconds))
            self.start_epoch = epoch + 1
            if args.patience and self.stale_epochs >= args.patience:
                if self.ctx.is_main:
                    print(f"early stopping: no {args.select_metric} improvement for {args.patience} epochs")
                self.finished = True
            self.finished = self.finished or self.start_epoch >= args.epochs
            if self.ctx.is_main:
                checkpoints.save(self.run_dir / "resume.pt", self.resume_state())
            barrier(self.ctx)

    def facts(self) -> dict:
        return {"parameters": count_parameters(self.net), "flops_per_sample": flops_per_sample(self.config),
                "train_seconds": self.train_seconds, "best_epoch": self.best_epoch,
                "samples_per_second": self.samples_seen / self.train_seconds if self.train_seconds else None,
                "peak_memory_bytes": peak_memory_bytes(self.device), "device": describe_device(self.device),
                "world_size": self.ctx.world_size}

    def run_config(self) -> dict:
        return {
            "model": "torch_resnet", "framework": {"torch": torch.__version__}, "run_dir": str(self.run_dir),
            "model_config": self.config.to_dict(), "training": training_config(self.args),
            "options": {"precision": self.precision, "channels_last": self.args.channels_last,
                        "compile": self.args.compile, "activation_checkpointing": self.args.activation_checkpointing,
                        "world_size": self.ctx.world_size},
            "parameters": count_parameters(self.net), "data": self.dataset.describe(),
            "data_hash": self.dataset.data_hash, "split_hash": self.dataset.split_hash,
        }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_description()}; {torch.get_num_threads()} threads"


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def train(args: argparse.Namespace) -> Path:
    ctx = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if ctx.is_main:  # rank 0 builds the cache; the others then find it
            dataset = dataset_from_args(args, progress=not args.quiet)
        barrier(ctx)
        if not ctx.is_main:
            dataset = dataset_from_args(args, progress=False)
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(args.runs_root), "resnet")
        if ctx.enabled:  # every rank must use rank 0's run directory name
            import torch.distributed as dist

            holder = [str(run_dir)]
            dist.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
        trainer = Trainer(args, dataset, ctx, run_dir)
        if not trainer.try_resume():
            trainer.recorder.start(trainer.run_config())
            if ctx.is_main:
                print(f"run directory: {run_dir}  ({trainer.precision}, {trainer.device}, "
                      f"{count_parameters(trainer.net):,} parameters)")
        trainer.fit()
        if ctx.is_main:
            best = checkpoints.load(run_dir / "model.pt", expected=trainer.config)
            trainer.net.load_state_dict(best["state_dict"])
            trainer.recorder.finish(dataset, trainer.predict, facts=trainer.facts())
        barrier(ctx)
        return run_dir
    finally:
        shutdown(ctx)
