"""Seeded, label-stratified, subject-grouped splits, shared by both trainers through `splits.json`.

A split fixed by the source (manifest `split` column, MedMNIST's official split) takes precedence.
Every split is checked for subject leakage when it is made and again when it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from common.data.sources import SPLIT_NAMES, Sample
from common.errors import DataError


@dataclass(frozen=True)
class SplitConfig:
    ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / val / test, by subject
    seed: int = 42
    folds: int = 0  # > 1: k-fold cross-validation; `fold` is the held-out test fold
    fold: int = 0

    def __post_init__(self):
        ratios = tuple(float(r) for r in self.ratios)
        object.__setattr__(self, "ratios", ratios)
        if len(ratios) != 3 or min(ratios) < 0 or min(ratios[:2]) <= 0 or abs(sum(ratios) - 1) > 1e-6:
            raise DataError(f"split ratios {self.ratios}: expected three non-negative numbers summing to 1, "
                            "with train > 0 and val > 0")
        if not 0 <= self.seed < 2**32:  # scikit-learn's random_state range
            raise DataError(f"split seed {self.seed}: must be in 0..2^32-1")
        if self.folds == 1 or self.folds < 0:
            raise DataError(f"folds {self.folds}: use 0 (ratio split) or at least 2")
        if self.folds and not 0 <= self.fold < self.folds:
            raise DataError(f"fold {self.fold}: must be in 0..{self.folds - 1}")

    def to_dict(self) -> dict:
        return asdict(self)


def split_hash(assignment: dict[str, list[str]]) -> str:
    canonical = json.dumps({k: sorted(assignment.get(k, [])) for k in SPLIT_NAMES}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_no_subject_leak(assignment: dict[str, list[str]], subject_of: dict[str, str], *, origin: str) -> None:
    owner: dict[str, str] = {}
    for split in SPLIT_NAMES:
        for sample_id in assignment.get(split, []):
            subject = subject_of[sample_id]
            if owner.setdefault(subject, split) != split:
                raise DataError(f"{origin}: subject '{subject}' appears in both '{owner[subject]}' and '{split}'")


def _subject_table(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    """(subjects, the label used to stratify each): a subject's most common label."""
    labels_of: dict[str, list[str]] = {}
    for s in samples:
        labels_of.setdefault(s.subject_id, []).append(s.label)
    subjects = sorted(labels_of)
    return subjects, [Counter(labels_of[s]).most_common(1)[0][0] for s in subjects]


def _check_enough_subjects(subject_labels: Sequence[str], needed: int, *, what: str) -> None:
    for label, count in sorted(Counter(subject_labels).items()):
        if count < needed:
            raise DataError(
                f"class '{label}' has {count} subject(s); a stratified {what} needs at least {needed} per class"
            )


def _ratio_split(subjects, labels, config: SplitConfig) -> dict[str, list[str]]:
    train_r, val_r, test_r = config.ratios
    needed = 2 + (test_r > 0)  # train and val always, test unless its ratio is 0
    _check_enough_subjects(labels, needed, what=f"train/val/test split {config.ratios}")
    train, train_labels, test = list(subjects), list(labels), []
    try:
        if test_r > 0:
            train, test, train_labels, _ = train_test_split(
                train, train_labels, test_size=test_r, stratify=train_labels, random_state=config.seed)
        train, val = train_test_split(train, test_size=val_r / (train_r + val_r), stratify=train_labels,
                                      random_state=config.seed)
    except ValueError as exc:  # sklearn: a split too small to hold every class
        raise DataError(f"cannot stratify {len(subjects)} subjects with ratios {config.ratios}: {exc}") from exc
    return {"train": train, "val": val, "test": test}


def _kfold_split(subjects, labels, config: SplitConfig) -> dict[str, list[str]]:
    """Fold `config.fold` is the test set; val is carved from the rest at the val : train ratio."""
    _check_enough_subjects(labels, config.folds, what=f"{config.folds}-fold split")
    folds = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    train_idx, test_idx = list(folds.split(subjects, labels, groups=subjects))[config.fold]
    val_r = config.ratios[1] / (config.ratios[0] + config.ratios[1])
    train, val = train_test_split([subjects[i] for i in train_idx], test_size=val_r,
                                  stratify=[labels[i] for i in train_idx], random_state=config.seed)
    return {"train": train, "val": val, "test": [subjects[i] for i in test_idx]}


def make_splits(samples: Sequence[Sample], config: SplitConfig) -> dict:
    """The `splits.json` document: method, config, sample ids per split and their hash."""
    subject_of = {s.sample_id: s.subject_id for s in samples}
    if all(s.split is not None for s in samples):
        method = "fixed by source"
        assignment = {k: [s.sample_id for s in samples if s.split == k] for k in SPLIT_NAMES}
    else:
        subjects, labels = _subject_table(samples)
        by_subject = _kfold_split(subjects, labels, config) if config.folds else _ratio_split(subjects, labels, config)
        split_of_subject = {subj: k for k, members in by_subject.items() for subj in members}
        assignment = {k: [s.sample_id for s in samples if split_of_subject[s.subject_id] == k] for k in SPLIT_NAMES}
        method = f"{config.folds}-fold, fold {config.fold}" if config.folds else "stratified by label, grouped by subject"
    check_no_subject_leak(assignment, subject_of, origin="new split")
    for name in ("train", "val"):
        if not assignment[name]:
            raise DataError(f"the {name} split is empty; training needs train and val "
                            "(the model is selected on val, never on test)")
    return {
        "method": method,
        "config": config.to_dict(),
        "subjects": subject_of,
        "sample_ids": {k: sorted(v) for k, v in assignment.items()},
        "hash": split_hash(assignment),
    }


def write_splits(path: Path, splits: dict) -> None:
    from common.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(splits, indent=1))


def read_splits(path: Path) -> dict:
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
        assignment, subject_of = splits["sample_ids"], splits["subjects"]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: splits file not found") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a valid splits.json ({exc})") from exc
    check_no_subject_leak(assignment, subject_of, origin=str(path))
    if split_hash(assignment) != splits.get("hash"):
        raise DataError(f"{path}: sample ids do not match the recorded hash (file edited?)")
    return splits


def class_counts(labels_by_split: dict[str, np.ndarray], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    return {
        split: {c: int((labels == i).sum()) for i, c in enumerate(classes)}
        for split, labels in labels_by_split.items()
    }
