"""The preprocessed-volume cache: one memory-mapped array plus an index per (sources, labels, config).

Layout: <cache_root>/volumes/<key>/{volumes.npy, index.csv, meta.json}. The key hashes every
source file's path, size and mtime, every label and subject, the class list and the preprocessing
config: a changed input or setting gives a new key (a rebuild), an unchanged one reuses the cache
without opening any NIfTI file. Whether two caches hold the same data is decided by their content
hash instead (common.data.identity), which survives a copy of the dataset. A cache is built in a
temporary folder and renamed into place, so a crash leaves nothing half-written and two processes
building the same key both end with one complete copy.

A copy of the dataset (same bytes, new paths or modification times: a re-download, an rsync without -t, a
fresh checkout of the data) misses its key, but each cache also records its source digest, the key with
every file's bytes in place of its path and stat. On a miss the source files are read once and hashed, and
a cache with the same digest lends its volumes (hard-linked, else copied) to the new key instead of
preprocessing again: a t1-linear registration of a few hundred scans is half an hour on a CPU.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.atomic import check_free_space, current_umask
from common.data.identity import CONTENT_HASH_KEY, compute_content_hash, file_sha256
from common.data.preprocess import PreprocessConfig, RegistrationFailed, preprocess_array, preprocess_file_qc
from common.data.qc import write_qc_page
from common.data.sources import Source
from common.errors import DataError

CACHE_FORMAT = 2  # 2: meta.json lists dropped samples; index.csv only the kept ones
MAX_LISTED = 20  # invalid samples named in one error
SOURCE_DIGEST_KEY = "source_digest"  # in meta.json: source_digest() of the files the cache was built from


def source_stat(path) -> str:
    """"<size>:<mtime_ns>" of a source file: what `explain --split` compares before drawing on its grid."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def default_cache_root() -> Path:
    """$VOLCLS_CACHE, else ./.cache of the working directory."""
    return Path(os.environ.get("VOLCLS_CACHE", Path.cwd() / ".cache"))


def volumes_root(cache_root: Path | None = None) -> Path:
    """<cache_root>/volumes: one folder per cache key (cache_root: default_cache_root() if None)."""
    return Path(cache_root or default_cache_root()) / "volumes"


def cache_root_of(cache_folder: Path) -> Path:
    """The cache root a cache folder <cache_root>/volumes/<key> lies in (the inverse of volumes_root)."""
    return Path(cache_folder).parent.parent


def find_cache_with_content(cache_root: Path | None, wanted: str) -> Path | None:
    """A cache folder whose stored content hash is `wanted`, or None (caches that predate content hashes
    are not opened: they get theirs on first use)."""
    return _find_cache_by(cache_root, CONTENT_HASH_KEY, wanted)


def _find_cache_by(cache_root: Path | None, meta_key: str, wanted: str) -> Path | None:
    """The first finished cache folder whose meta.json says `meta_key`: `wanted`, or None."""
    for meta_path in sorted(volumes_root(cache_root).glob("*/meta.json")):
        try:
            if json.loads(meta_path.read_text()).get(meta_key) == wanted:
                return meta_path.parent
        except (OSError, ValueError):  # a cache being written, or not ours: not a match
            continue
    return None


def _key_header(source: Source, config: PreprocessConfig) -> bytes:
    settings = config.to_dict()
    for name, default in (("pipeline", "basic"), ("brain_mask", False)):  # added later: old keys stay valid
        if settings[name] == default:
            del settings[name]
    return json.dumps({"format": CACHE_FORMAT, "kind": source.kind, "classes": source.classes, "config": settings},
                      sort_keys=True).encode()


