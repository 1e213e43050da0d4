"""BIDS datasets (Brain Imaging Data Structure, bids-specification.readthedocs.io): a small reader on the spec.

    root/dataset_description.json
    root/participants.tsv                      participant_id (sub-<label>) + the label column
    root/sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]

Why not pybids: it indexes every file of a dataset into SQLite and pulls SQLAlchemy, formulaic and pandas
versions of its own, to answer one question here (which anat images exist, with which entities); reading
the layout the specification fixes is about 100 lines and its rules are below, each tested.

Rules:
- labels come from a column of participants.tsv; a participant whose label is `n/a` or empty is left out,
  with a warning that lists them (BIDS uses n/a for "unknown");
- each session is its own sample of the participant (sample id = the file name up to the suffix, subject id =
  participant_id), so subject-grouped splits keep one person's sessions together;
- a participant with no matching image is left out with a warning; an image whose participant has no row
  in participants.tsv is an error (its label is unknown; often a typo in the TSV);
- two matching images for one participant and session (two runs, acquisitions, ...) are an error naming
  both files: choose one with --bids-filter (e.g. run=1, acq=mprage);
- --bids-filter key=value keeps images whose entity `key` is `value` (e.g. ses=M00); an image without
  that entity does not match.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from common.data.sources import (
    Sample,
    Source,
    check_labels_in_classes,
    check_unique_ids,
    resolve_classes,
    strip_nifti_suffix,
)
from common.errors import DataError

DESCRIPTION = "dataset_description.json"
PARTICIPANTS = "participants.tsv"
MISSING = ("", "n/a")
MAX_LISTED = 5


def is_bids_root(path: str | Path) -> bool:
    return (Path(path) / DESCRIPTION).is_file()


def parse_filters(filters: Sequence[str]) -> dict[str, str]:
    """["ses=M00", "acq=mprage"] -> {"ses": "M00", "acq": "mprage"}."""
    parsed = {}
    for item in filters:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value or "-" in key or "_" in value:
            raise DataError(f"--bids-filter {item!r}: expected KEY=VALUE with a BIDS entity key, e.g. ses=M00")
        if key in parsed:
            raise DataError(f"--bids-filter: entity '{key}' given twice")
        parsed[key] = value
    return parsed


def entities(path: Path) -> tuple[dict[str, str], str]:
    """sub-01_ses-M00_run-1_T1w.nii.gz -> ({"sub": "01", "ses": "M00", "run": "1"}, "T1w")."""
    *pairs, suffix = strip_nifti_suffix(path.name).split("_")
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or not value:
            raise DataError(f"{path}: '{pair}' is not a BIDS key-value entity (expected key-value)")
        found[key] = value
    return found, suffix


def read_participants(root: Path, label_column: str) -> tuple[dict[str, str], list[str]]:
    """(participant_id -> label, participants whose label is missing)."""
    path = root / PARTICIPANTS
    if not path.is_file():
        raise DataError(f"{root}: BIDS dataset without {PARTICIPANTS}; the labels are read from one of its "
                        "columns (--label-column)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        for needed in ("participant_id", label_column):
            if needed not in columns:
                raise DataError(f"{path}: no column '{needed}' (columns: {columns})"
                                + (" (choose one with --label-column)" if needed == label_column else ""))
        labels, missing = {}, []
        for line, row in enumerate(reader, start=2):
            participant = (row["participant_id"] or "").strip()
            if not participant.startswith("sub-") or len(participant) == 4:
                raise DataError(f"{path} row {line}: participant_id '{participant}' is not sub-<label>")
            if participant in labels or participant in missing:
                raise DataError(f"{path} row {line}: participant '{participant}' is listed twice")
            label = (row[label_column] or "").strip()
            if label in MISSING:
                missing.append(participant)
            else:
                labels[participant] = label
    return labels, missing


def find_images(root: Path, suffix: str, filters: dict[str, str]) -> list[tuple[Path, dict[str, str]]]:
    """Anatomical images of `suffix` under sub-*/[ses-*/]anat/ whose entities match the filters."""
    found = []
    for path in sorted(root.glob("sub-*/anat/*")) + sorted(root.glob("sub-*/ses-*/anat/*")):
        if not path.name.endswith((".nii", ".nii.gz")) or not path.is_file():
            continue
        keys, file_suffix = entities(path)
        if file_suffix != suffix:
            continue
        folders = path.relative_to(root).parts[:-2]  # ("sub-01",) or ("sub-01", "ses-M00")
        if keys.get("sub") != folders[0][4:] or (len(folders) == 2) != ("ses" in keys) or (
                len(folders) == 2 and keys["ses"] != folders[1][4:]):
            raise DataError(f"{path}: its sub-/ses- entities do not match the folders it is in")
        if all(keys.get(k) == v for k, v in filters.items()):
            found.append((path, keys))
    return found


def read_bids(root: Path, *, label_column: str, suffix: str = "T1w", filters: Sequence[str] = (),
              classes: Sequence[str] | None = None) -> Source:
    root = Path(root)
    if not is_bids_root(root):
        raise DataError(f"{root}: not a BIDS dataset (no {DESCRIPTION})")
    if not label_column:
        raise DataError(f"{root}: a BIDS dataset needs --label-column (a column of {PARTICIPANTS})")
    wanted = parse_filters(filters)
    labels, unlabelled = read_participants(root, label_column)
    samples, seen, images_unlabelled = [], {}, 0
    for path, keys in find_images(root, suffix, wanted):
        participant = f"sub-{keys['sub']}"
        if participant in unlabelled:
            images_unlabelled += 1
            continue
        if participant not in labels:
            raise DataError(f"{path}: participant '{participant}' has no row in {root / PARTICIPANTS}")
        visit = (participant, keys.get("ses"))
        if visit in seen:
            raise DataError(f"{participant}" + (f" session {keys['ses']}" if keys.get("ses") else "")
                            + f": two {suffix} images, {seen[visit].name} and {path.name}; choose one with "
                            "--bids-filter (e.g. run=1 or acq=...)")
        seen[visit] = path
        sample_id = strip_nifti_suffix(path.name).rsplit("_", 1)[0]
        samples.append(Sample(sample_id, participant, labels[participant], path=path.resolve(),
                              origin=str(path.relative_to(root))))
    if not samples and images_unlabelled:  # the images are there: their labels are not
        raise DataError(f"{root / PARTICIPANTS}: every participant with a {suffix} image has no '{label_column}' "
                        f"(n/a or empty for {len(unlabelled)} participant(s)); choose another --label-column")
    if not samples:
        raise DataError(f"{root}: no {suffix} images" + (f" matching {wanted}" if wanted else "")
                        + " under sub-*/[ses-*/]anat/")
    with_images = {s.subject_id for s in samples}
    _warn("without a label (n/a) in " + PARTICIPANTS, unlabelled)
    _warn(f"without a {suffix} image" + (f" matching {wanted}" if wanted else ""),
          [p for p in labels if p not in with_images])
    check_unique_ids(samples)
    class_list = resolve_classes([s.label for s in samples], classes, origin=str(root / PARTICIPANTS))
    check_labels_in_classes(samples, class_list)
    return Source("bids", str(root), samples, class_list, label_column)


def _warn(why: str, participants: list[str]) -> None:
    if participants:
        listed = ", ".join(participants[:MAX_LISTED]) + (" ..." if len(participants) > MAX_LISTED else "")
        print(f"warning: BIDS: {len(participants)} participant(s) {why} left out: {listed}", file=sys.stderr)
