"""The prepared GPU benchmark: one script, run end to end in one call, that always finishes.

Every configuration runs in its own process with a time limit taken from one overall budget, so an
out-of-memory crash, a hang or a missing library costs that row, not the run; the JSON is rewritten after
every row, so whatever finished survives even a killed script. Runs on a CPU as a test:

    python -m common.bench.gpu --device cuda --json-dir .cache/bench-gpu --out BENCHMARKS-gpu.md
    python -m common.bench.gpu --device cpu --shape 32 --json-dir DIR --out DIR/BENCHMARKS-gpu.md

Rows: the seed ResNet (plain fp32, bf16 + channels_last, + torch.compile) and the seed transformer (with
and without flash attention) at 128^3 and 192^3 — largest batch by a bounded search, samples/s, peak
memory, model FLOP utilisation — then one real-data epoch through the trainer's loader against the same
batches in memory, and the memory plan on paper. Framework-free: the packages measure, this orchestrates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.atomic import atomic_write_text
from common.bench.io import run_json

DEFAULT_BUDGET_S = 420  # the whole script: 7 minutes, inside the 8 a GPU window allows with start-up
MAX_ROW_S = 150


@dataclass(frozen=True)
class Row:
    key: str
    module: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def keras_backend() -> str:
    """KERAS_BACKEND if set, else the first importable of torch, jax, tensorflow (a borrowed GPU
    machine may have torch and JAX but no TensorFlow)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    for name in ("torch", "jax", "tensorflow"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "tensorflow"


def plan_rows(device: str, shapes: tuple[int, ...], max_batch: int, steps: int, backend: str,
              compile_model: bool, loader_shape: int, loader_steps: int, preset: str = "reference") -> list[Row]:
    """The configurations, cheapest and most informative first (a budget cut drops the tail). `preset`: the
    network of the capacity rows of both models (the memory plan is always the reference network's)."""
    env = (("KERAS_BACKEND", backend),) + ((("CUDA_VISIBLE_DEVICES", ""),) if device == "cpu" else ())
    rows = [Row("plan-resnet", "torch_resnet.bench", ("plan", "--shape", "192")),
            Row("plan-vit", "tf_transformer.bench", ("--plan", "--shape", "192"), env)]
    common = ("--device", device, "--preset", preset, "--max-batch", str(max_batch), "--steps", str(steps))
    for shape in shapes:
        for path in ("plain", "fast") + (("compiled",) if compile_model else ()):
            rows.append(Row(f"resnet-{shape}-{path}", "torch_resnet.bench",
                            ("capacity", "--shape", str(shape), "--path", path, *common)))
        for flash in ("false", "true"):
            rows.append(Row(f"vit-{shape}-flash-{flash}", "tf_transformer.bench",
                            ("--capacity", "--preset", preset, "--shape", str(shape), "--flash", flash,
                             "--precision", "bf16" if device == "cuda" else "fp32", "--max-batch", str(max_batch),
                             "--steps", str(steps)), env))
    rows.append(Row(f"loader-{loader_shape}", "torch_resnet.bench",
                    ("loader", "--device", device, "--shape", str(loader_shape), "--preset",
                     "reference" if device == "cuda" else "tiny", "--batch", "2", "--steps", str(loader_steps))))
    return rows


def run(rows: list[Row], json_path: Path, budget_s: float, header: dict, row_limit_s: float = MAX_ROW_S) -> dict:
    result = {**header, "rows": {}}
    started = time.monotonic()
    for row in rows:
        left = budget_s - (time.monotonic() - started)
        if left < 10:
            result["rows"][row.key] = {"error": "skipped: the time budget is spent"}
        else:
            # The compiled path reuses the batch the eager bf16 path found: one compilation, not one per trial.
            args = list(row.args)
            fast = result["rows"].get(row.key.replace("-compiled", "-fast"), {})
            if row.key.endswith("-compiled") and fast.get("batch"):
                args += ["--batch", str(fast["batch"])]
            print(f"gpu benchmark: {row.key} ({left:.0f} s of budget left)", flush=True)
            result["rows"][row.key] = run_json(row.module, args, dict(row.env), timeout=min(left, row_limit_s))
        atomic_write_text(json_path, json.dumps(result, indent=1, default=str))
    result["seconds"] = time.monotonic() - started
    atomic_write_text(json_path, json.dumps(result, indent=1, default=str))
    return result


def _gib(value) -> str:
    return f"{value / 2**30:.2f} GiB" if isinstance(value, (int, float)) else "-"


def render_plan(resnet: dict, vit: dict) -> list[str]:
    """The memory table: activation bytes per sample at 192^3 and the batch per GPU size."""
    lines = ["## Training memory of the reference presets at 192^3, on paper", ""]
    rows = [("ResNet, checkpointing off", resnet, "activation_bytes", "off"),
            ("ResNet, checkpointing on", resnet, "checkpointed_bytes", "on"),
            ("transformer, standard attention", vit, "activation_bytes", "off"),
            ("transformer, flash attention", vit, "checkpointed_bytes", "on")]
    rows = [r for r in rows if "batches" in r[1]]
    if not rows:
        return lines + ["failed: " + "; ".join(str(r.get("error")) for r in (resnet, vit)), ""]
    sizes = list(rows[0][1]["batches"])
    lines += ["fp32 activations saved for backward per sample, plus fixed memory (weights, gradients, AdamW moments: "
              "16 bytes per parameter); batch = the largest that fits in 90 % of the GPU's memory.", "",
              "| model | per sample | fixed | " + " | ".join(f"batch on {gb} GB" for gb in sizes) + " |",
              "|---|---|---|" + "---|" * len(sizes)]
    for label, plan, key, column in rows:
        lines.append(f"| {label} | {_gib(plan[key])} | {_gib(plan['fixed_bytes'])} | "
                     + " | ".join(str(plan["batches"][gb].get(column, "-")) for gb in sizes) + " |")
    lines += ["", f"ResNet: {resnet.get('method')}; transformer: {vit.get('method')}. bf16 autocast stores most "
              "activations in half the bytes, so these are upper bounds for the bf16 paths.", "",
              f"Commands: `{resnet.get('command')}`, `{vit.get('command')}`", ""]
    return lines


def render(result: dict, command: str) -> str:
    rows = result["rows"]
    lines = ["# GPU benchmark", "", f"Written by `{command}` on {result['date']}, in {result.get('seconds', 0):.0f} s.",
             "Do not edit by hand: rerun the command.", "", f"Device: {result['device_description']}. "
             f"Keras backend: {result['keras_backend']}. Machine: {result['machine']}.", ""]
    preset = result.get("preset", "reference")
    lines += [f"## ResNet `{preset}`: largest batch, speed, memory", "",
              "| input | path | largest batch | samples/s | step s | warm-up s | peak memory | MFU (bf16 dense peak) |",
              "|---|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        if key.startswith("resnet-"):
            _, shape, path = key.split("-", 2)
            if "samples_per_second" not in r:
                lines.append(f"| {shape}^3 | {path} | failed: {r.get('error')} | | | | | |")
                continue
            mfu = r.get("model_flops_utilisation")
            lines.append(f"| {shape}^3 | {path} | {r['batch']}{' (cap)' if (r.get('search') or {}).get('capped') else ''} | "
                         f"{r['samples_per_second']:.2f} | {r['step_seconds']:.3f} | {r['warmup_seconds']:.1f} | "
                         f"{_gib(r['peak_memory_bytes'])} | {f'{mfu:.0%}' if mfu else '-'} |")
    lines += ["", f"## Transformer `{preset}`: largest batch, speed, memory", "",
              "| input | tokens | attention | largest batch | samples/s | step s | peak memory |", "|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        if key.startswith("vit-"):
            shape, flash = key.split("-")[1], key.endswith("true")
            attention = "flash (dropout 0)" if flash else "standard"
            if "samples_per_second" not in r:
                lines.append(f"| {shape}^3 | | {attention} | failed: {r.get('error')} | | | |")
                continue
            lines.append(f"| {shape}^3 | {r['tokens']} | {attention} | {r['batch']}"
                         f"{' (cap)' if (r.get('search') or {}).get('capped') else ''} | {r['samples_per_second']:.2f} | "
                         f"{r['step_seconds']:.3f} | {_gib(r['peak_memory_bytes'])} ({r['peak_memory_measured_as']}) |")
    loader = next((r for k, r in rows.items() if k.startswith("loader-")), None)
    if loader is not None:
        lines += ["", "## Data loading against data in memory", ""]
        if "loader_vs_memory" in loader:
            lines += [f"{loader['dataset']} at {loader['shape']}^3, preset `{loader['preset']}`, batch {loader['batch']}, "
                      f"{loader['steps']} steps of `TorchAdapter.fit_epoch` with augmentation: real loader "
                      f"{loader['loader_seconds']:.2f} s, the same batches in memory {loader['in_memory_seconds']:.2f} s: "
                      f"**{loader['loader_vs_memory']:.2f}x** (goal: at most 1.10x); the step loop waited for data "
                      f"{loader['data_wait_fraction']:.1%} of the epoch."]
        else:
            lines.append(f"failed: {loader.get('error')}")
    lines += [""] + render_plan(rows.get("plan-resnet", {}), rows.get("plan-vit", {}))
    lines += ["Commands, one process each: " + "; ".join(f"`{r['command']}`" for r in rows.values() if "command" in r), ""]
    return "\n".join(lines)


def device_description(device: str) -> str:
    if device == "cpu":
        from common.runs.hardware import cpu_description

        return f"CPU {cpu_description()}"
    try:  # in a child process: this one never imports a framework
        done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0))"],
                              capture_output=True, text=True, timeout=120)
        return done.stdout.strip() or f"cuda (torch says: {done.stderr.strip().splitlines()[-1:]})"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cuda ({error})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--shape", type=int, nargs="+", help="input sizes (default: 128 192 on cuda, 32 on cpu)")
    parser.add_argument("--max-batch", type=int, help="upper bound of each batch search (default: 64 cuda, 2 cpu)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--loader-shape", type=int, help="input size of the loader epoch (default: 128 cuda, 32 cpu)")
    parser.add_argument("--loader-steps", type=int, default=10)
    parser.add_argument("--preset", default="reference",
                        help="the network of the capacity rows, both models (default: reference, the lab's network; "
                             "the CPU check of the script in the tests passes tiny)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (default on cpu)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="time for all rows together")
    parser.add_argument("--row-limit-s", type=float, default=MAX_ROW_S,
                        help=f"time limit of one row (default: {MAX_ROW_S}; raise it for a CPU check on a busy machine)")
    parser.add_argument("--json-dir", type=Path, default=Path(".cache/bench-gpu"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS-gpu.md"))
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    shapes = tuple(args.shape or ((128, 192) if cuda else (32,)))
    backend = keras_backend()
    header = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": args.device,
              "device_description": device_description(args.device), "keras_backend": backend, "preset": args.preset,
              "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    rows = plan_rows(args.device, shapes, args.max_batch or (64 if cuda else 2), args.steps, backend,
                     cuda and not args.no_compile, args.loader_shape or (128 if cuda else 32), args.loader_steps,
                     args.preset)
    args.json_dir.mkdir(parents=True, exist_ok=True)
    result = run(rows, args.json_dir / "gpu.json", args.budget_s, header, args.row_limit_s)
    command = "python -m common.bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(args.out, render(result, command.strip()))
    print(f"wrote {args.out} and {args.json_dir / 'gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
