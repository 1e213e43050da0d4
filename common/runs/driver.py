"""The framework-free training driver: one run directory, one epoch loop, for both models.

The driver owns the run directory (ownership, lock, identity check on resume), the epoch loop's
bookkeeping (learning rate, batches, validation on val, selection, early stopping), history,
TensorBoard, resume state and the final predictions. A framework package supplies a `ModelAdapter`:
fit one epoch of given batches, predict, save and load weights and resume state, and its facts.

Resume state, written after every epoch in this order, so a kill at any moment leaves a
consistent run: `state-<epoch>.<ext>` (the adapter's weights, optimizer, RNG) -> `resume.json`
(the driver's counters and the history rows, pointing at that state file) -> `history.csv` and
TensorBoard -> older state files removed. A rerun continues from `resume.json`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from common.atomic import atomic_write_text
from common.data.batches import EpochBatches, balanced_class_weights
from common.data.dataset import PreparedDataset
from common.errors import ConfigError, DataError
from common.models import by_package
from common.runs.config import RuntimeConfig, TrainConfig
from common.runs.decision import check_decision, youden_threshold
from common.runs.faults import kill_after_steps, kill_point, maybe_kill
from common.runs.lock import LOCK_FILE, RunLock
from common.runs.precision import Hardware, decide_precision
from common.runs.record import (
    DataRecord,
    Outcome,
    PrecisionDecision,
    RunIdentity,
    RunRecord,
    data_record,
    identity_differences,
    is_run_dir,
    machine_description,
    now_utc,
    read_record,
    write_record,
)
from common.runs.rundir import new_run_dir, write_history, write_predictions

RESUME_FILE = "resume.json"
# The generation before: a resume state torn by a disk error or a bad copy falls back one epoch to it.
PREVIOUS_RESUME_FILE = "resume-previous.json"


@dataclass(frozen=True)
class AdapterFacts:
    model_config: dict  # the package's typed model config, as a dict
    parameters: int
    flops_per_sample: int
    device: str
    options: dict  # resolved runtime options of the package (layout, compile, distribution...)
    versions: dict  # library -> version
    drop_last: bool = False  # replicas of a distribution strategy need equal shares of every batch


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean of weight * cross-entropy over the epoch's samples (all ranks)
    accuracy: float  # unweighted
    samples: int  # samples seen by all ranks together
    data_wait_seconds: float | None = None  # time the step loop waited for its next batch (None: not measured)


class ModelAdapter(Protocol):
    model_file: str  # the selected weights in the run directory, e.g. "model.pt"
    state_suffix: str  # suffix of the resume-state files, e.g. ".pt"

    def facts(self) -> AdapterFacts: ...

    def fit_epoch(self, batches: EpochBatches, *, learning_rate: float,
                  on_step: Callable[[float], None]) -> EpochStats: ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, D, H, W) -> (N, n_classes) softmax probabilities, inference mode."""

    def save_model(self, path: Path) -> None: ...

    def load_model(self, path: Path) -> None: ...

    def save_state(self, path: Path) -> None: ...

    def load_state(self, path: Path) -> None: ...

    def peak_memory_bytes(self) -> int: ...


def _noop() -> None:
    return None


def _same(value):
    return value


@dataclass(frozen=True)
class Processes:
    """The processes of one run (DDP ranks): rank 0 writes every file; one process by default."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = _noop
    broadcast: Callable = _same  # rank 0's value, on every rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class LoopState:
    """The driver's part of the resume state (resume.json)."""

    epochs_done: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    stale_epochs: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    samples_seen: int = 0
    state_file: str = ""
    history: list[dict] = field(default_factory=list)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """val_loss: lower is better; val_accuracy: higher is better; NaN never is."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def validation_scores(y: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of softmax outputs: the same arithmetic for both models."""
    loss = float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)).mean())
    return loss, float((probabilities.argmax(1) == y).mean())


