"""Callbacks that connect Keras training to the shared run directory and the fault-injection hook."""

from __future__ import annotations

import time

import keras
from tqdm.auto import tqdm

from common.runs.faults import kill_after_steps, maybe_kill
from common.runs.training import RunRecorder


class RecordEpochs(keras.callbacks.Callback):
    """One history.csv row, TensorBoard scalars and a summary line per epoch, in the shared format."""

    def __init__(self, recorder: RunRecorder):
        super().__init__()
        self.recorder = recorder
        self.train_seconds = 0.0
        self.epochs_run = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._train_ended = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._started
        self.train_seconds += getattr(self, "_train_ended", time.perf_counter()) - self._started
        self.epochs_run += 1
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.recorder.epoch(dict(epoch=epoch + 1, train_loss=logs["loss"], train_accuracy=logs["accuracy"],
                                 val_loss=logs["val_loss"], val_accuracy=logs["val_accuracy"], lr=lr, seconds=seconds))


class KillSwitch(keras.callbacks.Callback):
    """VOLCLS_KILL_AFTER_STEPS=N: SIGKILL this process after N training steps (resume tests)."""

    def __init__(self):
        super().__init__()
        self.limit, self.steps = kill_after_steps(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        maybe_kill(self.steps, self.limit)


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar per epoch, like the ResNet's (Keras' own progress line would repeat our summary)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update()
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
