"""Training of the transformer with Keras callbacks: train on train, select on val, predict val and test."""

from __future__ import annotations

import argparse
import resource
from contextlib import nullcontext
from pathlib import Path

import keras
import numpy as np

from common.data.batches import balanced_class_weights, batch_slices
from common.runs.hardware import cpu_description, cpu_has_native_bf16
from common.runs.options import augment_config, dataset_from_args, training_config
from common.runs.rundir import new_run_dir, read_history
from common.runs.schedules import learning_rate
from common.runs.training import RunRecorder, best_history_row
from tf_transformer.callbacks import KillSwitch, ProgressBar, RecordEpochs
from tf_transformer.config import TransformerConfig, preset
from tf_transformer.data import EpochSetter, VolumeBatches
from tf_transformer.flops import flops_per_sample
from tf_transformer.model import build_transformer, summary_lines

MODEL_FILE = "model.keras"


def resolve_precision(requested: str) -> str:
    """auto: mixed bf16 on GPUs and on CPUs with native bf16 (AMX / AVX512-BF16), else fp32.

    `make bench` (BENCHMARKS.md) measured the `seed` preset at 64^3 on an AMX CPU: mixed_bfloat16
    1.14x fp32 under TensorFlow and 1.37x under the torch backend, with agreeing losses.
    """
    if requested != "auto":
        return requested
    return "bf16" if _has_gpu() or cpu_has_native_bf16() else "fp32"


def _has_gpu() -> bool:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def set_precision(precision: str) -> None:
    policies = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    keras.mixed_precision.set_global_policy(policies[precision])


def distribution_scope(kind: str, logical_cpu_devices: int = 0):
    """none | mirrored | multiworker (TensorFlow backend) | data-parallel (JAX backend)."""
    backend = keras.backend.backend()
    if kind == "none":
        return nullcontext()
    if kind == "data-parallel":
        if backend != "jax":
            raise SystemExit(f"error: --distribute data-parallel needs KERAS_BACKEND=jax (backend is {backend})")
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return nullcontext()
    if backend != "tensorflow":
        raise SystemExit(f"error: --distribute {kind} needs KERAS_BACKEND=tensorflow (backend is {backend})")
    import tensorflow as tf

    if kind == "multiworker":  # cluster from TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        print(f"MultiWorkerMirroredStrategy: {strategy.num_replicas_in_sync} replicas")
        return strategy.scope()
    if logical_cpu_devices > 1:  # split the CPU into N logical devices (tests and CPU-only machines)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpu_devices)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas")
    return strategy.scope()


def make_optimizer(args: argparse.Namespace):
    if args.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=args.lr)
    return keras.optimizers.SGD(learning_rate=args.lr, momentum=0.9, nesterov=True)


def peak_memory_bytes() -> int:
    if keras.backend.backend() == "tensorflow" and _has_gpu():
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def predict_probabilities(model: keras.Model, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """(N, D, H, W) -> (N, n_classes) softmax probabilities."""
    out = []
    for sl in batch_slices(len(x), batch_size):
        logits = model(np.asarray(x[sl], dtype=np.float32)[..., None], training=False)
        out.append(keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)))
    return np.concatenate(out)


def _best_row(run_dir: Path, metric: str) -> dict | None:
    """The history row with the best validation value so far (ModelCheckpoint forgets it on resume)."""
    if not (run_dir / "history.csv").is_file():
        return None
    return best_history_row(read_history(run_dir), metric)


def _best_value(run_dir: Path, metric: str) -> float | None:
    row = _best_row(run_dir, metric)
    return None if row is None else row[metric]