def claim_run_dir(run_dir: Path, model: str) -> RunRecord | None:
    """The stored record of `run_dir` if it is a run of `model`, None if it is empty (new).

    Refuses a run of the other model and a non-empty directory that is not a run.
    """
    run_dir = Path(run_dir)  # made and locked by _create_and_lock
    if not [p for p in run_dir.iterdir() if p.name != LOCK_FILE]:
        return None
    if not is_run_dir(run_dir):
        raise ConfigError(f"--run-dir {run_dir}: a non-empty directory that is not a run directory "
                          "(no config.json); choose a new or empty directory")
    stored = read_record(run_dir)
    if stored.model != model:
        raise ConfigError(f"--run-dir {run_dir}: this run was trained by {stored.model}, not {model}; "
                          "choose another --run-dir")
    return stored


def _create_and_lock(run_dir: Path, lock: RunLock) -> bool:
    """Make `run_dir` if it is absent and take its lock; True when this process made it (so it removes it
    again if the run fails before there is anything to resume)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: exists and is not a directory")
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--run-dir {run_dir}: cannot create it ({exc.strerror})") from None
    lock.acquire()
    return not existed


@dataclass(frozen=True)
class RunRequest:
    """What a trainer asks the driver for: one run of `model` on `dataset` with these settings."""

    model: str  # the package
    preset: str
    model_config: dict
    dataset: PreparedDataset
    training: TrainConfig
    runtime: RuntimeConfig
    hardware: Hardware
    processes: Processes = Processes()
    probe: Callable[[], dict[str, float]] | None = None  # for `decide_precision`
    bf16_matmul: Callable[[], float] | None = None  # for `decide_precision`: bf16 / fp32 matmul throughput here

    @cached_property
    def data(self) -> DataRecord:
        """The dataset's record, for the identity check and config.json (computed once)."""
        return data_record(self.dataset)


@dataclass(frozen=True)
class Claim:
    """The run directory, locked by this process: new (made here) or a stored run to resume."""

    run_dir: Path
    lock: RunLock
    stored: RunRecord | None
    precision: PrecisionDecision
    created: bool  # made by this process: removed again if the run fails before it can be resumed


