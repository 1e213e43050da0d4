"""ResNet benchmarks: training throughput of the fast path vs the plain path, FLOP/s against this
machine's matmul peak, and peak memory of a step with and without activation checkpointing.

    python -m torch_resnet.bench throughput --shape 64 --batch 4 --steps 4      # prints one JSON line
    python -m torch_resnet.bench memory --shape 96 --batch 2 [--checkpointing]  # one config per process
    python -m torch_resnet.bench suite [--quick] --json-dir DIR   # all of them, as `make bench` runs them
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from common.runs.probe import time_steps
from torch_resnet.config import preset
from torch_resnet.model import flops_per_sample
from torch_resnet.train import synthetic_training_step

SUITE_SIZES = {
    "full": {"shape": 64, "batch": 4, "steps": 3, "compile": True, "memory_shape": 96, "memory_batch": 2},
    "quick": {"shape": 24, "batch": 2, "steps": 2, "compile": False, "memory_shape": 32, "memory_batch": 2},
}
PATHS = {  # name -> (precision, channels_last, compile)
    "plain (fp32, NCDHW, eager)": ("fp32", False, False),
    "fast (bf16 autocast, channels_last_3d, eager)": ("bf16", True, False),
}
COMPILED = {"fast + torch.compile": ("bf16", True, True)}


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matrix multiply in `dtype` on this CPU (all threads)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _setup(shape: int, batch: int, precision: str, channels_last: bool, compile_model: bool, *, checkpointing=False):
    config = preset("seed").with_data(input_shape=(shape,) * 3, num_classes=3)
    return config, synthetic_training_step(config, batch_size=batch, precision=precision, channels_last=channels_last,
                                           compile_model=compile_model, activation_checkpointing=checkpointing)


def throughput(shape: int, batch: int, steps: int, include_compile: bool) -> dict:
    paths = {**PATHS, **(COMPILED if include_compile else {})}
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    results = {}
    for name, (precision, channels_last, compile_model) in paths.items():
        config, step = _setup(shape, batch, precision, channels_last, compile_model)
        timing = time_steps(step, steps)  # the warm-up (and compilation) is not timed
        warmup_seconds, losses, seconds = timing.warmup_seconds, timing.outputs, float(np.median(timing.seconds))
        train_flops = 3 * flops_per_sample(config) * batch  # forward + backward ~ 3x forward
        results[name] = {
            "samples_per_second": batch / seconds, "step_seconds": seconds, "warmup_seconds": warmup_seconds,
            "losses": losses, "achieved_flops": train_flops / seconds,
            "fraction_of_fp32_peak": train_flops / seconds / peaks["fp32"],
            "fraction_of_own_peak": train_flops / seconds / peaks[precision], "precision": precision,
        }
    return {"shape": shape, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
            "matmul_peak_flops": peaks, "torch": torch.__version__, "paths": results}


def _current_rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def memory(shape: int, batch: int, checkpointing: bool) -> dict:
    """Peak resident memory added by one training step (fp32, NCDHW): activations + gradients + optimizer state."""
    _, step = _setup(shape, batch, "fp32", False, False, checkpointing=checkpointing)
    before = _current_rss()
    step()
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    if torch.cuda.is_available():  # not used on CPU; kept for a GPU run of the same script
        peak = max(peak, torch.cuda.max_memory_allocated())
    return {"shape": shape, "batch": batch, "checkpointing": checkpointing, "step_peak_bytes": peak - before}


def suite(quick: bool, json_dir: Path) -> None:
    """Throughput, then memory with and without checkpointing, each in a fresh process."""
    from common.benchmarks import run_json, save_json

    sizes = SUITE_SIZES["quick" if quick else "full"]
    print("benchmark: ResNet throughput", flush=True)
    args = ["throughput", "--shape", str(sizes["shape"]), "--batch", str(sizes["batch"]), "--steps",
            str(sizes["steps"])] + (["--compile"] if sizes["compile"] else [])
    save_json(json_dir / "resnet.json", run_json("torch_resnet.bench", args))
    print("benchmark: ResNet memory", flush=True)
    memory_args = ["memory", "--shape", str(sizes["memory_shape"]), "--batch", str(sizes["memory_batch"])]
    save_json(json_dir / "resnet-memory-plain.json", run_json("torch_resnet.bench", memory_args))
    save_json(json_dir / "resnet-memory-checkpointing.json",
              run_json("torch_resnet.bench", memory_args + ["--checkpointing"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m torch_resnet.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("throughput", "memory", "suite"))
    parser.add_argument("--quick", action="store_true", help="suite: reduced sizes (CI)")
    parser.add_argument("--json-dir", type=Path, help="suite: where the JSON results go")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "suite":
        if args.json_dir is None:
            parser.error("suite needs --json-dir")
        suite(args.quick, args.json_dir)
        return
    if args.what == "throughput":
        result = throughput(args.shape, args.batch, args.steps, args.compile)
    else:
        result = memory(args.shape, args.batch, args.checkpointing)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
