"""Training of the transformer: the Keras adapter of the shared driver (common.runs.driver).

The driver owns the run directory, the epoch loop's bookkeeping and the final predictions; this
module owns the Keras model, `compile`/`fit` (one `fit` call per epoch, with Keras callbacks for the
driver's per-step hook), precision policies and tf.distribute / keras.distribution.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from common.atomic import atomic_write
from common.data.batches import EpochBatches, batch_slices
from common.data.dataset import PreparedDataset
from common.errors import ConfigError
from common.evaluation.metrics import report_finished_run
from common.runs.config import RuntimeConfig, TrainConfig
from common.runs.driver import AdapterFacts, EpochStats, run_training
from common.runs.hardware import cpu_description
from common.runs.precision import Hardware
from common.runs.probe import (
    QUICK_MATMUL_REPEATS,
    QUICK_MATMUL_SECONDS,
    cached_bf16_matmul_ratio,
    probe_key,
    timed_probe,
)
from common.runs.record import PrecisionDecision
from tf_transformer.config import TransformerConfig
from tf_transformer.data import KerasBatches
from tf_transformer.flops import flops_per_sample
from tf_transformer.keras_state import ONEDNN_VARIABLE, precision_policy
from tf_transformer.model import build_transformer, summary_lines
from tf_transformer.model_file import load_selected_model
from tf_transformer.options import KerasOptions
from tf_transformer.steps import compile_for_training, peak_memory_bytes, synthetic_training_step

MODEL = "tf_transformer"
MODEL_FILE = "model.keras"


def _gpus() -> list:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    return []


def hardware() -> Hardware:
    """What the Keras backend computes on; bf16 on GPUs of compute capability 8.0 (Ampere) and newer."""
    gpus = _gpus()
    if not gpus:
        return Hardware("cpu", f"CPU {cpu_description()}")
    backend, bf16 = keras.backend.backend(), True
    if backend == "tensorflow":
        import tensorflow as tf

        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        bf16 = tuple(capability) >= (8, 0)
    elif backend == "torch":
        import torch

        bf16 = torch.cuda.is_bf16_supported()
    return Hardware("cuda", f"{len(gpus)} GPU(s), Keras backend {backend}", gpu_bf16=bf16)


def distribution_scope(kind: str, logical_cpu_devices: int = 0):
    """none | mirrored (TensorFlow backend: the GPUs of this machine, or N logical CPUs in tests)."""
    backend = keras.backend.backend()
    if kind == "none":
        return nullcontext()
    if backend != "tensorflow":
        raise ConfigError(f"--distribute {kind} needs KERAS_BACKEND=tensorflow (backend is {backend})")
    import tensorflow as tf

    if logical_cpu_devices > 1:  # split the CPU into N logical devices (tests and CPU-only machines)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpu_devices)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.MirroredStrategy()
    print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas")
    return strategy.scope()


def no_decay_variables(model: keras.Model) -> list:
    """The variables --weight-decay-exclusions keeps out of weight decay: biases (attention's are 2-D,
    heads x key_dim), norm and LayerScale parameters (at most one dimension), the position embedding and
    the class token — the torch rule plus the two token tables."""
    return [v for v in model.trainable_variables
            if len(v.shape) <= 1 or v.name == "bias" or "position_embedding" in v.path or "class_token" in v.path]


def make_optimizer(training: TrainConfig, model: keras.Model | None = None):
    clip = {"global_clipnorm": training.grad_clip} if training.grad_clip else {}
    if training.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=training.lr, **clip)
    if training.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=training.lr, weight_decay=training.weight_decay, **clip)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=training.lr, momentum=0.9, nesterov=True,
                                         weight_decay=training.weight_decay or None, **clip)
    if training.weight_decay_exclusions and model is not None:
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer


def make_loss(training: TrainConfig):
    """Cross-entropy on one-hot targets (KerasBatches), so label smoothing means what it means in torch."""
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=training.label_smoothing)


def predict_probabilities(model: keras.Model, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """(N, D, H, W) -> (N, n_classes) softmax probabilities."""
    out = []
    for sl in batch_slices(len(x), batch_size):
        logits = model(np.asarray(x[sl], dtype=np.float32)[..., None], training=False)
        out.append(keras.ops.convert_to_numpy(keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)))
    return np.concatenate(out)


def tensorflow_kernels() -> str | None:
    """Which CPU kernels TensorFlow was started with, from TF_ENABLE_ONEDNN_OPTS (keras_state.cpu_kernels sets
    it before TensorFlow starts): "oneDNN", "Eigen", or TensorFlow's own choice where it was never set (a
    library user's process); None on the torch backend."""
    if keras.backend.backend() != "tensorflow":
        return None
    return {"1": "oneDNN", "0": "Eigen"}.get(os.environ.get(ONEDNN_VARIABLE, ""), "TensorFlow's choice")


