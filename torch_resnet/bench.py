"""ResNet benchmarks: training throughput of the fast path vs the plain path, FLOP/s against this
machine's matmul peak, and peak memory of a step with and without activation checkpointing.

    python -m torch_resnet.bench throughput --shape 64 --batch 4 --steps 4      # prints one JSON line
    python -m torch_resnet.bench memory --shape 96 --batch 2 [--checkpointing]  # one config per process
    python -m torch_resnet.bench suite [--quick] --json-dir DIR   # all of them, as `make bench` runs them
    python -m torch_resnet.bench capacity --device cuda --shape 192 --path fast   # largest batch, speed, memory
    python -m torch_resnet.bench plan --shape 192                 # activation memory on paper (meta device)
    python -m torch_resnet.bench loader --shape 64 --batch 4      # real IXI epoch vs the same batches in memory
    python -m torch_resnet.bench preset --preset small_recipe --shape 32 --batch 8   # one preset's fp32 cost

`capacity`, `plan` and the training steps import only torch, numpy and the model (torch_resnet/steps.py),
so they run on a GPU machine with its own torch and none of the project's other dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from common.bench.peak import matmul_peak as grown_matmul_peak
from common.runs.hardware import peak_rss_bytes
from common.runs.probe import time_steps
from torch_resnet.config import preset
from torch_resnet.model import flops_per_sample
from torch_resnet.steps import peak_memory_bytes, synthetic_training_step

SUITE_SIZES = {
    "full": {"shape": 64, "batch": 4, "steps": 3, "compile": True, "memory_shape": 96, "memory_batch": 2,
             "loader": ["--shape", "64", "--preset", "small", "--batch", "8", "--steps", "4"],
             "payback": ["--preset", "small", "--shape", "32", "--batch", "8", "--steps", "5", "--channels-last"],
             "explain": [32, 64], "preset_shapes": [32, 64], "preset_batch": 8},
    "quick": {"shape": 16, "batch": 2, "steps": 2, "compile": False, "memory_shape": 32, "memory_batch": 2,
              "loader": ["--shape", "24", "--preset", "tiny", "--batch", "4", "--steps", "3"], "payback": None,
              "explain": [16], "preset_shapes": [32], "preset_batch": 2},
}
# The presets whose cost `make bench` compares (the recipe against `small`, at 32^3 and 64^3).
SUITE_PRESETS = ("small", "small_recipe", "small_recipe_strided")
PATHS = {  # name -> (precision, channels_last, compile)
    "plain (fp32, NCDHW, eager)": ("fp32", False, False),
    "fast (bf16 autocast, channels_last_3d, eager)": ("bf16", True, False),
}
COMPILED = {"fast + torch.compile": ("bf16", True, True)}


def matmul_peak(dtype: torch.dtype, **growth) -> float:
    """Best FLOP/s of a torch.mm in `dtype` on this CPU (all threads), grown to a timeable size (`growth`:
    common.bench.peak.matmul_peak's repeats / enough_seconds)."""
    def multiply_for(n: int):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        return lambda: torch.mm(a, b)

    return grown_matmul_peak(multiply_for, **growth)[0]


def _setup(shape: int, batch: int, precision: str, channels_last: bool, compile_model: bool, *, checkpointing=False):
    config = preset("reference").with_data(input_shape=(shape,) * 3, num_classes=3)
    return config, synthetic_training_step(config, batch_size=batch, precision=precision, channels_last=channels_last,
                                           compile_model=compile_model, activation_checkpointing=checkpointing)


def throughput(shape: int, batch: int, steps: int, include_compile: bool) -> dict:
    paths = {**PATHS, **(COMPILED if include_compile else {})}
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    results = {}
    for name, (precision, channels_last, compile_model) in paths.items():
        config, step = _setup(shape, batch, precision, channels_last, compile_model)
        timing = time_steps(step, steps)  # the warm-up (and compilation) is not timed
        warmup_seconds, losses, seconds = timing.warmup_seconds, timing.outputs, timing.median
        train_flops = 3 * flops_per_sample(config) * batch  # forward + backward ~ 3x forward
        results[name] = {
            "samples_per_second": batch / seconds, "step_seconds": seconds, "warmup_seconds": warmup_seconds,
            "losses": losses, "achieved_flops": train_flops / seconds,
            "fraction_of_fp32_peak": train_flops / seconds / peaks["fp32"],
            "fraction_of_own_peak": train_flops / seconds / peaks[precision], "precision": precision,
        }
    return {"shape": shape, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
            "matmul_peak_flops": peaks, "torch": torch.__version__, "paths": results}


def preset_throughput(preset_name: str, shape: int, batch: int, steps: int) -> dict:
    """fp32 training samples/s of one preset at shape^3 (plain path: NCDHW, eager), and its forward FLOPs."""
    config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=3)
    step = synthetic_training_step(config, batch_size=batch, precision="fp32", channels_last=False,
                                   compile_model=False)
    timing = time_steps(step, steps)
    return {"model": "torch_resnet", "preset": preset_name, "shape": shape, "batch": batch, "steps": steps,
            "samples_per_second": batch / timing.median, "step_seconds": timing.median,
            "forward_flops": flops_per_sample(config), "threads": torch.get_num_threads()}


