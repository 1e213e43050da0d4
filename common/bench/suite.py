"""Benchmarks: the data pipeline (framework-free) and the renderer of BENCHMARKS.md.

Each package owns its benchmark (`python -m torch_resnet.bench suite`, `python -m tf_transformer.bench
suite`); the Makefile's `bench` target orchestrates: every part writes JSON into one folder, then
`python -m common.bench.suite render` turns that folder into BENCHMARKS.md. Every ratio compares
numbers measured in the same run. `--quick` shrinks every size so CI can afford it.

    python -m common.bench.suite data [--quick] --json-dir DIR
    python -m common.bench.suite render DIR --out BENCHMARKS.md --command "make bench"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.bench.io import save_json
from common.bench.peak import ENOUGH_SECONDS, LARGEST_N, matmul_peak
from common.bench.preset_cost import machine_fp32_peak, render_preset_cost
from common.errors import ConfigError
from common.runs.hardware import cpu_description

# The real T1 MRI the data, loader and t1-linear benchmarks read: a manifest CSV, optionally ":<label column>"
# (default "label"), e.g. VOLCLS_BENCH_DATA=../shared/data/ixi_t1_hh/labels.csv:age_group (`make bench
# BENCH_DATA=...` sets it). Unset: the synthetic demo, and the t1-linear section says it was skipped.
BENCH_DATA_ENV = "VOLCLS_BENCH_DATA"

DATA_SIZES = {"full": {"data_shape": 64, "matmul_n": 4096, "t1_linear_volumes": 8},
              "quick": {"data_shape": 32, "matmul_n": 1024, "t1_linear_volumes": 2}}


def numpy_matmul_peak(largest_n: int) -> float:
    def multiply_for(n: int):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        return lambda: a @ a

    return matmul_peak(multiply_for, largest_n=largest_n)[0]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_manifest() -> tuple[Path, str] | None:
    """($VOLCLS_BENCH_DATA's manifest, its label column), or None when the variable is unset."""
    value = os.environ.get(BENCH_DATA_ENV, "").strip()
    if not value:
        return None
    path, _, column = value.rpartition(":") if not Path(value).is_file() and ":" in value else (value, "", "")
    if not Path(path).is_file():
        raise ConfigError(f"{BENCH_DATA_ENV}={value}: {path} is not a file (a manifest CSV[:label column])")
    return Path(path), column or "label"


def data_source(quick: bool):
    """(source, description): the manifest of $VOLCLS_BENCH_DATA (real T1 MRI), else the synthetic demo."""
    from common.data.dataset import open_source
    from common.data.sources import read_manifest

    manifest = bench_manifest()
    if manifest:
        source = read_manifest(manifest[0], label_column=manifest[1])
        if quick:
            source.samples = source.samples[::6]  # every 6th: keeps every class of a sorted manifest
        return source, f"{manifest[0].parent.name} ({len(source.samples)} volumes of {manifest[0].name})"
    source = open_source("demo")
    return source, f"synthetic demo ({len(source.samples)} volumes; {BENCH_DATA_ENV} not set)"


def data_pipeline(sizes: dict, quick: bool) -> dict:
    from common.data.augment import AugmentConfig
    from common.data.batches import EpochBatches
    from common.data.dataset import prepare_dataset
    from common.data.preprocess import PreprocessConfig

    source, name = data_source(quick)
    shape = (sizes["data_shape"],) * 3
    result = {"dataset": name, "shape": shape, "volumes": len(source.samples), "preprocess": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            start = time.perf_counter()
            dataset = prepare_dataset(source=source, preprocess=PreprocessConfig(shape=shape), cache_root=Path(tmp) / str(workers),
                                      workers=workers, progress=False)
            seconds = time.perf_counter() - start
            result["preprocess"][str(workers)] = {"seconds": seconds, "volumes_per_second": len(source.samples) / seconds}
        train = dataset.split("train")
        for label, augment in (("read", None), ("read + augment", AugmentConfig())):
            batches = EpochBatches(train, batch_size=4, seed=0, epoch=0, augment=augment)
            start = time.perf_counter()
            for _batch in batches:  # what either trainer's loader does for one epoch
                pass
            seconds = time.perf_counter() - start
            result[f"epoch_{label}"] = {"seconds": seconds, "samples": len(train), "samples_per_second": len(train) / seconds}
    return result


def t1_linear_pipeline(sizes: dict, quick: bool) -> dict:
    """Seconds per volume of --preprocess t1-linear (N4 + affine registration + conform) with 1 and 2
    processes, through the cache builder, and the registration scores it recorded."""
    import csv
    from dataclasses import replace

    from common.data.cache import build_or_load_cache
    from common.data.preprocess import PreprocessConfig

    source, name = data_source(quick)
    if source.kind == "demo":  # synthetic cubes: there is no brain to register to MNI152
        return {"skipped": f"needs T1 brain MRI; {name}"}
    source = replace(source, samples=source.samples[:sizes["t1_linear_volumes"]])
    config = PreprocessConfig(shape=(sizes["data_shape"],) * 3, pipeline="t1-linear").resolved_for(source.kind)
    result = {"dataset": name, "volumes": len(source.samples), "shape": config.shape, "processes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            start = time.perf_counter()
            folder = build_or_load_cache(source, config, Path(tmp) / str(workers), workers=workers, progress=False)
            seconds = time.perf_counter() - start
            result["processes"][str(workers)] = {"seconds": seconds, "seconds_per_volume": seconds / len(source.samples)}
        scores = [float(r["nmi"]) for r in csv.DictReader((folder / "qc" / "scores.csv").open())]
    result["nmi_min"], result["nmi_max"] = min(scores), max(scores)
    return result


def data_benchmark(quick: bool) -> dict:
    sizes = DATA_SIZES["quick" if quick else "full"]
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": quick,
            "machine": f"{cpu_description()}; {platform.system()} {platform.release()}; Python {platform.python_version()}",
            "matmul_n": sizes["matmul_n"], "numpy_matmul_peak_fp32": numpy_matmul_peak(sizes["matmul_n"]),
            "data": data_pipeline(sizes, quick), "t1_linear": t1_linear_pipeline(sizes, quick)}


def load_results(folder: Path) -> dict:
    """The JSON parts of one benchmark run, as `render` reads them."""
    folder = Path(folder)
    result = json.loads((folder / "data.json").read_text())
    for name, key in (("resnet.json", "resnet"), ("plan-resnet.json", "plan_resnet"), ("plan-vit.json", "plan_vit"),
                      ("resnet-loader.json", "resnet_loader"), ("resnet-compile.json", "resnet_compile")):
        if (folder / name).is_file():
            result[key] = json.loads((folder / name).read_text())
    memory = {kind: json.loads((folder / f"resnet-memory-{kind}.json").read_text())
              for kind in ("plain", "checkpointing") if (folder / f"resnet-memory-{kind}.json").is_file()}
    if memory:
        result["resnet_memory"] = memory
    # cost-<model>-<preset>-<shape>.json: by model, then input size, then preset as the suites list them
    cost = [json.loads(p.read_text()) for p in folder.glob("cost-*.json")]
    if cost:
        result["preset_cost"] = sorted(cost, key=_cost_order)
    explain = [json.loads(p.read_text()) for p in sorted(folder.glob("explain-*.json"))]
    if explain:
        result["explain"] = explain
    vit = [json.loads(p.read_text()) for p in sorted(folder.glob("vit-*.json"))]
    if vit:
        result["vit"] = {r["label"]: r for r in vit}
    return result


def _cost_order(row: dict) -> tuple:
    presets = ("small", "small_recipe", "small_recipe_strided")
    preset = row.get("preset", "")
    return (row.get("model", ""), row.get("shape", 0), presets.index(preset) if preset in presets else 9, preset)


def _g(value: float, unit: str = "") -> str:
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def _render_cpu_checks(result: dict) -> list[str]:
    """Data wait of a training epoch, torch.compile's payback, and the 192^3 memory plan."""
    from common.bench.gpu import render_plan

    lines = []
    loader = result.get("resnet_loader")
    if loader:
        lines += ["## Does the loader keep up?", ""]
        if "data_wait_fraction" in loader:
            lines += [f"{loader['dataset']} at {loader['shape']}^3, ResNet preset `{loader['preset']}`, batch "
                      f"{loader['batch']}, {loader['steps']} steps of the trainer's own epoch loop (`TorchAdapter.fit_epoch`, "
                      "cached volumes read and augmented by its prefetch thread):", "",
                      "| epoch | seconds |", "|---|---|",
                      f"| batches already in memory | {loader['in_memory_seconds']:.2f} |",
                      f"| real loader (cache + augmentation) | {loader['loader_seconds']:.2f} |", "",
                      f"Real loader vs in memory: **{loader['loader_vs_memory']:.2f}x**; the step loop waited for data "
                      f"**{loader['data_wait_fraction']:.2%}** of the epoch (goal: < 5 %). Every training run logs its own "
                      "data wait per epoch.", "", f"Command: `{loader['command']}`", ""]
        else:
            lines += [f"failed: {loader.get('error')}", ""]
    payback = result.get("resnet_compile")
    if payback:
        lines += ["## Does torch.compile pay back its compilation?", ""]
        if "payback_steps" in payback:
            eager, cold, warm = payback["eager"], payback["compiled_cold"], payback["compiled_warm"]

            def steps(value) -> str:
                return f"**{value:.0f} steps**" if value is not None else "never (compiled steps are not faster)"

            lines += [f"ResNet preset `{payback['preset']}` at {payback['shape']}^3, batch {payback['batch']}, "
                      f"{payback['precision']}, {'channels_last_3d' if payback['channels_last'] else 'NCDHW'}:", "",
                      "| mode | warm-up s | step s |", "|---|---|---|",
                      f"| eager | {eager['warmup_seconds']:.1f} | {eager['step_seconds']:.3f} |",
                      f"| torch.compile, empty Inductor cache (a machine's first run) | {cold['warmup_seconds']:.1f} | "
                      f"{cold['step_seconds']:.3f} |",
                      f"| torch.compile, from the cache it filled (later runs) | {warm['warmup_seconds']:.1f} | "
                      f"{warm['step_seconds']:.3f} |", "",
                      f"Compiled steps are **{payback['compiled_speedup']:.2f}x** faster; the compilation is paid back "
                      f"after {steps(payback['payback_steps'])} the first time and after "
                      f"{steps(payback['payback_steps_warm'])} from a warm cache. The training default follows from "
                      "the same measurement on each machine (README, Precision and memory layout).", "",
                      f"Command: `{payback['command']}`", ""]
        else:
            lines += [f"failed: {payback.get('error')}", ""]
    if result.get("plan_resnet") or result.get("plan_vit"):
        lines += render_plan(result.get("plan_resnet", {}), result.get("plan_vit", {}))
    return lines


def render(result: dict, command: str) -> str:
    lines = ["# Benchmarks", "",
             f"Written by `{command}` on {result['date']}{' (quick mode: reduced sizes)' if result['quick'] else ''}.",
             "Do not edit by hand: rerun the command. Ratios compare numbers measured in this same run.", "",
             f"Machine: {result['machine']}.", ""]
    peak, peaks = machine_fp32_peak(result)
    lines += [f"fp32 matrix-multiply peak of this machine: **{_g(peak, 'FLOP/s')}**, the best of "
              + ", ".join(f"{name} {_g(value, 'FLOP/s')}" for name, value in peaks.items())
              + f" (products of up to {result['matmul_n']}^2 in numpy and {LARGEST_N}^2 in the frameworks, each grown "
              f"until one takes {ENOUGH_SECONDS} s). Every \"of fp32 peak\" below divides by this one "
              "number.", ""]
    data = result.get("data")
    if data:
        p1, p2 = data["preprocess"]["1"], data["preprocess"]["2"]
        lines += ["## Data pipeline", "", f"{data['dataset']}, conformed to {tuple(data['shape'])}, z-score, float16 cache.", "",
                  "| step | seconds | volumes/s |", "|---|---|---|",
                  f"| preprocess + cache, 1 process | {p1['seconds']:.2f} | {p1['volumes_per_second']:.1f} |",
                  f"| preprocess + cache, 2 processes | {p2['seconds']:.2f} | {p2['volumes_per_second']:.1f} |",
                  f"| read one cached training epoch ({data['epoch_read']['samples']} volumes) | "
                  f"{data['epoch_read']['seconds']:.3f} | {data['epoch_read']['samples_per_second']:.0f} |",
                  f"| read + augment one epoch | {data['epoch_read + augment']['seconds']:.3f} | "
                  f"{data['epoch_read + augment']['samples_per_second']:.0f} |", "",
                  f"2 processes vs 1: **{p1['seconds'] / p2['seconds']:.2f}x**.", ""]
    lines += _render_t1_linear(result.get("t1_linear"))
    resnet = result.get("resnet")
    if resnet and "paths" in resnet:
        peaks = resnet["matmul_peak_flops"]  # torch.mm's own, per precision
        lines += ["## ResNet (reference architecture) training throughput", "",
                  f"Input {resnet['shape']}^3, batch {resnet['batch']}, median of {resnet['steps']} steps after one "
                  f"warm-up step, {resnet['threads']} threads, torch {resnet['torch']}. Training FLOPs = 3 x forward. "
                  f"The last fraction is of torch.mm at the row's precision (fp32 {_g(peaks['fp32'], 'FLOP/s')}, "
                  f"bf16 {_g(peaks['bf16'], 'FLOP/s')}).", "",
                  "| path | samples/s | step s | warm-up s | achieved FLOP/s | of fp32 peak | of torch.mm at its precision "
                  "| speed-up |",
                  "|---|---|---|---|---|---|---|---|"]
        plain = next(iter(resnet["paths"].values()))
        for name, r in resnet["paths"].items():
            lines.append(f"| {name} | {r['samples_per_second']:.3f} | {r['step_seconds']:.2f} | {r['warmup_seconds']:.1f} | "
                         f"{_g(r['achieved_flops'], 'FLOP/s')} | {r['achieved_flops'] / peak:.0%} | "
                         f"{r['fraction_of_own_peak']:.0%} | {r['samples_per_second'] / plain['samples_per_second']:.2f}x |")
        lines += ["", "Loss per step on the same batch from the same initial weights (agreement of the paths):", ""]
        for name, r in resnet["paths"].items():
            lines.append(f"- {name}: " + ", ".join(f"{v:.4f}" for v in r["losses"]))
        lines += ["", f"Command: `{resnet['command']}`", ""]
    elif resnet:
        lines += ["## ResNet training throughput", "", f"failed: {resnet.get('error')}", ""]
    memory = result.get("resnet_memory")
    if memory and "step_peak_bytes" in memory.get("plain", {}) and "step_peak_bytes" in memory.get("checkpointing", {}):
        plain, ckpt = memory["plain"], memory["checkpointing"]
        lines += ["## ResNet memory of one training step", "",
                  f"Reference architecture, fp32, input {plain['shape']}^3, batch {plain['batch']}: resident memory added by "
                  "one forward + backward + optimizer step (peak RSS minus RSS before it; each in a fresh process).", "",
                  "| activation checkpointing | peak step memory |", "|---|---|",
                  f"| off | {plain['step_peak_bytes'] / 2**30:.2f} GiB |",
                  f"| on (per stage, then per block) | {ckpt['step_peak_bytes'] / 2**30:.2f} GiB |", "",
                  f"Checkpointing needs **{ckpt['step_peak_bytes'] / plain['step_peak_bytes']:.0%}** of the memory.", "",
                  f"Commands: `{plain['command']}`, `{ckpt['command']}`", ""]
    lines += _render_cpu_checks(result)
    lines += render_preset_cost(result.get("preset_cost") or [], _g)
    vit = result.get("vit")
    if vit:
        ok = {k: v for k, v in vit.items() if "samples_per_second" in v}
        first = next(iter(ok.values()), None)
        if first:
            lines += ["## Transformer training throughput by backend", "",
                      f"Preset `{first['preset']}` at {first['shape']}^3 ({first['tokens']} tokens), batch {first['batch']}, "
                      f"median of {first['steps']} steps after a warm-up step.", "",
                      "| configuration | samples/s | step s | warm-up s | achieved FLOP/s | of fp32 peak | vs first row |",
                      "|---|---|---|---|---|---|---|"]
        for label, r in vit.items():
            if "samples_per_second" not in r:
                lines.append(f"| {label} | failed: {r.get('error')} | | | | | |")
                continue
            lines.append(f"| {label} | {r['samples_per_second']:.3f} | {r['step_seconds']:.3f} | {r['warmup_seconds']:.1f} | "
                         f"{_g(r['achieved_flops'], 'FLOP/s')} | {r['achieved_flops'] / peak:.0%} | "
                         f"{r['samples_per_second'] / first['samples_per_second']:.2f}x |")
        if ok:
            lines += ["", "Loss per step on the same batch (agreement):", ""]
            lines += [f"- {label}: " + ", ".join(f"{v:.4f}" for v in r["losses"]) for label, r in ok.items()]
            lines += ["", "Commands (KERAS_BACKEND set per row): " + "; ".join(f"`{r['command']}`" for r in ok.values()), ""]
    lines += _render_explain(result.get("explain") or [])
    return "\n".join(lines)


def _render_t1_linear(r: dict | None) -> list[str]:
    if not r:
        return []
    if "skipped" in r:
        return ["## t1-linear preprocessing (N4 + affine registration to MNI152)", "", f"Skipped: {r['skipped']}.", ""]
    one, two = r["processes"]["1"], r["processes"]["2"]
    return ["## t1-linear preprocessing (N4 + affine registration to MNI152)", "",
            f"{r['dataset']}: the first {r['volumes']} volumes through the cache builder with `--preprocess t1-linear`, "
            f"conformed to {tuple(r['shape'])} from the template's 2 mm grid; registration scores (NMI) "
            f"{r['nmi_min']:.3f}-{r['nmi_max']:.3f}.", "",
            "| processes | seconds | seconds per volume |", "|---|---|---|",
            f"| 1 | {one['seconds']:.1f} | {one['seconds_per_volume']:.1f} |",
            f"| 2 | {two['seconds']:.1f} | {two['seconds_per_volume']:.1f} |", "",
            f"2 processes vs 1: **{one['seconds'] / two['seconds']:.2f}x**.", ""]


def _render_explain(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Saliency maps: seconds per volume", "",
             "Preset `small` of each model, one volume at a time on the CPU (fp32). Gradient method: one forward + "
             "backward (ResNet: Grad-CAM on its default stage; transformer: gradient x activation on the token grid), "
             "after a warm-up call. Occlusion: cube 1/4 of the axis, step 1/8, batches of 16 occluded copies.", "",
             "| model | input | gradient method s | occlusion s | occlusion forward passes | occlusion / gradient |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "gradcam_seconds_per_volume" not in r:
            lines.append(f"| {r.get('model', '?')} | failed: {r.get('error')} | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['shape']}^3 | {r['gradcam_seconds_per_volume']:.3f} | "
                     f"{r['occlusion_seconds_per_volume']:.1f} | {r['occlusion_forward_passes']} | "
                     f"{r['occlusion_seconds_per_volume'] / r['gradcam_seconds_per_volume']:.0f}x |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in rows if "command" in r), ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="the data-pipeline benchmark -> DIR/data.json")
    data.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    data.add_argument("--json-dir", type=Path, required=True)
    render_parser = sub.add_parser("render", help="a folder of benchmark JSON files -> BENCHMARKS.md")
    render_parser.add_argument("json_dir", type=Path)
    render_parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    render_parser.add_argument("--command", default="make bench", help="the command named in the file")
    args = parser.parse_args(argv)
    if args.command == "data":
        print("benchmark: data pipeline", flush=True)
        save_json(args.json_dir / "data.json", data_benchmark(args.quick))
        return 0
    atomic_write_text(args.out, render(load_results(args.json_dir), args.command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