def precision_probe(config: TransformerConfig, batch_size: int, options: KerasOptions, cache_dir: Path | None, *,
                    threads: int = 0):
    """For `decide_precision`: samples/s of fp32 and mixed_bfloat16 steps, measured once per machine and thread
    count (`threads`: --threads, 0 for the backend's default)."""
    backend = keras.backend.backend()
    facts = {"framework": f"keras {keras.__version__} {backend}", "device": hardware().name, "model": config.to_dict(),
             "batch": batch_size, "jit": options.jit_compile, "kernels": tensorflow_kernels(), "threads": threads}
    cache_file = cache_dir / f"transformer-{probe_key(facts)}.json" if cache_dir else None
    return lambda fresh=False: timed_probe(
        ["fp32", "bf16"], lambda p: synthetic_training_step(config, p, batch_size=batch_size, jit_compile=options.jit),
        batch_size=batch_size, cache_file=cache_file, fresh=fresh)


def bf16_matmul_check(cache_dir: Path, *, threads: int = 0) -> Callable[[], float]:
    """For `decide_precision`: bf16 over fp32 keras.ops.matmul throughput here, measured once per machine and
    thread count (the ratio depends on it: 0.86x on two threads, 1.12x on one, on a 2-core AVX2 EPYC)."""
    from tf_transformer.bench import matmul_peak

    facts = {"framework": f"keras {keras.__version__} {keras.backend.backend()}", "device": hardware().name,
             "kernels": tensorflow_kernels(), "threads": threads}
    dtypes = {"fp32": "float32", "bf16": "bfloat16"}
    return cached_bf16_matmul_ratio(
        lambda p: matmul_peak(dtypes[p], repeats=QUICK_MATMUL_REPEATS, enough_seconds=QUICK_MATMUL_SECONDS),
        cache_dir / f"matmul-{probe_key(facts)}.json")


class StepHook(keras.callbacks.Callback):
    """Calls the driver's per-step hook (progress bar, fault injection) after every training step."""

    def __init__(self, on_step: Callable[[float], None]):
        super().__init__()
        self.on_step = on_step

    def on_train_batch_end(self, batch, logs=None):
        self.on_step(float((logs or {}).get("loss", float("nan"))))


class WeightEMA(keras.callbacks.Callback):
    """Exponential moving average of a model's weights, updated after every training step (--ema-decay).

    Not the optimizer's `use_ema`: Keras' `fit` overwrites the model with that average when it returns,
    and the driver calls `fit` once per epoch, so training would restart from the average every epoch.
    As torch's AveragedModel: the first update copies, then shadow = d * shadow + (1 - d) * weight, over
    every model variable (trainable weights and BatchNorm statistics). The shadows are Keras variables,
    so the resume state carries them.
    """

    def __init__(self, model: keras.Model, decay: float):
        super().__init__()
        self.decay = decay
        self.tracked = list(model.variables)
        # From a numpy copy: a Keras variable made from another's value may share its storage.
        self.shadows = [keras.Variable(keras.ops.convert_to_numpy(v.value), trainable=False, name=f"ema_{i}")
                        for i, v in enumerate(self.tracked)]
        self.updates = keras.Variable(0, dtype="int64", trainable=False, name="ema_updates")

    def on_train_batch_end(self, batch, logs=None):
        decay = 0.0 if int(keras.ops.convert_to_numpy(self.updates)) == 0 else self.decay
        for shadow, variable in zip(self.shadows, self.tracked):
            value = keras.ops.cast(variable.value, shadow.dtype)
            shadow.assign(keras.ops.add(keras.ops.multiply(decay, shadow.value), keras.ops.multiply(1 - decay, value))
                          if decay else value)
        self.updates.assign(self.updates.value + 1)

    @contextmanager
    def swapped_in(self):
        """The model holds the averages inside the block and its own weights again after it."""
        own = [keras.ops.convert_to_numpy(v.value) for v in self.tracked]
        for variable, shadow in zip(self.tracked, self.shadows):
            variable.assign(keras.ops.cast(shadow.value, variable.dtype))
        try:
            yield
        finally:
            for variable, value in zip(self.tracked, own):
                variable.assign(value)


