"""Bundle inference speed: onnxruntime against native torch / TensorFlow, same network, batch and threads.

    python -m common.bench.export_speed [--shapes 32 64] [--batch 4] [--threads 2] [--out results/export/bench.md]

Each row is one child process per framework (`python -m torch_resnet.export_bench`,
`python -m tf_transformer.export_bench`): the network with random weights at the CPU recipe preset of that size, its
ONNX graph made by the same exporter as `python -m common export`, then both timed in that process
(median of repeated calls after warm-up). Volumes/s = batch / median seconds per call."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from common.atomic import write_or_print
from common.models import MODELS
from common.runs.probe import time_steps

WARMUP, REPEATS = 2, 10


def median_seconds(call: Callable[[], object], *, warmup: int = WARMUP, repeats: int = REPEATS) -> float:
    """Median seconds of `repeats` calls after `warmup` untimed ones (the probe's own timer, time_steps)."""
    for _ in range(warmup - 1):
        call()
    return time_steps(call, repeats).median


def onnx_seconds(path: Path, x, threads: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return median_seconds(lambda: session.run(None, {name: x}))


def row(model: str, preset: str, shape: int, batch: int, threads: int, native: str, native_s: float,
        onnx_s: float) -> dict:
    return {"model": model, "preset": preset, "shape": shape, "batch": batch, "threads": threads,
            "native": native, "native_seconds": native_s, "onnx_seconds": onnx_s}


def preset_for(shape: int) -> str:
    """The CPU recipe preset of each model for that resolution (README "Models")."""
    return "small_recipe" if shape <= 32 else "small_recipe_strided"


def case_arguments(prog: str) -> argparse.ArgumentParser:
    """The options of one row's child process (`python -m <package>.export_bench`)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--preset", default="small_recipe_strided")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def run_case(package: str, preset: str, shape: int, batch: int, threads: int) -> dict:
    command = [sys.executable, "-m", f"{package}.export_bench", "--preset", preset, "--shape", str(shape),
               "--batch", str(batch), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def render(rows: list[dict], command: str) -> str:
    lines = ["# Bundle inference: onnxruntime vs native", "",
             f"Command: `{command}`; {platform.machine()}, {os.cpu_count()} logical CPUs, Python "
             f"{platform.python_version()}. Median of {REPEATS} calls after {WARMUP} warm-up calls, random "
             "weights; the same batch and intra-op threads on both sides.", "",
             "| model | preset | shape | batch | threads | native | native vol/s | onnxruntime vol/s | "
             "onnxruntime / native | native ms/batch | onnxruntime ms/batch |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        native, onnx = r["batch"] / r["native_seconds"], r["batch"] / r["onnx_seconds"]
        lines.append(f"| {r['model']} | {r['preset']} | {r['shape']}³ | {r['batch']} | {r['threads']} | {r['native']} "
                     f"| {native:.1f} | {onnx:.1f} | {onnx / native:.2f}× | {1000 * r['native_seconds']:.1f} "
                     f"| {1000 * r['onnx_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench.export_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="write the Markdown table here (default: print it)")
    args = parser.parse_args(argv)
    rows = [run_case(model.package, preset_for(shape), shape, args.batch, args.threads) for shape in args.shapes
            for model in MODELS]
    text = render(rows, "python -m common.bench.export_speed " + " ".join(argv if argv is not None else sys.argv[1:]))
    write_or_print(text, args.out, "benchmark")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
