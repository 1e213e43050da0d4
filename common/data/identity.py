"""What makes two runs' data "the same": the content of their preprocessed cache, not where it came from.

The cache folder's name (its key, a run's `data_hash`) hashes the source files' paths, sizes and
modification times, so a cache is found without opening a file. That is the right key for finding a
cache and the wrong test for "same data": copying the dataset anew (same bytes, new mtimes) gives a new
key, and runs made before and after the copy could no longer be compared or resumed. The content hash
hashes what a model is trained and tested on: the classes, the preprocessing settings, every kept
sample's id, subject, label and source split, and the preprocessed volumes themselves — not paths,
locations or times. It is written into the cache's meta.json when the cache is built; a cache built
before it existed gets it on first use.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.data.preprocess import PreprocessConfig

CONTENT_HASH_KEY = "content_hash"  # in meta.json
CHUNK = 1 << 24  # bytes read at a time from volumes.npy


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def compute_content_hash(folder: Path, meta: dict) -> str:
    """The content hash of the cache in `folder` with meta.json document `meta` (reads volumes.npy once)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    # the settings as the current PreprocessConfig spells them: a cache written before a setting existed
    # (its meta.json lacks it) holds the same data as one written with the setting's default
    preprocess = PreprocessConfig(**meta["preprocess"]).to_dict()
    digest.update(json.dumps({"classes": meta["classes"], "preprocess": preprocess}, sort_keys=True).encode())
    with (folder / "index.csv").open(newline="") as f:
        for row in csv.DictReader(f):  # without `path`: where the file lay is not what it holds
            digest.update(f"{row['row']}|{row['sample_id']}|{row['subject_id']}|{row['label']}|{row['split']}\n"
                          .encode())
    with (folder / "volumes.npy").open("rb") as f:  # dropped rows are zeros, the same in every copy
        # the array's dtype, shape and bytes; not the .npy header, whose padding numpy versions may change
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        digest.update(f"{dtype.str}|{shape}|{fortran_order}\n".encode())
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:20]


def content_hash(folder: Path) -> str:
    """The cache's content hash from its meta.json, computed and stored there if the cache predates it."""
    meta_path = Path(folder) / "meta.json"
    meta = json.loads(meta_path.read_text())
    if CONTENT_HASH_KEY not in meta:
        meta[CONTENT_HASH_KEY] = compute_content_hash(folder, meta)
        try:  # concurrent writers write the same value; a read-only shared cache just recomputes next time
            atomic_write_text(meta_path, json.dumps(meta, indent=1))
        except OSError:
            pass
    return meta[CONTENT_HASH_KEY]
