"""The run record: `config.json`, written from one dataclass by one function and read back typed.

Each fact is stored once: the resolved precision and why, the device, parameters, FLOPs, the data
and split hashes, the classes, the model and training configs, library versions and the machine.
The report, resume and `predict` read it through `read_record`.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common.atomic import atomic_write_text
from common.data.cache import volumes_root
from common.data.identity import content_hash
from common.data.preprocess import PreprocessConfig
from common.data.splits import SplitConfig
from common.errors import ConfigError, DataError
from common.models import PACKAGES
from common.runs.config import RESUMABLE_TRAINING_FIELDS, TrainConfig
from common.runs.presets import canonical_preset
from common.runs.typed import from_jsonable, to_jsonable

RECORD_FILE = "config.json"
RECORD_FORMAT = 2


@dataclass(frozen=True)
class DataRecord:
    """What the run was trained and tested on (PreparedDataset.record())."""

    source: str  # manifest | folder | medmnist | demo | bids
    location: str
    label_column: str
    classes: tuple[str, ...]  # in order: index i is column prob_<classes[i]>
    preprocess: PreprocessConfig
    split: SplitConfig
    split_method: str
    data_hash: str  # the cache key: finds the cache folder (common.data.cache)
    split_hash: str
    class_counts: dict = field(default_factory=dict)  # split -> class -> count
    dropped: dict = field(default_factory=dict)  # sample id -> why --drop-invalid left it out
    name: str | None = None  # --dataset-name
    licence: str | None = None  # --dataset-licence
    # what "the same data" compares (common.data.identity); None in runs recorded before it existed
    content_hash: str | None = None


def data_identity(data: DataRecord, cache_root: Path | None = None) -> str:
    """The one test of "same data" (reports, summaries, resume): the recorded content hash; for a run
    recorded before content hashes, that of its cache folder if the cache is still here (the folder its
    key names holds what the run read), else its cache key, which then matches only itself."""
    if data.content_hash:
        return data.content_hash
    folder = volumes_root(cache_root) / data.data_hash
    if (folder / "meta.json").is_file():
        return content_hash(folder)
    return f"cache key {data.data_hash}"


@dataclass(frozen=True)
class PrecisionDecision:
    requested: str  # auto | fp32 | bf16 | fp16
    resolved: str  # fp32 | bf16 | fp16
    reason: str  # one sentence: why `resolved`
    measurements: dict = field(default_factory=dict)  # what a probe measured, if one ran


@dataclass(frozen=True)
class Outcome:
    """Written when the run finishes (predictions.csv is then complete)."""

    epochs_run: int
    best_epoch: int
    best_value: float  # of training.select_metric, on val
    stopped_early: bool
    train_seconds: float
    samples_per_second: float | None
    peak_memory_bytes: int
    predict_seconds: float
    threshold: float | None = None  # --decision youden: class 1's probability threshold, chosen on val


@dataclass(frozen=True)
class RunRecord:
    model: str  # the package that trained it: torch_resnet | tf_transformer
    preset: str
    model_config: dict  # the package's own typed config, as its to_dict()
    data: DataRecord
    training: TrainConfig
    precision: PrecisionDecision
    device: str
    options: dict  # the package's runtime options, resolved (layout, compile, distribution...)
    parameters: int
    flops_per_sample: int  # forward, multiply-add = 2
    world_size: int
    versions: dict  # library -> version
    machine: str
    created: str  # UTC, ISO 8601
    outcome: Outcome | None = None
    format: int = RECORD_FORMAT

    def identity(self) -> RunIdentity:
        return RunIdentity(self.model, self.preset, self.model_config, self.data, self.training, self.precision)


@dataclass(frozen=True)
class RunIdentity:
    """Everything that defines a run: a resume must match it (except resumable training fields).
    Known before the model is built, so a refused resume builds nothing."""

    model: str
    preset: str
    model_config: dict
    data: DataRecord
    training: TrainConfig
    precision: PrecisionDecision

    def fields(self, cache_root: Path | None = None) -> dict:
        training = to_jsonable(self.training)
        return {"model": self.model, "preset": canonical_preset(self.preset, notice=False), "model_config": self.model_config,
                "data": data_identity(self.data, cache_root), "split_hash": self.data.split_hash,
                "classes": list(self.data.classes), "precision": self.precision.resolved,
                **{f"training.{k}": v for k, v in training.items() if k not in RESUMABLE_TRAINING_FIELDS}}


def identity_differences(stored: RunIdentity, new: RunIdentity, cache_root: Path | None = None) -> list[str]:
    """'field: old -> new' for each difference that forbids resuming `stored` as `new` (`cache_root`: where
    the caches are, for a stored run recorded before content hashes)."""
    old_id, new_id = stored.fields(cache_root), new.fields(cache_root)
    out = []
    for key in old_id:
        if key == "model_config":
            for name in sorted(set(old_id[key]) | set(new_id[key])):
                a, b = old_id[key].get(name), new_id[key].get(name)
                if to_jsonable(a) != to_jsonable(b):
                    out.append(f"model_config.{name}: {a} -> {b}")
        elif to_jsonable(old_id[key]) != to_jsonable(new_id[key]):
            out.append(f"{key}: {old_id[key]} -> {new_id[key]}")
    if new.training.epochs < stored.training.epochs:
        out.append(f"training.epochs: {stored.training.epochs} -> {new.training.epochs} (may only be raised)")
    return out


def data_record(dataset) -> DataRecord:
    """The DataRecord of a common.data.dataset.PreparedDataset. The demo is recorded by name: its files live
    in this machine's cache, and a kept record (committed, read on other machines) names no machine's path."""
    location = "demo" if dataset.source_kind == "demo" else dataset.location
    return DataRecord(source=dataset.source_kind, location=location, label_column=dataset.label_column,
                      classes=tuple(dataset.classes), preprocess=dataset.preprocess, split=dataset.split_config,
                      split_method=dataset.splits["method"], data_hash=dataset.data_hash,
                      split_hash=dataset.split_hash, class_counts=dataset.class_counts(), dropped=dict(dataset.dropped),
                      name=dataset.name, licence=dataset.licence, content_hash=dataset.content_hash)


def machine_description() -> str:
    from common.runs.hardware import cpu_description

    return f"{platform.system()} {platform.machine()}, {cpu_description()}, Python {platform.python_version()}"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_record(run_dir: Path, record: RunRecord) -> None:
    atomic_write_text(Path(run_dir) / RECORD_FILE, json.dumps(to_jsonable(record), indent=1) + "\n")


def read_record(run_dir: Path) -> RunRecord:
    path = Path(run_dir) / RECORD_FILE
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found (is {run_dir} a run directory?)") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(values, dict) or values.get("format") != RECORD_FORMAT:
        found = values.get("format") if isinstance(values, dict) else None
        raise ConfigError(f"{path}: run record format {found!r}, this version reads {RECORD_FORMAT} "
                          "(made by another version of the tool: retrain into a new --run-dir)")
    record = from_jsonable(RunRecord, values, origin=str(path))
    if record.model not in PACKAGES:
        raise ConfigError(f"{path}: model '{record.model}' is not one of {list(PACKAGES)}")
    _check_model_fits_data(record, path)
    return record


def _check_model_fits_data(record: RunRecord, path: Path) -> None:
    """The network's input shape and class count are the data's (presets name no shape): a record whose
    model_config disagrees with its own data section was edited or mixed from two runs."""
    shape, classes = record.model_config.get("input_shape"), record.model_config.get("num_classes")
    if shape is not None and tuple(shape) != tuple(record.data.preprocess.shape):
        raise DataError(f"{path}: model_config.input_shape {tuple(shape)} differs from data.preprocess.shape "
                        f"{tuple(record.data.preprocess.shape)}: the record was edited or mixed from two runs")
    if classes is not None and classes != len(record.data.classes):
        raise DataError(f"{path}: model_config.num_classes {classes} differs from the {len(record.data.classes)} "
                        f"classes in data.classes: the record was edited or mixed from two runs")


def is_run_dir(run_dir: Path) -> bool:
    return (Path(run_dir) / RECORD_FILE).is_file()
