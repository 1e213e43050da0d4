"""Transformer benchmark: training throughput of the `reference` preset under one backend configuration.

Run once per configuration (the Keras backend is fixed per process); `make bench` runs them all:

    KERAS_BACKEND=tensorflow python -m tf_transformer.bench --precision fp32 --jit-compile false
    KERAS_BACKEND=torch      python -m tf_transformer.bench --precision bf16
    python -m tf_transformer.bench --suite [--quick] --json-dir DIR   # every configuration, as `make bench`
    python -m tf_transformer.bench --capacity --shape 192 --flash true   # largest batch, speed, memory (GPU)
    python -m tf_transformer.bench --plan --shape 192                    # activation memory on paper
    python -m tf_transformer.bench --first-step lazy|prebuilt            # build + compile + first step (tracing)

`--capacity` and `--plan` import only keras, numpy and the model (tf_transformer/steps.py), so they run
under whichever Keras backend a GPU machine has (torch, JAX or TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_BATCH = 4  # throughput; --capacity searches for its batch unless --batch is given
SUITE_SIZES = {"full": {"preset": "reference", "shape": 64, "batch": 4, "steps": 4, "explain": [32, 64],
                        "preset_shapes": [32, 64], "preset_batch": 8},
               "quick": {"preset": "small", "shape": 16, "batch": 2, "steps": 2, "explain": [16],
                         "preset_shapes": [32], "preset_batch": 2}}
# The presets whose cost `make bench` compares (the recipes against `small`, at 32^3 and 64^3).
SUITE_PRESETS = ("small", "small_recipe", "small_recipe_strided")
SUITE_CONFIGS = [  # (label, backend, precision, jit_compile)
    ("TensorFlow fp32 (tf.function, no XLA)", "tensorflow", "fp32", "false"),
    ("TensorFlow fp32 + XLA", "tensorflow", "fp32", "true"),
    ("TensorFlow mixed_bfloat16", "tensorflow", "bf16", "false"),
    ("torch backend fp32", "torch", "fp32", "false"),
    ("torch backend bf16", "torch", "bf16", "false"),
]


def matmul_peak(dtype: str, **growth) -> float:
    """Best FLOP/s of a keras.ops.matmul in `dtype` on the active backend, grown to a timeable size (`growth`:
    common.bench.peak.matmul_peak's repeats / enough_seconds)."""
    import keras

    from common.bench.peak import matmul_peak as grown_matmul_peak

    def multiply_for(n: int):
        a = keras.ops.cast(keras.random.normal((n, n), seed=1), dtype)
        b = keras.ops.cast(keras.random.normal((n, n), seed=2), dtype)
        # reading one element back waits for the product (asynchronous backends)
        return lambda: keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, b)[0, 0], "float32"))

    return grown_matmul_peak(multiply_for, **growth)[0]


def throughput(*, shape: int, batch: int, steps: int, precision: str, jit_compile, preset_name: str) -> dict:
    import keras

    from common.runs.probe import time_steps
    from tf_transformer.config import preset
    from tf_transformer.flops import flops_per_sample
    from tf_transformer.steps import synthetic_training_step

    config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=3)
    step = synthetic_training_step(config, precision, batch_size=batch, jit_compile=jit_compile)
    timing = time_steps(step, steps)  # the warm-up (tracing, XLA compilation) is not timed
    warmup, losses, seconds = timing.warmup_seconds, timing.outputs, timing.median
    train_flops = 3 * flops_per_sample(config) * batch
    peak_fp32 = matmul_peak("float32")
    peak_own = peak_fp32 if precision == "fp32" else matmul_peak("bfloat16")
    return {
        "model": "tf_transformer", "backend": keras.backend.backend(), "precision": precision, "jit_compile": str(jit_compile),
        "preset": preset_name, "shape": shape, "tokens": config.num_tokens, "batch": batch, "steps": steps,
        "samples_per_second": batch / seconds, "step_seconds": seconds, "warmup_seconds": warmup, "losses": losses,
        "forward_flops": flops_per_sample(config), "achieved_flops": train_flops / seconds, "matmul_peak_fp32": peak_fp32, "matmul_peak_own": peak_own,
        "fraction_of_fp32_peak": train_flops / seconds / peak_fp32,
        "fraction_of_own_peak": train_flops / seconds / peak_own,
    }