def train(args: argparse.Namespace) -> Path:
    if args.threads:
        _set_threads(args.threads)
    dataset = dataset_from_args(args, progress=not args.quiet)
    precision = resolve_precision(args.precision)
    set_precision(precision)
    scope = distribution_scope(args.distribute, args.logical_cpu_devices)
    keras.utils.set_random_seed(args.seed)
    config: TransformerConfig = preset(args.preset).with_data(input_shape=dataset.preprocess.shape,
                                                              num_classes=len(dataset.classes))
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(args.runs_root), "vit")
    backup_dir = run_dir / "backup"
    resuming = backup_dir.is_dir() and any(backup_dir.iterdir())
    recorder = RunRecorder(run_dir)
    with scope:
        model = build_transformer(config)
        model.compile(optimizer=make_optimizer(args),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      jit_compile=args.jit_compile)
    facts = {"parameters": model.count_params(), "flops_per_sample": flops_per_sample(config)}
    if resuming:
        recorder.resume_history(completed_epochs=args.epochs)
        print(f"resuming {run_dir} from {backup_dir}")
    else:
        recorder.start({
            "model": "tf_transformer", "run_dir": str(run_dir),
            "framework": {"keras": keras.__version__, "backend": keras.backend.backend(),
                          **_backend_version()},
            "model_config": config.to_dict(), "training": training_config(args),
            "options": {"precision": precision, "jit_compile": args.jit_compile, "optimizer": args.optimizer,
                        "distribute": args.distribute},
            "parameters": facts["parameters"], "data": dataset.describe(),
            "data_hash": dataset.data_hash, "split_hash": dataset.split_hash,
        })
        print(f"run directory: {run_dir}  ({precision}, backend {keras.backend.backend()}, "
              f"{facts['parameters']:,} parameters)")
    for line in summary_lines(config):
        print(line)
    train_split, val_split = dataset.split("train"), dataset.split("val")
    train_batches = VolumeBatches(train_split, args.batch_size, seed=args.seed, shuffle=True,
                                  balanced=args.balanced_sampler, augment=augment_config(args),
                                  drop_last=args.distribute != "none", workers=2)
    val_batches = VolumeBatches(val_split, args.batch_size, workers=2)
    mode = "min" if args.select_metric == "val_loss" else "max"
    record = RecordEpochs(recorder)
    callbacks = [
        EpochSetter(train_batches),
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(
            epoch, base_lr=args.lr, epochs=args.epochs, schedule=args.schedule, warmup_epochs=args.warmup_epochs)),
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(run_dir / MODEL_FILE), monitor=args.select_metric, mode=mode,
                                        save_best_only=True,
                                        initial_value_threshold=_best_value(run_dir, args.select_metric) if resuming else None),
        record,
        KillSwitch(),
    ]
    if not args.quiet:
        callbacks.append(ProgressBar(len(train_batches)))
    if args.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=args.select_metric, mode=mode, patience=args.patience))
    class_weight = None
    if args.class_weights:
        class_weight = dict(enumerate(balanced_class_weights(train_split.y, len(dataset.classes)).tolist()))
    model.fit(train_batches, validation_data=val_batches, epochs=args.epochs, class_weight=class_weight,
              callbacks=callbacks, verbose=0)
    best = keras.saving.load_model(run_dir / MODEL_FILE, safe_mode=True, compile=False)
    facts.update({
        "train_seconds": record.train_seconds,
        "samples_per_second": record.epochs_run * len(train_split) / record.train_seconds if record.train_seconds else None,
        "peak_memory_bytes": peak_memory_bytes(), "device": _device_description(),
        "best_epoch": (_best_row(run_dir, args.select_metric) or {}).get("epoch"),
    })
    recorder.finish(dataset, lambda x: predict_probabilities(best, x, batch_size=args.batch_size), facts=facts)
    return run_dir


def _set_threads(threads: int) -> None:
    """Size the backend's CPU thread pool before any op runs."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _backend_version() -> dict:
    backend = keras.backend.backend()
    module = __import__({"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}.get(backend, backend))
    return {backend: getattr(module, "__version__", "?")}


def _device_description() -> str:
    return "GPU" if _has_gpu() else f"CPU {cpu_description()}"