DEFAULT_BATCH = 4  # every command but `capacity`, which searches for its batch unless --batch is given
CAPACITY_PATHS = {  # --path -> (precision, channels_last, compile)
    "plain": ("fp32", False, False), "fast": ("bf16", True, False), "compiled": ("bf16", True, True)}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def capacity(*, device: str, shape: int, path: str, max_batch: int, steps: int, batch: int | None = None,
             preset_name: str = "reference") -> dict:
    """The largest batch of the ResNet `preset_name` that trains at `shape`^3 on `device` (bounded search, an
    out-of-memory error is a "does not fit", not a crash), then its samples/s, peak memory and model
    FLOP utilisation. `batch` skips the search (e.g. the compiled path reuses the eager path's batch:
    compiling once per trial would cost minutes)."""
    import gc

    from common.bench.capacity import bf16_dense_peak, largest_batch, runs_in_memory

    torch_device = torch.device(device)
    precision, channels_last, compile_model = CAPACITY_PATHS[path]
    config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=3)

    def make_step(batch_size: int):
        return synthetic_training_step(config, batch_size=batch_size, precision=precision,
                                       channels_last=channels_last, device=torch_device, compile_model=compile_model)

    def free() -> None:
        gc.collect()
        if torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def fits(batch_size: int) -> bool:
        return runs_in_memory(lambda: make_step(batch_size)(), free)

    search = None
    if batch is None:
        search = largest_batch(fits, max_batch)
        batch = search.largest
    result = {"model": "torch_resnet", "preset": preset_name, "shape": shape, "path": path, "precision": precision,
              "channels_last": channels_last, "compile": compile_model, "device": device,
              "device_name": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "CPU",
              "search": search.to_dict() if search else None, "batch": batch, "torch": torch.__version__}
    if batch < 1:
        return {**result, "error": "batch 1 does not fit"}
    _reset_peak(torch_device)
    timing = time_steps(make_step(batch), steps)
    seconds = timing.median
    train_flops = 3 * flops_per_sample(config) * batch  # forward + backward ~ 3x forward
    peak = bf16_dense_peak(result["device_name"]) if torch_device.type == "cuda" else None
    return {**result, "samples_per_second": batch / seconds, "step_seconds": seconds,
            "warmup_seconds": timing.warmup_seconds, "peak_memory_bytes": peak_memory_bytes(torch_device),
            "achieved_flops": train_flops / seconds, "bf16_dense_peak": peak,
            "model_flops_utilisation": train_flops / seconds / peak if peak else None}


def compile_payback(*, preset_name: str, shape: int, batch: int, precision: str, channels_last: bool,
                    steps: int) -> dict:
    """Eager against torch.compile for one training configuration: the extra warm-up compilation costs
    and the steps after which the faster compiled steps have paid it back (None: they never do).
    Compiled twice: first into an empty Inductor cache (a machine's first run: what the probe pays),
    then again from the cache it filled (every later run of the same model and shapes)."""
    import tempfile

    config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=3)
    timings = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read when Inductor first needs it: a cold start
        for name, compile_model in (("eager", False), ("compiled_cold", True), ("compiled_warm", True)):
            if name == "compiled_warm":
                torch._dynamo.reset()  # forget the traced graphs; Inductor's on-disk cache stays
            step = synthetic_training_step(config, batch_size=batch, precision=precision,
                                           channels_last=channels_last, compile_model=compile_model)
            timing = time_steps(step, steps)
            timings[name] = {"warmup_seconds": timing.warmup_seconds, "step_seconds": timing.median}
    eager = timings["eager"]
    compiled_step = min(timings["compiled_cold"]["step_seconds"], timings["compiled_warm"]["step_seconds"])
    saving = eager["step_seconds"] - compiled_step
    paybacks = {}
    for name in ("compiled_cold", "compiled_warm"):
        extra = timings[name]["warmup_seconds"] - eager["warmup_seconds"]
        paybacks[name] = max(extra, 0.0) / saving if saving > 0 else None
    return {"preset": preset_name, "shape": shape, "batch": batch, "precision": precision,
            "channels_last": channels_last, "steps": steps, "threads": torch.get_num_threads(), **timings,
            "compiled_speedup": eager["step_seconds"] / compiled_step,
            "payback_steps": paybacks["compiled_cold"], "payback_steps_warm": paybacks["compiled_warm"]}


