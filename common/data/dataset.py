"""From a data argument to cached, split arrays that either framework reads.

`prepare_dataset` = source -> cache (preprocessed volumes) -> splits.json -> one memory-mapped
array per split. Both trainers call it with the same arguments and get the same files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from common.data.bids import is_bids_root, read_bids
from common.data.cache import (
    MAX_LISTED,
    build_or_load_cache,
    cache_root_of,
    default_cache_root,
    dropped_samples,
    invalid_samples_error,
    open_volumes,
)
from common.data.demo import demo_source
from common.data.identity import content_hash
from common.data.preprocess import PreprocessConfig
from common.data.sources import SPLIT_NAMES, Source, read_folder, read_manifest, read_medmnist
from common.data.splits import SplitConfig, make_splits, read_splits, write_splits
from common.errors import DataError


@dataclass
class SplitData:
    name: str
    x: np.ndarray  # (N, D, H, W), memory-mapped, storage dtype
    y: np.ndarray  # (N,) int64 class indices
    sample_ids: list[str]
    subject_ids: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class PreparedDataset:
    folder: Path  # the cache folder
    split_folder: Path  # holds splits.json and <split>.npy
    source_kind: str
    location: str
    label_column: str
    classes: list[str]
    preprocess: PreprocessConfig
    splits: dict  # the splits.json document
    split_config: SplitConfig
    dropped: dict = field(default_factory=dict)  # sample id -> why --drop-invalid left it out
    name: str | None = None  # the user's name for the dataset (reports)
    licence: str | None = None  # the user's licence / credit line (reports)

    @property
    def splits_path(self) -> Path:
        return self.split_folder / "splits.json"

    @property
    def data_hash(self) -> str:
        return self.folder.name

    @property
    def cache_root(self) -> Path:
        """Where this cache lies: the root that also holds the timed probes' results."""
        return cache_root_of(self.folder)

    @cached_property
    def content_hash(self) -> str:
        """What is in the cache, wherever its files came from (common.data.identity)."""
        return content_hash(self.folder)

    @property
    def split_hash(self) -> str:
        return self.splits["hash"]

    @cached_property
    def index(self) -> dict[str, dict]:
        """index.csv rows by sample id."""
        return _read_index(self.folder)

    def split(self, name: str) -> SplitData:
        if name not in SPLIT_NAMES:
            raise DataError(f"split '{name}' is not one of {list(SPLIT_NAMES)}")
        index = self.index
        ids = self.splits["sample_ids"][name]
        rows = [index[i] for i in ids]
        x = np.load(self.split_folder / f"{name}.npy", mmap_mode="r")
        y = np.array([self.classes.index(r["label"]) for r in rows], dtype=np.int64)
        return SplitData(name, x, y, ids, [r["subject_id"] for r in rows])

    def class_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in SPLIT_NAMES:
            y = self.split(name).y
            out[name] = {c: int((y == i).sum()) for i, c in enumerate(self.classes)}
        return out


def _read_index(folder: Path) -> dict[str, dict]:
    with (folder / "index.csv").open(newline="") as f:
        return {row["sample_id"]: row for row in csv.DictReader(f)}


def _split_folder_name(splits_config: SplitConfig, source: Source) -> str:
    fixed = all(s.split is not None for s in source.samples)
    text = "fixed" if fixed else json.dumps(splits_config.to_dict(), sort_keys=True)
    return "split-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _write_split_arrays(folder: Path, cache_folder: Path, splits: dict) -> None:
    volumes = open_volumes(cache_folder)
    index = _read_index(cache_folder)
    for name in SPLIT_NAMES:
        rows = [int(index[i]["row"]) for i in splits["sample_ids"][name]]

        def write(tmp: Path, rows=rows):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=volumes.dtype, shape=(len(rows), *volumes.shape[1:]))
            for j, row in enumerate(rows):  # row by row: never more than one volume in memory
                out[j] = volumes[row]
            out.flush()

        atomic_write(folder / f"{name}.npy", write)