def first_step(*, shape: int, batch: int, preset_name: str, optimizer_slots: str) -> dict:
    """Seconds to build, compile and take the first training step (tracing) of a fresh fp32 model, its
    optimizer's slots made by that step (`lazy`, Keras' default) or before it (`prebuilt`, as training does:
    compile_for_training). One per process: a second model in the same process would reuse TensorFlow's
    warm state."""
    import time

    from tf_transformer.config import preset
    from tf_transformer.steps import synthetic_training_step

    config = preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=2)
    start = time.perf_counter()
    synthetic_training_step(config, "fp32", batch_size=batch, jit_compile=False,
                            lazy_optimizer=optimizer_slots == "lazy")()
    return {"optimizer_slots": optimizer_slots, "preset": preset_name, "shape": shape, "batch": batch,
            "seconds": time.perf_counter() - start}


def capacity(*, shape: int, flash: bool, precision: str, max_batch: int, steps: int, batch: int | None,
             preset_name: str = "reference") -> dict:
    """The largest batch of the transformer at `shape`^3 that trains (bounded search; out-of-memory is a
    "does not fit"), then samples/s and peak memory. Flash attention needs attention dropout 0 in Keras,
    so the flash rows train that variant of the preset."""
    import gc

    import keras

    from common.bench.capacity import largest_batch, runs_in_memory
    from common.runs.probe import time_steps
    from tf_transformer.config import preset
    from tf_transformer.steps import peak_memory_bytes, synthetic_training_step

    overrides = {"attention_dropout": 0.0} if flash else {}
    config = preset(preset_name, **overrides).with_data(input_shape=(shape,) * 3, num_classes=3)
    if flash:
        keras.config.enable_flash_attention()
    else:
        keras.config.disable_flash_attention()

    def free() -> None:
        keras.backend.clear_session()
        gc.collect()

    def fits(batch_size: int) -> bool:
        return runs_in_memory(lambda: synthetic_training_step(config, precision, batch_size=batch_size,
                                                              jit_compile="auto")(), free)

    search = None
    if batch is None:
        search = largest_batch(fits, max_batch)
        batch = search.largest
    result = {"model": "tf_transformer", "preset": preset_name, "shape": shape, "tokens": config.num_tokens,
              "backend": keras.backend.backend(), "keras": keras.__version__, "precision": precision,
              "flash_attention": flash, "search": search.to_dict() if search else None, "batch": batch}
    if batch < 1:
        return {**result, "error": "batch 1 does not fit"}
    timing = time_steps(synthetic_training_step(config, precision, batch_size=batch, jit_compile="auto"), steps)
    seconds = timing.median
    peak, measured_as = peak_memory_bytes()
    return {**result, "samples_per_second": batch / seconds, "step_seconds": seconds,
            "warmup_seconds": timing.warmup_seconds, "peak_memory_bytes": peak, "peak_memory_measured_as": measured_as}


def plan(shape: int) -> dict:
    from tf_transformer.config import preset
    from tf_transformer.memory import memory_plan

    return memory_plan(preset("reference").with_data(input_shape=(shape,) * 3, num_classes=3)).to_dict()


def explain_speed(shape: int, preset_name: str) -> dict:
    """Seconds per volume of gradient x activation and occlusion for the preset at shape^3."""
    import keras

    from common.explain.bench import time_methods
    from tf_transformer.config import preset
    from tf_transformer.explain import hooks_for
    from tf_transformer.model import build_transformer

    keras.utils.set_random_seed(0)
    model = build_transformer(preset(preset_name).with_data(input_shape=(shape,) * 3, num_classes=2))
    return {**time_methods(hooks_for(model, ["a", "b"]), shape), "preset": preset_name,
            "backend": keras.backend.backend()}