class KerasAdapter:
    """The transformer behind the driver's ModelAdapter protocol."""

    model_file = MODEL_FILE
    state_suffix = ".npz"

    def __init__(self, config: TransformerConfig, training: TrainConfig, options: KerasOptions,
                 precision: PrecisionDecision):
        self.config, self.training, self.options = config, training, options
        scope = distribution_scope(options.distribute, options.logical_cpu_devices)
        keras.utils.set_random_seed(training.seed)
        with precision_policy(precision.resolved), scope:
            self.model = build_transformer(config)
            compile_for_training(self.model, optimizer=make_optimizer(training, self.model), loss=make_loss(training),
                                 metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=options.jit)
            # With --ema-decay, validation, selection and the saved model use the averaged weights.
            self.ema = WeightEMA(self.model, training.ema_decay) if training.ema_decay else None
        self._hardware = hardware()
        self._use_ema = self.ema is not None

    def _averaged_weights(self):
        return self.ema.swapped_in() if self._use_ema else nullcontext()

    def facts(self) -> AdapterFacts:
        backend = keras.backend.backend()
        module = __import__(backend)  # tensorflow or torch (tf_transformer/startup.py: SUPPORTED_BACKENDS)
        return AdapterFacts(model_config=self.config.to_dict(), parameters=self.model.count_params(),
                            flops_per_sample=flops_per_sample(self.config), device=self._hardware.name,
                            options={**asdict(self.options), "backend": backend, "kernels": tensorflow_kernels()},
                            versions={"keras": keras.__version__, backend: getattr(module, "__version__", "?")},
                            drop_last=self.options.distribute != "none")

    def fit_epoch(self, batches: EpochBatches, *, learning_rate: float, on_step: Callable[[float], None]) -> EpochStats:
        self.model.optimizer.learning_rate = learning_rate
        data = KerasBatches(batches, num_classes=self.config.num_classes, workers=2)
        callbacks = [StepHook(on_step)] + ([self.ema] if self.ema is not None else [])
        history = self.model.fit(data, epochs=1, verbose=0, callbacks=callbacks)
        samples = sum(s.stop - s.start for s in batches.slices)
        return EpochStats(float(history.history["loss"][-1]), float(history.history["accuracy"][-1]), samples)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self._averaged_weights():
            return predict_probabilities(self.model, x, batch_size=self.training.batch_size)

    def save_model(self, path: Path) -> None:
        with self._averaged_weights():
            atomic_write(path, lambda tmp: self.model.save(tmp))

    def load_model(self, path: Path) -> None:
        # Whole-model load, then weights by position: Keras' load_weights skips layers it cannot match with
        # a warning, so a model.keras of another architecture put in this run's place could load in part.
        weights = load_selected_model(path).get_weights()
        ours = self.model.get_weights()
        if [w.shape for w in weights] != [w.shape for w in ours]:
            raise ConfigError(f"{path}: not this run's model; its {len(weights)} weight arrays do not fit the "
                              f"{len(ours)} of the network in config.json")
        self.model.set_weights(weights)
        self._use_ema = False  # the model now holds the selected (averaged) weights: predict them as they are

    def _state_variables(self) -> list:
        optimizer = self.model.optimizer  # built in __init__
        ema = (self.ema.shadows + [self.ema.updates]) if self.ema is not None else []
        return list(self.model.variables) + list(optimizer.variables) + ema

    def save_state(self, path: Path) -> None:
        """Every model and optimizer variable, by position (the model is rebuilt from its config)."""
        arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self._state_variables())}
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    def load_state(self, path: Path) -> None:
        variables = self._state_variables()
        try:
            with np.load(path) as stored:
                arrays = [stored[f"v{i:05d}"] for i in range(len(stored.files))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a torn or truncated file
            raise ConfigError(f"{path}: unreadable resume state ({type(exc).__name__}: {exc})") from exc
        if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise ConfigError(f"{path}: resume state does not match this model's variables")
        for variable, value in zip(variables, arrays):
            variable.assign(value)

    def peak_memory_bytes(self) -> int:
        return peak_memory_bytes()[0]


def set_threads(threads: int) -> None:
    """Size the backend's CPU thread pool before any op runs."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def train(dataset: PreparedDataset, *, preset: str, model_config: TransformerConfig, training: TrainConfig,
          runtime: RuntimeConfig, options: KerasOptions) -> Path:
    """Train (or resume) one transformer run on `dataset`; returns the run directory."""
    if runtime.threads:
        set_threads(runtime.threads)
    for line in summary_lines(model_config):
        print(line)
    run_dir = run_training(model=MODEL, preset=preset, model_config=model_config.to_dict(), dataset=dataset,
                           training=training, runtime=runtime, hardware=hardware(),
                           probe=precision_probe(model_config, training.batch_size, options,
                                                 dataset.cache_root / "probes", threads=runtime.threads),
                           bf16_matmul=bf16_matmul_check(dataset.cache_root / "probes", threads=runtime.threads),
                           build=lambda precision: KerasAdapter(model_config, training, options, precision))
    report_finished_run(run_dir)
    return run_dir
