"""The preprocessed-volume cache: one memory-mapped array plus an index per (sources, labels, config).

Layout: <cache_root>/volumes/<key>/{volumes.npy, index.csv, meta.json}. The key hashes every
source file's path, size and mtime, every label and subject, the class list and the preprocessing
config: a changed input or setting gives a new key (a rebuild), an unchanged one reuses the cache
without opening any NIfTI file. A cache is built in a temporary folder and renamed into place, so
a crash leaves nothing half-written and two processes building the same key both end with one
complete copy.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.atomic import current_umask
from common.data.preprocess import PreprocessConfig, preprocess_array, preprocess_file
from common.data.sources import Source
from common.errors import DataError

CACHE_FORMAT = 1


def default_cache_root() -> Path:
    """$VOLCLS_CACHE, else ./.cache of the working directory."""
    return Path(os.environ.get("VOLCLS_CACHE", Path.cwd() / ".cache"))


def cache_key(source: Source, config: PreprocessConfig) -> str:
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "kind": source.kind, "classes": source.classes, "config": config.to_dict()}
    digest.update(json.dumps(header, sort_keys=True).encode())
    if source.kind == "medmnist":
        stat = os.stat(source.location)
        digest.update(f"{Path(source.location).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    for s in source.samples:
        file_part = ""
        if s.path is not None:
            try:
                stat = s.path.stat()
            except FileNotFoundError as exc:
                raise DataError(f"{s.origin}: file not found: {s.path}") from exc
            file_part = f"{s.path}|{stat.st_size}|{stat.st_mtime_ns}"
        digest.update(f"{s.sample_id}|{s.subject_id}|{s.label}|{s.split}|{file_part}\n".encode())
    return digest.hexdigest()[:20]


def _preprocess_one(job):
    path, config = job
    return preprocess_file(path, config)


def _write_cache(folder: Path, source: Source, config: PreprocessConfig, workers: int, progress: bool) -> None:
    n = len(source.samples)
    volumes = np.lib.format.open_memmap(folder / "volumes.npy", mode="w+", dtype=config.dtype, shape=(n, *config.shape))
    bar = tqdm(total=n, desc="preprocess", unit="vol", disable=not progress)
    if source.is_nifti:
        jobs = [(s.path, config) for s in source.samples]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, volume in enumerate(pool.map(_preprocess_one, jobs, chunksize=4)):
                    volumes[i] = volume
                    bar.update()
        else:
            for i, job in enumerate(jobs):
                volumes[i] = _preprocess_one(job)
                bar.update()
    else:  # in-memory arrays (MedMNIST): cheap, no pool needed
        for i, s in enumerate(source.samples):
            volumes[i] = preprocess_array(source.arrays[s.sample_id], (1.0, 1.0, 1.0), config, origin=s.origin)
            bar.update()
    bar.close()
    volumes.flush()
    del volumes
    with (folder / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "sample_id", "subject_id", "label", "split", "path"])
        for i, s in enumerate(source.samples):
            writer.writerow([i, s.sample_id, s.subject_id, s.label, s.split or "", s.path or ""])
    meta = {"format": CACHE_FORMAT, "source": source.kind, "location": source.location,
            "label_column": source.label_column, "classes": source.classes, "preprocess": config.to_dict(), "n": n}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def build_or_load_cache(source: Source, config: PreprocessConfig, cache_root: Path, *,
                        workers: int = 1, progress: bool = True) -> Path:
    """The cache folder for (source, config), building it if absent."""
    folder = Path(cache_root) / "volumes" / cache_key(source, config)
    if (folder / "meta.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: others sharing the cache could not read it
    try:
        _write_cache(tmp, source, config, workers, progress)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def open_volumes(folder: Path) -> np.ndarray:
    """The cached volumes (N, D, H, W), memory-mapped read-only."""
    return np.load(Path(folder) / "volumes.npy", mmap_mode="r")