def _stat(path: Path, origin: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError as exc:
        raise DataError(f"{origin}: file not found: {path}") from exc
    except OSError as exc:  # a symbolic link loop, a permission problem
        raise DataError(f"{origin}: {path}: cannot be read ({exc.strerror or exc})") from exc


def cache_key(source: Source, config: PreprocessConfig) -> str:
    """The cache folder's name: the settings, every sample, and every source file's path, size and mtime."""
    digest = hashlib.sha256(_key_header(source, config))
    if source.kind == "medmnist":
        stat = os.stat(source.location)
        digest.update(f"{Path(source.location).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    for s in source.samples:
        file_part = ""
        if s.path is not None:
            stat = _stat(s.path, s.origin)
            file_part = f"{s.path}|{stat.st_size}|{stat.st_mtime_ns}"
        digest.update(f"{s.sample_id}|{s.subject_id}|{s.label}|{s.split}|{file_part}\n".encode())
    return digest.hexdigest()[:20]


def _file_sha256(path: Path) -> str:
    """The file's SHA-256, or a marker no digest matches if it cannot be read (preprocessing then says why)."""
    try:
        return file_sha256(path)
    except OSError as exc:
        return f"unreadable {path}: {exc}"


def source_digest(source: Source, config: PreprocessConfig) -> str:
    """cache_key with each source file's bytes in place of its path, size and mtime: the same for a copy of
    the dataset anywhere. Reads every source file once."""
    digest = hashlib.sha256(_key_header(source, config))
    if source.kind == "medmnist":
        digest.update(_file_sha256(Path(source.location)).encode())
    for s in source.samples:
        file_part = _file_sha256(s.path) if s.path is not None else ""
        digest.update(f"{s.sample_id}|{s.subject_id}|{s.label}|{s.split}|{file_part}\n".encode())
    return digest.hexdigest()[:20]


def find_cache_with_source(cache_root: Path | None, wanted: str) -> Path | None:
    """A finished cache folder built from files with source digest `wanted`, or None."""
    return _find_cache_by(cache_root, SOURCE_DIGEST_KEY, wanted)


def _preprocess_one(job):
    """(volume, None, qc row) or (None, the reason it is invalid, qc row): one bad file must not hide the
    others. The QC row (t1-linear's registration score) is None for the basic pipeline."""
    path, config, qc_dir = job
    try:
        volume, row = preprocess_file_qc(path, config, qc_dir)
        return volume, None, row
    except RegistrationFailed as exc:
        return None, str(exc), exc.qc_row
    except DataError as exc:
        return None, str(exc), None


def _preprocess_array(source: Source, sample, config: PreprocessConfig):
    try:
        return preprocess_array(source.arrays[sample.sample_id], (1.0, 1.0, 1.0), config, origin=sample.origin), None
    except DataError as exc:
        return None, str(exc)


def _volumes(source: Source, config: PreprocessConfig, workers: int, qc_dir: Path | None):
    """(index, volume or None, reason or None, qc row or None) for every sample, in order."""
    if not source.is_nifti:  # in-memory arrays (MedMNIST): cheap, no pool needed
        for i, s in enumerate(source.samples):
            yield (i, *_preprocess_array(source, s, config), None)
        return
    jobs = [(s.path, config, qc_dir) for s in source.samples]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield from ((i, *r) for i, r in enumerate(pool.map(_preprocess_one, jobs, chunksize=4)))
    else:
        yield from ((i, *_preprocess_one(job)) for i, job in enumerate(jobs))


def invalid_samples_error(invalid: dict[str, str], total: int) -> DataError:
    shown = list(invalid.items())[:MAX_LISTED]
    lines = [f"{len(invalid)} of {total} samples are invalid:"] + [f"  {reason}" for _, reason in shown]
    if len(invalid) > MAX_LISTED:
        lines.append(f"  ... and {len(invalid) - MAX_LISTED} more")
    lines.append("fix or remove them, or pass --drop-invalid to train without them (they are then listed in the run)")
    return DataError("\n".join(lines))


def _write_cache(folder: Path, source: Source, config: PreprocessConfig, workers: int, progress: bool,
                 drop_invalid: bool, digest: str) -> None:
    n = len(source.samples)
    check_free_space(folder, n * int(np.prod(config.shape)) * np.dtype(config.dtype).itemsize, f"the cache of {n} volumes")
    volumes = np.lib.format.open_memmap(folder / "volumes.npy", mode="w+", dtype=config.dtype, shape=(n, *config.shape))
    invalid: dict[str, str] = {}
    qc_dir = folder / "qc" if config.pipeline == "t1-linear" else None
    qc_rows = []
    for i, volume, reason, qc_row in tqdm(_volumes(source, config, workers, qc_dir), total=n, desc="preprocess",
                                          unit="vol", disable=not progress):
        if reason is None:
            volumes[i] = volume
        else:
            invalid[source.samples[i].sample_id] = reason
        if qc_row is not None:
            qc_rows.append({"sample_id": source.samples[i].sample_id, **qc_row})
    volumes.flush()
    del volumes
    if qc_rows:
        page = write_qc_page(qc_dir, qc_rows)
        if progress:
            print(f"t1-linear QC: {page}", file=sys.stderr)
    if invalid and not drop_invalid:
        raise invalid_samples_error(invalid, n)
    if len(invalid) == n:
        raise invalid_samples_error(invalid, n)
    _write_index_and_meta(folder, source, config, invalid, digest)


def _lend_volumes(folder: Path, twin: Path, source: Source, config: PreprocessConfig, digest: str) -> None:
    """A cache in `folder` for `source` from the volumes of `twin`, a cache of the same files lying elsewhere
    (same source digest): volumes.npy hard-linked (copied across file systems), the t1-linear QC page
    copied, index.csv and meta.json written for this source's paths."""
    try:
        os.link(twin / "volumes.npy", folder / "volumes.npy")
    except OSError:
        shutil.copyfile(twin / "volumes.npy", folder / "volumes.npy")
    if (twin / "qc").is_dir():
        shutil.copytree(twin / "qc", folder / "qc")
    _write_index_and_meta(folder, source, config, dropped_samples(twin), digest)


def _write_index_and_meta(folder: Path, source: Source, config: PreprocessConfig, invalid: dict[str, str],
                          digest: str) -> None:
    n = len(source.samples)
    with (folder / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        # source_stat: the file's size and mtime when it was read, so `explain` can tell a replaced scan
        writer.writerow(["row", "sample_id", "subject_id", "label", "split", "path", "source_stat"])
        for i, s in enumerate(source.samples):
            if s.sample_id not in invalid:  # dropped rows stay zero in volumes.npy, never referenced
                writer.writerow([i, s.sample_id, s.subject_id, s.label, s.split or "", s.path or "",
                                 source_stat(s.path) if s.path else ""])
    meta = {"format": CACHE_FORMAT, "source": source.kind, "location": source.location,
            "label_column": source.label_column, "classes": source.classes, "preprocess": config.to_dict(), "n": n,
            "dropped": invalid, SOURCE_DIGEST_KEY: digest}
    meta[CONTENT_HASH_KEY] = compute_content_hash(folder, meta)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def dropped_samples(folder: Path) -> dict[str, str]:
    """sample id -> why it was dropped (--drop-invalid), from the cache's meta.json."""
    return json.loads((Path(folder) / "meta.json").read_text()).get("dropped", {})


def build_or_load_cache(source: Source, config: PreprocessConfig, cache_root: Path, *,
                        workers: int = 1, progress: bool = True, drop_invalid: bool = False) -> Path:
    """The cache folder for (source, config), building it if absent.

    Invalid samples are all listed in one error; with `drop_invalid` they are left out and listed in
    meta.json. A cache built with drops is refused without `drop_invalid`, so dropping is never silent.
    """
    folder = volumes_root(cache_root) / cache_key(source, config)
    if not (folder / "meta.json").is_file():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_builds(folder.parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-{os.getpid()}-", dir=folder.parent))
        except OSError as exc:  # a read-only or foreign cache: one line, before any scan is read
            raise DataError(f"cache {folder.parent}: cannot write a new dataset's cache there ({exc.strerror or exc}); "
                            "choose a writable --cache-dir (or $VOLCLS_CACHE)") from None
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: others sharing the cache could not read it
        try:
            digest = source_digest(source, config)
            try:
                if twin := find_cache_with_source(cache_root, digest):
                    if progress:
                        print(f"cache: the same files as {twin} (the dataset copied anew): its volumes are reused",
                              file=sys.stderr)
                    _lend_volumes(tmp, twin, source, config, digest)
                else:
                    _write_cache(tmp, source, config, workers, progress, drop_invalid, digest)
            except DataError as exc:
                raise _with_qc_kept(exc, tmp, folder) from None
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / "meta.json").is_file():  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    dropped = dropped_samples(folder)
    if dropped and not drop_invalid:
        raise invalid_samples_error(dropped, len(source.samples))
    return folder


def _with_qc_kept(error: DataError, tmp: Path, folder: Path) -> DataError:
    """A failed t1-linear build keeps its QC page (beside where the cache would have been), so the failed
    registrations can be looked at; the error says where."""
    if not (tmp / "qc" / "index.html").is_file():
        return error
    kept = folder.with_name(folder.name + "-qc-failed")
    shutil.rmtree(kept, ignore_errors=True)
    shutil.move(str(tmp / "qc"), str(kept))
    return DataError(f"{error}\nt1-linear QC page of this attempt: {kept / 'index.html'}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def remove_stale_builds(volumes_dir: Path) -> list[Path]:
    """Delete the temporary folders `.<key>-<pid>-*` of cache builds whose process is gone (killed)."""
    removed = []
    for tmp in Path(volumes_dir).glob(".*-*-*"):
        parts = tmp.name.split("-")
        if tmp.is_dir() and len(parts) >= 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def open_volumes(folder: Path) -> np.ndarray:
    """The cached volumes (N, D, H, W), memory-mapped read-only."""
    return np.load(Path(folder) / "volumes.npy", mmap_mode="r")