def run_training(*, build: Callable[[PrecisionDecision], ModelAdapter], **request) -> Path:
    """Train (or resume) one run; returns its directory. `build(precision)` makes the adapter; `request` holds
    RunRequest's fields. Each step below does one job."""
    request = RunRequest(**request)
    check_batch_fits(request)
    check_decision(request.training.decision, request.dataset.classes, request.dataset.split("val").y)
    claim = claim_run(request, choose_run_dir(request))
    try:
        adapter = build(claim.precision)
        facts = adapter.facts()
        record = write_run_record(request, claim, facts)
        train_and_predict(request, claim, adapter, record, facts)
        return claim.run_dir
    except BaseException:
        if claim.created and not (claim.run_dir / RESUME_FILE).is_file():
            shutil.rmtree(claim.run_dir, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        raise
    finally:
        claim.lock.release()


def check_batch_fits(request: RunRequest) -> None:
    n_train = len(request.dataset.split("train").y)
    if request.training.batch_size > n_train:  # before the probe sizes a step by it
        raise ConfigError(f"--batch-size {request.training.batch_size}: more than the {n_train} training samples")


def choose_run_dir(request: RunRequest) -> Path:
    """--run-dir, or a new timestamped folder under --runs-root; rank 0's choice on every rank."""
    runtime = request.runtime
    return request.processes.broadcast(Path(runtime.run_dir) if runtime.run_dir
                                       else new_run_dir(runtime.runs_root, by_package(request.model).run_prefix))


def claim_run(request: RunRequest, run_dir: Path) -> Claim:
    """Rank 0 locks the folder, then decides new or resume (so two trainings on one new folder cannot both
    find it new), the precision, and refuses a resume with other settings; every rank gets the same answer."""
    processes, lock = request.processes, RunLock(run_dir)
    error, stored, precision, created = None, None, None, False
    if processes.is_main:
        try:
            created = _create_and_lock(run_dir, lock)
            stored = claim_run_dir(run_dir, request.model)
            precision = _precision(request, stored)
            if stored is not None:
                _check_same_run(request, run_dir, stored, precision)
        except DataError as exc:  # a refusal (ConfigError) or a damaged stored record: said on every rank
            error = exc
        except BaseException:
            _abandon(run_dir, lock, created)
            raise
    error_text = processes.broadcast(None if error is None else str(error))
    if error_text is not None:
        _abandon(run_dir, lock, created)
        raise error if error is not None else ConfigError(error_text)
    return Claim(run_dir, lock, stored, processes.broadcast(precision), created)


def _abandon(run_dir: Path, lock: RunLock, created: bool) -> None:
    """Leave a refused run directory as it was found: removed if this process made it, unlocked."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
    lock.release()


def _precision(request: RunRequest, stored: RunRecord | None) -> PrecisionDecision:
    if stored is not None and stored.precision.requested == request.training.precision:
        return stored.precision  # resume keeps the decision made when the run began
    return decide_precision(request.training.precision, request.hardware, probe=request.probe,
                            bf16_matmul=request.bf16_matmul)


def _check_same_run(request: RunRequest, run_dir: Path, stored: RunRecord, precision: PrecisionDecision) -> None:
    requested = RunIdentity(request.model, request.preset, request.model_config, request.data,
                            request.training, precision)
    differences = identity_differences(stored.identity(), requested, cache_root=request.dataset.cache_root)
    if differences:
        raise ConfigError(f"--run-dir {run_dir}: cannot resume, the run was made with other settings "
                          f"(stored -> requested): {'; '.join(differences)}. Use a new --run-dir")


def write_run_record(request: RunRequest, claim: Claim, facts: AdapterFacts) -> RunRecord:
    """config.json as the run begins (the outcome is added when it ends); rank 0 writes it."""
    record = RunRecord(model=request.model, preset=request.preset, model_config=request.model_config,
                       data=request.data, training=request.training, precision=claim.precision,
                       device=facts.device, options=facts.options, parameters=facts.parameters,
                       flops_per_sample=facts.flops_per_sample, world_size=request.processes.world_size,
                       versions=facts.versions, machine=machine_description(),
                       created=claim.stored.created if claim.stored else now_utc())
    if request.processes.is_main:
        write_record(claim.run_dir, record)
    request.processes.barrier()
    return record


def train_and_predict(request: RunRequest, claim: Claim, adapter: ModelAdapter, record: RunRecord,
                      facts: AdapterFacts) -> None:
    """Resume if there is state, run the remaining epochs, then predict val and test with the selected model."""
    processes, run_dir = request.processes, claim.run_dir
    loop = _Loop(run_dir, adapter, request.dataset, request.training, request.runtime, processes,
                 drop_last=facts.drop_last)
    resumed = loop.resume()
    if processes.is_main:
        verb = f"resuming {run_dir} after epoch {loop.state.epochs_done}" if resumed else f"run directory: {run_dir}"
        print(f"{verb}  ({claim.precision.resolved}: {claim.precision.reason}; {record.device}; "
              f"{record.parameters:,} parameters)", flush=True)
    loop.run()
    processes.barrier()
    if processes.is_main:
        loop.finish(record)
    processes.barrier()


class _Loop:
    def __init__(self, run_dir: Path, adapter: ModelAdapter, dataset: PreparedDataset, training: TrainConfig,
                 runtime: RuntimeConfig, processes: Processes, *, drop_last: bool):
        self.run_dir, self.adapter, self.dataset, self.drop_last = run_dir, adapter, dataset, drop_last
        self.training, self.runtime, self.processes = training, runtime, processes
        self.train_split, self.val_split = dataset.split("train"), dataset.split("val")
        self.class_weights = (balanced_class_weights(self.train_split.y, len(dataset.classes))
                              if training.class_weights else None)
        self.state = LoopState()
        self._tb = None
        self._kill_limit, self._steps = kill_after_steps(), 0

    # ---- resume state ---------------------------------------------------------------------------
    def resume(self) -> bool:
        path = self.run_dir / RESUME_FILE
        if not path.is_file():
            return False
        try:
            self._load_generation(path)
        except (ValueError, TypeError, DataError) as exc:  # ConfigError is a DataError
            previous = self.run_dir / PREVIOUS_RESUME_FILE
            if not previous.is_file():
                raise ConfigError(f"{path}: unreadable resume state ({exc}); move {path.name} and the state-* "
                                  "files away to restart the run") from exc
            try:
                self._load_generation(previous)
            except (ValueError, TypeError, DataError) as older:
                raise ConfigError(f"{path}: unreadable resume state ({exc}), and the generation before too "
                                  f"({older}); move {path.name}, {previous.name} and the state-* files away to "
                                  "restart the run") from older
            print(f"warning: {path.name} or its state file is unreadable ({exc}); resuming one epoch earlier, "
                  f"after epoch {self.state.epochs_done}", file=sys.stderr, flush=True)
        if self.processes.is_main:  # history follows the state it belongs to
            write_history(self.run_dir, self.state.history)
        return True

    def _load_generation(self, resume_file: Path) -> None:
        """The driver's counters from `resume_file` and the adapter's state from the file it names."""
        self.state = LoopState(**json.loads(resume_file.read_text()))
        self.adapter.load_state(self.run_dir / self.state.state_file)

    def _save_state(self) -> None:
        state_file = f"state-{self.state.epochs_done:04d}{self.adapter.state_suffix}"
        self.adapter.save_state(self.run_dir / state_file)
        kill_point("after_state_save")
        current = self.run_dir / RESUME_FILE
        previous = json.loads(current.read_text()) if current.is_file() else None
        if previous and previous.get("state_file") != state_file:  # keep one generation to fall back to
            atomic_write_text(self.run_dir / PREVIOUS_RESUME_FILE, json.dumps(previous, indent=1))
        self.state.state_file = state_file
        atomic_write_text(current, json.dumps(asdict(self.state), indent=1))
        kill_point("after_resume_record")
        write_history(self.run_dir, self.state.history)
        kill_point("after_history")
        keep = {state_file, (previous or {}).get("state_file")}
        for old in self.run_dir.glob(f"state-*{self.adapter.state_suffix}"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    # ---- the epoch loop -------------------------------------------------------------------------
    def run(self) -> None:
        training, main = self.training, self.processes.is_main
        for epoch in range(self.state.epochs_done, training.epochs):
            if self.state.stopped_early:
                break
            lr = training.learning_rate(epoch)
            batches = EpochBatches(self.train_split, batch_size=training.batch_size, seed=training.seed, epoch=epoch,
                                   augment=training.augmentation(), balanced=training.balanced_sampler,
                                   class_weights=self.class_weights, rank=self.processes.rank,
                                   world_size=self.processes.world_size, drop_last=self.drop_last,
                                   num_classes=len(self.dataset.classes), mixup=training.mixup)
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}", leave=False,
                       disable=self.runtime.quiet or not main)
            started = time.perf_counter()
            stats = self.adapter.fit_epoch(batches, learning_rate=lr, on_step=lambda loss, bar=bar: self._step(bar, loss))
            train_seconds = time.perf_counter() - started
            bar.close()
            val_loss, val_accuracy = validation_scores(self.val_split.y, self.adapter.predict(self.val_split.x))
            row = {"epoch": epoch + 1, "train_loss": stats.loss, "train_accuracy": stats.accuracy,
                   "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr,
                   "seconds": time.perf_counter() - started}
            if stats.data_wait_seconds is not None and train_seconds > 0:
                row["data_wait"] = stats.data_wait_seconds / train_seconds  # logged; not a history column
            self._select(epoch + 1, row[training.select_metric])
            self.state.train_seconds += train_seconds
            self.state.samples_seen += stats.samples
            self.state.history = [r for r in self.state.history if r["epoch"] <= epoch] + [row]
            self.state.epochs_done = epoch + 1
            if training.patience and self.state.stale_epochs >= training.patience:
                self.state.stopped_early = True
                if main:
                    print(f"early stopping: no {training.select_metric} improvement for {training.patience} epochs")
            if main:
                self._save_state()
                self._log(row)
            self.processes.barrier()

    def _step(self, bar, loss: float) -> None:
        self._steps += 1
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        maybe_kill(self._steps, self._kill_limit)

    def _select(self, epoch: int, value: float) -> None:
        if is_better(self.training.select_metric, value, self.state.best_value):
            self.state.best_value, self.state.best_epoch, self.state.stale_epochs = value, epoch, 0
            if self.processes.is_main:
                self.adapter.save_model(self.run_dir / self.adapter.model_file)
                kill_point("after_model_save")
        else:
            self.state.stale_epochs += 1

    def _log(self, row: dict) -> None:
        if self._tb is None:
            from common.runs.tensorboard import ScalarWriter

            self._tb = ScalarWriter(self.run_dir / "tb")
        self._tb.epoch(row)
        print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
              f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}  lr {row['lr']:.2e}  "
              f"{row['seconds']:.1f}s" + (f"  data wait {row['data_wait']:.1%}" if "data_wait" in row else ""),
              flush=True)

    # ---- the end of a run -----------------------------------------------------------------------
    def finish(self, record: RunRecord) -> None:
        """Predict val and test with the selected model; write predictions.csv and the outcome. Scoring
        (metrics.json) is the evaluation layer's: the trainers call common.evaluation.metrics.report_finished_run."""
        if self._tb is not None:
            self._tb.close()
        if not self.state.best_epoch:
            raise ConfigError(f"{self.run_dir}: no epoch had a finite {self.training.select_metric}; "
                              "nothing to select (lower --lr?)")
        self.adapter.load_model(self.run_dir / self.adapter.model_file)
        started = time.perf_counter()
        parts = {k: [] for k in ("split", "sample_ids", "subject_ids", "y_true", "probabilities")}
        for name in ("val", "test"):
            split = self.dataset.split(name)
            if not len(split):
                continue
            parts["probabilities"].append(self.adapter.predict(split.x))
            parts["split"] += [name] * len(split)
            parts["sample_ids"] += split.sample_ids
            parts["subject_ids"] += split.subject_ids
            parts["y_true"].append(split.y)
        split, y_true = np.array(parts["split"]), np.concatenate(parts["y_true"])
        probabilities = np.concatenate(parts["probabilities"])
        threshold = None
        if self.training.decision == "youden":  # the operating point, chosen on val only
            threshold = youden_threshold(y_true[split == "val"], probabilities[split == "val"])
        write_predictions(self.run_dir, classes=self.dataset.classes, split=parts["split"],
                          sample_ids=parts["sample_ids"], subject_ids=parts["subject_ids"], y_true=y_true,
                          probabilities=probabilities, threshold=threshold)
        kill_point("after_predictions")
        s = self.state
        outcome = Outcome(epochs_run=s.epochs_done, best_epoch=s.best_epoch, best_value=float(s.best_value),
                          stopped_early=s.stopped_early, train_seconds=s.train_seconds,
                          samples_per_second=s.samples_seen / s.train_seconds if s.train_seconds else None,
                          peak_memory_bytes=self.adapter.peak_memory_bytes(),
                          predict_seconds=time.perf_counter() - started, threshold=threshold)
        write_record(self.run_dir, replace(record, outcome=outcome))