def plan(shape: int) -> dict:
    """The seed ResNet's training memory at `shape`^3 on paper and the batch per GPU size."""
    from torch_resnet.memory import memory_plan

    return memory_plan(preset("reference").with_data(input_shape=(shape,) * 3, num_classes=3)).to_dict()


class _InMemory:
    """The batches of an epoch, materialised before it starts: an epoch with no loading at all."""

    def __init__(self, batches):
        self.batches = [batches[step] for step in range(len(batches))]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int):
        return self.batches[step]


class _FirstSteps:
    """The first `steps` batches of an epoch (bounds the benchmark's time, not what a batch holds)."""

    def __init__(self, batches, steps: int):
        self.batches, self.steps = batches, min(steps, len(batches))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        return self.batches[step]


def loader(*, shape: int, batch: int, steps: int, device: str, preset_name: str, cache_dir: Path | None,
           repeats: int = 2) -> dict:
    """One training epoch (its first `steps` steps) of the real loader — cached IXI volumes read from the
    memory-mapped cache and augmented by the trainer's prefetch thread — against the same batches already
    in memory, through TorchAdapter.fit_epoch, the code a training run uses. Also the fraction of the
    epoch the step loop spent waiting for data. IXI from ../shared/data, else the synthetic demo."""
    import tempfile

    from common.bench.suite import data_source
    from common.data.augment import AugmentConfig
    from common.data.batches import EpochBatches
    from common.data.dataset import prepare_dataset
    from common.data.preprocess import PreprocessConfig
    from common.runs.config import TrainConfig
    from common.runs.record import PrecisionDecision
    from torch_resnet.distributed import DistContext
    from torch_resnet.options import TorchOptions
    from torch_resnet.train import TorchAdapter

    torch_device = torch.device(device)
    precision = "bf16" if torch_device.type == "cuda" else "fp32"
    source, name = data_source(quick=False)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare_dataset(source=source, preprocess=PreprocessConfig(shape=(shape,) * 3),
                                  cache_root=cache_dir or Path(tmp), workers=min(4, os.cpu_count() or 1), progress=False)
        train_split = dataset.split("train")
        config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=len(dataset.classes))
        training = TrainConfig(batch_size=batch, epochs=1)
        adapter = TorchAdapter(config, training, TorchOptions(channels_last=torch_device.type == "cuda"),
                               PrecisionDecision(precision, precision, "benchmark"), DistContext(device=torch_device),
                               dataset.classes, dataset)

        def real(epoch: int):
            return _FirstSteps(EpochBatches(train_split, batch_size=batch, seed=0, epoch=epoch,
                                            augment=AugmentConfig()), steps)

        def timed(batches) -> tuple[float, float]:
            started = time.perf_counter()
            stats = adapter.fit_epoch(batches, learning_rate=1e-4, on_step=lambda loss: None)
            return time.perf_counter() - started, stats.data_wait_seconds

        timed(_InMemory(real(0)))  # warm-up: allocation, kernel selection
        memory_runs, loader_runs = [], []
        for _ in range(repeats):  # alternated, so a slow spell of the machine hits both sides
            memory_runs.append(timed(_InMemory(real(1)))[0])
            loader_runs.append(timed(real(1)))
        memory_seconds = min(memory_runs)
        loader_seconds, wait_seconds = min(loader_runs)
    return {"dataset": name, "shape": shape, "batch": batch, "steps": len(real(1)), "device": device,
            "preset": preset_name, "precision": precision, "in_memory_seconds": memory_seconds,
            "loader_seconds": loader_seconds, "repeats": repeats, "in_memory_runs": memory_runs,
            "loader_runs": [seconds for seconds, _ in loader_runs], "loader_vs_memory": loader_seconds / memory_seconds,
            "data_wait_seconds": wait_seconds, "data_wait_fraction": wait_seconds / loader_seconds,
            "threads": torch.get_num_threads()}


def _current_rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def memory(shape: int, batch: int, checkpointing: bool) -> dict:
    """Peak resident memory added by one training step (fp32, NCDHW): activations + gradients + optimizer state."""
    _, step = _setup(shape, batch, "fp32", False, False, checkpointing=checkpointing)
    before = _current_rss()
    step()
    peak = peak_rss_bytes()
    if torch.cuda.is_available():  # not used on CPU; kept for a GPU run of the same script
        peak = max(peak, torch.cuda.max_memory_allocated())
    return {"shape": shape, "batch": batch, "checkpointing": checkpointing, "step_peak_bytes": peak - before}