def open_source(data: str | Path | None, *, label_column: str | None = None,
                classes: Sequence[str] | None = None, cache_root: Path | None = None,
                class_names: Sequence[str] | None = None, bids_suffix: str = "T1w",
                bids_filter: Sequence[str] = ()) -> Source:
    """Pick the source from what `data` names: None or 'demo', a .csv, a .npz, a BIDS dataset or a folder."""
    if data is None or str(data) == "demo":
        return demo_source(cache_root=cache_root, classes=classes)
    path = Path(data)
    if path.suffix == ".csv":
        if not label_column:
            raise DataError(f"{path}: a manifest needs --label-column (e.g. sex or age_group)")
        return read_manifest(path, label_column=label_column, classes=classes)
    if path.suffix == ".npz":
        return read_medmnist(path, classes=classes, class_names=class_names)
    if class_names:
        raise DataError(f"--class-names: only for .npz files (integer labels); {path} has named labels")
    if is_bids_root(path):
        return read_bids(path, label_column=label_column, suffix=bids_suffix, filters=bids_filter, classes=classes)
    if bids_filter:
        raise DataError(f"--bids-filter: {path} is not a BIDS dataset (no dataset_description.json)")
    if path.is_dir():
        return read_folder(path, classes=classes)
    raise DataError(f"{path}: not a manifest .csv, a MedMNIST .npz or a class-per-folder directory")


def prepare_dataset(data: str | Path | None = None, *, label_column: str | None = None,
                    classes: list[str] | None = None, preprocess: PreprocessConfig | None = None,
                    split: SplitConfig | None = None, cache_root: Path | None = None,
                    workers: int = 1, progress: bool = True, source: Source | None = None,
                    drop_invalid: bool = False, class_names: Sequence[str] | None = None,
                    bids_suffix: str = "T1w", bids_filter: Sequence[str] = ()) -> PreparedDataset:
    cache_root = Path(cache_root or default_cache_root())
    split = split or SplitConfig()
    source = source or open_source(data, label_column=label_column, classes=classes, cache_root=cache_root,
                                   class_names=class_names, bids_suffix=bids_suffix, bids_filter=bids_filter)
    preprocess = (preprocess or PreprocessConfig()).resolved_for(source.kind)
    source, unreadable = without_unreadable_files(source, drop_invalid=drop_invalid)
    folder = build_or_load_cache(source, preprocess, cache_root, workers=workers, progress=progress,
                                 drop_invalid=drop_invalid)
    dropped = dropped_samples(folder)
    if dropped:
        warn_dropped(dropped, f"of {len(source.samples)} samples")
        source = replace(source, samples=[s for s in source.samples if s.sample_id not in dropped])
    split_folder = folder / _split_folder_name(split, source)
    splits_path = split_folder / "splits.json"
    if splits_path.is_file():
        splits = read_splits(splits_path)
    else:
        splits = make_splits(source.samples, split)
        split_folder.mkdir(parents=True, exist_ok=True)
        _write_split_arrays(split_folder, folder, splits)
        write_splits(splits_path, splits)  # last: its presence means the arrays are complete
    dataset = PreparedDataset(folder, split_folder, source.kind, source.location, source.label_column,
                              list(source.classes), preprocess, splits, split, {**unreadable, **dropped})
    check_every_class_present(dataset)
    return dataset


def warn_dropped(reasons: dict[str, str], what: str) -> None:
    """One warning line for what --drop-invalid left out: the count and the first MAX_LISTED reasons."""
    listed = "; ".join(list(reasons.values())[:MAX_LISTED]) + (" ..." if len(reasons) > MAX_LISTED else "")
    print(f"warning: --drop-invalid left out {len(reasons)} {what}: {listed}", file=sys.stderr)


def without_unreadable_files(source: Source, *, drop_invalid: bool) -> tuple[Source, dict[str, str]]:
    """Every sample file that is missing, a broken link or a link loop, listed at once (first MAX_LISTED and a
    count); with drop_invalid they are left out (and listed in the run) instead."""
    unreadable = {}
    for s in source.samples:
        if s.path is None:
            continue
        if s.path.is_symlink() and not s.path.exists():
            unreadable[s.sample_id] = f"{s.origin}: {s.path}: a symbolic link to nothing (broken, or a loop)"
        elif not s.path.exists():
            unreadable[s.sample_id] = f"{s.origin}: file not found: {s.path}"
        elif not s.path.is_file():
            unreadable[s.sample_id] = f"{s.origin}: {s.path}: not a file"
    if not unreadable:
        return source, {}
    if not drop_invalid or len(unreadable) == len(source.samples):
        raise invalid_samples_error(unreadable, len(source.samples))
    warn_dropped(unreadable, "unreadable file(s)")
    return replace(source, samples=[s for s in source.samples if s.sample_id not in unreadable]), unreadable


def check_every_class_present(dataset: PreparedDataset) -> None:
    """A class with no sample in train, val or (a non-empty) test cannot be learned, selected or scored."""
    for split, per_class in dataset.class_counts().items():
        if split == "test" and not sum(per_class.values()):
            continue
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            raise DataError(f"class(es) {empty} have no samples in the {split} split "
                            f"(counts {per_class}); check --classes and the labels")
