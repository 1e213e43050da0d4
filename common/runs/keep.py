"""Keep finished runs' records beside the results they feed, so a result set outlives the machine.

A run directory under `runs/` holds weights and resume state (megabytes, ignored by git) and is lost
when a session gets a new machine; a result set that takes several sessions (three seeds of a 64³
model, a 60-run robustness matrix) then cannot be finished, because its tables are made from every
run's predictions. `keep` copies the four small files a table or report reads (tens of kilobytes) into
a committed folder:

    <into>/<run name>/config.json, history.csv, predictions.csv, metrics.json    (a run; no weights)
    <into>/<cv name>/plan.json, <model>/fold<i>-seed<s>/<the same four files>    (a cross-validation)

A kept record reads as a finished run (its config.json has the outcome): `score`, `report` and the
tables read it directly, and `restore` puts a kept cross-validation back under a cv root, where `cv`
counts its kept runs as finished and trains only the rest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.atomic import current_umask
from common.errors import DataError
from common.runs.cv import PLAN_FILE, is_finished, read_plan
from common.runs.record import RECORD_FILE

RECORD_FILES = (RECORD_FILE, "history.csv", "predictions.csv", "metrics.json")


def keep(path: Path, into: Path) -> list[Path]:
    """Keep a run directory, or every finished run of a cross-validation folder; return what is kept."""
    path = Path(path)
    if (path / PLAN_FILE).is_file():
        return keep_cv(path, Path(into))
    return [keep_record(path, Path(into))]


def keep_record(run_dir: Path, into: Path) -> Path:
    """Copy `run_dir`'s record into `into/<run name>/` in one rename; return that folder.

    Keeping the same record again is a no-op; a different record under the same name is refused
    (a kept record is a result: replacing it silently would change a committed table).
    """
    run_dir, into = Path(run_dir), Path(into)
    missing = [name for name in RECORD_FILES if not (run_dir / name).is_file()]
    if missing:
        raise DataError(f"{run_dir}: not a finished run (no {', '.join(missing)}); "
                        "only a run whose metrics.json is written can be kept")
    return _copy_whole(run_dir, into / run_dir.name, RECORD_FILES)


def keep_cv(root: Path, into: Path) -> list[Path]:
    """plan.json and every finished run of the cross-validation `root` into `into/<cv name>/`, in cv's own
    layout; runs not finished yet are left out (keep again when they are)."""
    plan = read_plan(root)  # refuses a damaged plan before anything is copied
    target = into / root.name
    _copy_whole(root, target, (PLAN_FILE,), merge=True)
    return [keep_record(run_dir, target / model) for model, _, _, run_dir in plan.jobs(root) if is_finished(run_dir)]


def restore_cv(kept: Path, cv_root: Path) -> list[Path]:
    """Put a kept cross-validation back as `cv_root/<cv name>/` (plan.json and its finished runs), so that
    rerunning the same `cv` command trains only the runs that are not kept; return the runs restored.

    A run already finished there stays as it is; an unfinished one (a training begun on this machine) is
    refused by name rather than replaced.
    """
    kept, cv_root = Path(kept), Path(cv_root)
    plan = read_plan(kept)
    target = cv_root / kept.name
    _copy_whole(kept, target, (PLAN_FILE,), merge=True)
    restored = []
    for model, _, _, kept_run in plan.jobs(kept):
        if not kept_run.is_dir():
            continue
        here = target / model / kept_run.name
        if here.exists() and not is_finished(here):
            raise DataError(f"{here}: an unfinished run is here, and {kept_run} holds a finished one; remove "
                            "one of them (the kept record is the result the committed tables were made from)")
        if not here.exists():
            restored.append(keep_record(kept_run, target / model))
    return restored


@contextmanager
def keeping(cv_folder: Path, into: Path) -> Iterator[None]:
    """`cv --keep-into`: restore `into/<cv name>` (if kept) before the body, keep every finished run after it,
    also when the body fails (a failed run, an interruption): what finished is never lost."""
    cv_folder, into = Path(cv_folder), Path(into)
    if (into / cv_folder.name / PLAN_FILE).is_file():
        restored = restore_cv(into / cv_folder.name, cv_folder.parent)
        print(f"restored {len(restored)} kept runs from {into / cv_folder.name}", flush=True)
    try:
        yield
    finally:
        if (cv_folder / PLAN_FILE).is_file():  # no plan: cv refused its settings before anything ran
            print(f"kept {len(keep_cv(cv_folder, into))} finished runs in {into / cv_folder.name}", flush=True)


def _copy_whole(source: Path, target: Path, names: tuple[str, ...], *, merge: bool = False) -> Path:
    """`names` from `source` into the folder `target`, which appears complete or not at all.

    An existing `target` with the same files is kept as it is; one whose files differ is refused.
    merge=True: `target` may hold other things too (a cv folder's runs); its files are written one by one.
    """
    if target.exists():
        differing = [n for n in names if (target / n).is_file() and (target / n).read_bytes() != (source / n).read_bytes()]
        if differing:
            raise DataError(f"{target}: already holds another record of {source.name} ({', '.join(differing)} "
                            "differ); remove that folder to keep this one instead")
        missing = [n for n in names if not (target / n).is_file()]
        if not missing:
            return target
        if not merge:
            raise DataError(f"{target}: an incomplete kept record (no {', '.join(missing)}); remove it and keep again")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copied into a hidden folder beside the target, then renamed: an interrupted copy never leaves a
    # kept record with some of its files missing.
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in names:
            shutil.copy2(source / name, partial / name)
        if merge and target.exists():
            for name in names:
                os.replace(partial / name, target / name)
            partial.rmdir()
        else:
            os.chmod(partial, 0o777 & ~current_umask())  # mkdtemp makes it 0700
            os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