def explain_speed(shape: int, preset_name: str) -> dict:
    """Seconds per volume of Grad-CAM and occlusion for the preset at shape^3 (weights do not change the cost)."""
    from common.explain.bench import time_methods
    from torch_resnet.explain import hooks_for
    from torch_resnet.model import build_resnet

    torch.manual_seed(0)
    net = build_resnet(preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=2))
    return {**time_methods(hooks_for(net, ["a", "b"], torch.device("cpu")), shape), "preset": preset_name,
            "threads": torch.get_num_threads()}


def suite(quick: bool, json_dir: Path) -> None:
    """Throughput, then memory with and without checkpointing, each in a fresh process."""
    from common.bench.io import run_json, save_json

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
    print("benchmark: ResNet memory plan at 192^3, data wait of a training epoch", flush=True)
    save_json(json_dir / "plan-resnet.json", run_json("torch_resnet.bench", ["plan", "--shape", "192"]))
    save_json(json_dir / "resnet-loader.json", run_json("torch_resnet.bench", ["loader", *sizes["loader"]]))
    print("benchmark: ResNet saliency maps", flush=True)
    for shape in sizes["explain"]:
        save_json(json_dir / f"explain-resnet-{shape}.json",
                  run_json("torch_resnet.bench", ["explain", "--shape", str(shape), "--preset", "small"]))
    print("benchmark: ResNet presets, the recipe against small", flush=True)
    for shape in sizes["preset_shapes"]:
        for name in SUITE_PRESETS:
            result = run_json("torch_resnet.bench", [
                "preset", "--preset", name, "--shape", str(shape), "--batch", str(sizes["preset_batch"]),
                "--steps", str(sizes["steps"])])
            save_json(json_dir / f"cost-resnet-{name}-{shape}.json",
                      {"model": "torch_resnet", "preset": name, "shape": shape, **result})
    if sizes["payback"]:
        print("benchmark: torch.compile payback", flush=True)
        save_json(json_dir / "resnet-compile.json", run_json("torch_resnet.bench", ["compile", *sizes["payback"]]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m torch_resnet.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("throughput", "memory", "suite", "capacity", "plan", "loader", "compile",
                                             "explain", "preset"))
    parser.add_argument("--quick", action="store_true", help="suite: reduced sizes (CI)")
    parser.add_argument("--json-dir", type=Path, help="suite: where the JSON results go")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--batch", type=int, help=f"batch size (default {DEFAULT_BATCH}; capacity: skip the search)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--device", default="cpu", help="capacity, loader: cpu or cuda")
    parser.add_argument("--path", choices=tuple(CAPACITY_PATHS), default="fast", help="capacity: the training path")
    parser.add_argument("--max-batch", type=int, default=64, help="capacity: upper bound of the batch search")
    parser.add_argument("--preset", default="reference", help="capacity, loader, compile, explain, preset: the ResNet preset")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="compile: autocast precision")
    parser.add_argument("--channels-last", action="store_true", help="compile: channels_last_3d layout")
    parser.add_argument("--cache-dir", type=Path, help="loader: a cache root to reuse (default: a temporary one)")
    args = parser.parse_args(argv)
    batch = args.batch if args.batch is not None else DEFAULT_BATCH
    if args.what == "suite":
        if args.json_dir is None:
            parser.error("suite needs --json-dir")
        suite(args.quick, args.json_dir)
        return
    if args.what == "capacity":
        result = capacity(device=args.device, shape=args.shape, path=args.path, max_batch=args.max_batch,
                          steps=args.steps, batch=args.batch, preset_name=args.preset)
    elif args.what == "compile":
        result = compile_payback(preset_name=args.preset, shape=args.shape, batch=batch, precision=args.precision,
                                 channels_last=args.channels_last, steps=args.steps)
    elif args.what == "plan":
        result = plan(args.shape)
    elif args.what == "explain":
        result = explain_speed(args.shape, args.preset)
    elif args.what == "preset":
        result = preset_throughput(args.preset, args.shape, batch, args.steps)
    elif args.what == "loader":
        result = loader(shape=args.shape, batch=batch, steps=args.steps, device=args.device,
                        preset_name=args.preset, cache_dir=args.cache_dir)
    elif args.what == "throughput":
        result = throughput(args.shape, batch, args.steps, args.compile)
    else:
        result = memory(args.shape, batch, args.checkpointing)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