def suite(quick: bool, json_dir: Path) -> None:
    """Every backend/precision/XLA configuration, each in its own process (the backend is per process)."""
    from common.bench.io import run_json, save_json

    sizes = SUITE_SIZES["quick" if quick else "full"]
    for i, (label, backend, precision, jit) in enumerate(SUITE_CONFIGS):
        print(f"benchmark: transformer, {label}", flush=True)
        result = run_json("tf_transformer.bench", [
            "--preset", sizes["preset"], "--shape", str(sizes["shape"]), "--batch", str(sizes["batch"]),
            "--steps", str(sizes["steps"]), "--precision", precision, "--jit-compile", jit], {"KERAS_BACKEND": backend})
        save_json(json_dir / f"vit-{i}.json", {**result, "label": label})
    print("benchmark: transformer presets, the recipes against small", flush=True)
    for shape in sizes["preset_shapes"]:  # the same backend, precision and batch for every preset
        for name in SUITE_PRESETS:
            result = run_json("tf_transformer.bench", [
                "--preset", name, "--shape", str(shape), "--batch", str(sizes["preset_batch"]),
                "--steps", str(sizes["steps"]), "--precision", "fp32", "--jit-compile", "false"],
                {"KERAS_BACKEND": "tensorflow"})
            save_json(json_dir / f"cost-transformer-{name}-{shape}.json",
                      {"model": "tf_transformer", "preset": name, "shape": shape, **result})
    print("benchmark: transformer saliency maps", flush=True)
    for shape in sizes["explain"]:
        save_json(json_dir / f"explain-transformer-{shape}.json", run_json(
            "tf_transformer.bench", ["--explain", "--preset", "small", "--shape", str(shape)],
            {"KERAS_BACKEND": "tensorflow"}))
    print("benchmark: transformer memory plan at 192^3", flush=True)
    save_json(json_dir / "plan-vit.json", run_json("tf_transformer.bench", ["--plan", "--shape", "192"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tf_transformer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--batch", type=int, help=f"batch size (default {DEFAULT_BATCH}; --capacity: skip the search)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--jit-compile", choices=("true", "false"), default="false")
    parser.add_argument("--suite", action="store_true", help="run every configuration (one process each)")
    parser.add_argument("--capacity", action="store_true", help="largest batch, samples/s and peak memory")
    parser.add_argument("--plan", action="store_true", help="training memory on paper (no model is built)")
    parser.add_argument("--explain", action="store_true", help="seconds per volume of each saliency method")
    parser.add_argument("--flash", choices=("true", "false"), default="false",
                        help="capacity: Keras flash attention (trains the preset with attention dropout 0)")
    parser.add_argument("--max-batch", type=int, default=64, help="capacity: upper bound of the batch search")
    parser.add_argument("--first-step", choices=("lazy", "prebuilt"),
                        help="seconds to build, compile and take a first training step, the optimizer's slots made lazily or before")
    parser.add_argument("--quick", action="store_true", help="suite: reduced sizes (CI)")
    parser.add_argument("--json-dir", type=Path, help="suite: where the JSON results go")
    args = parser.parse_args(argv)
    if args.suite:
        if args.json_dir is None:
            parser.error("--suite needs --json-dir")
        suite(args.quick, args.json_dir)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tf_transformer.keras_state import cpu_kernels

    cpu_kernels()  # as training does: the numbers are those of the kernels a run uses
    if args.plan:
        print(json.dumps(plan(args.shape)))
        return
    if args.explain:
        print(json.dumps(explain_speed(args.shape, args.preset)))
        return
    if args.first_step:
        print(json.dumps(first_step(shape=args.shape, batch=args.batch or DEFAULT_BATCH, preset_name=args.preset,
                                    optimizer_slots=args.first_step)))
        return
    if args.capacity:
        print(json.dumps(capacity(shape=args.shape, flash=args.flash == "true", precision=args.precision,
                                  max_batch=args.max_batch, steps=args.steps, batch=args.batch,
                                  preset_name=args.preset)))
        return
    result = throughput(shape=args.shape, batch=args.batch if args.batch is not None else DEFAULT_BATCH, steps=args.steps, precision=args.precision,
                        jit_compile=args.jit_compile == "true", preset_name=args.preset)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
