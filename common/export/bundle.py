"""`python -m common export RUN_DIR | cv/<name>/<model> --out BUNDLE/`: a folder that scores new NIfTI files
with onnxruntime, nibabel and numpy alone.

    BUNDLE/member-<i>.onnx   one graph per run (a fold ensemble has one per fold x seed): logits (B, N)
    BUNDLE/preprocess.json   the run's exact preprocessing (common.data.preprocess.PreprocessConfig)
    BUNDLE/classes.json      class names in output order
    BUNDLE/metadata.json     task, input/output, members, test metrics with CIs, data credit, versions,
                             and the sha256 of every other file (a bundle whose files differ is refused)
    BUNDLE/README.md         the model card

A fold ensemble is one graph per member, not one graph that averages them: each graph is exactly one
trained network, and the runner averages the members' softmax probabilities, the same arithmetic as
the native `predict --run-dir cv/<name>/<model>` (so parity is checkable member by member).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from common.atomic import current_umask
from common.data.identity import file_sha256
from common.errors import ConfigError, DataError
from common.export.card import model_card
from common.export.members import LAYOUT_FILE, member_file
from common.models import NAMES, ModelEntry, by_name, by_package
from common.runs.cv import PLAN_FILE, child_error
from common.runs.ensemble import ensemble_members, ensemble_threshold
from common.runs.record import RunRecord, is_run_dir, now_utc, read_record
from common.runs.typed import to_jsonable

BUNDLE_FORMAT = "volcls-bundle/1"
METADATA_FILE = "metadata.json"
PREPROCESS_FILE = "preprocess.json"
CLASSES_FILE = "classes.json"
CARD_FILE = "README.md"
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "log_loss")


def resolve(path: Path) -> tuple[ModelEntry, list[tuple[Path, RunRecord]]]:
    """The model and its finished members: one run, or a cross-validation's model folder (all its runs)."""
    path = Path(path)
    if is_run_dir(path):
        entry = by_package(read_record(path).model)
    elif (path.parent / PLAN_FILE).is_file():
        if path.name not in NAMES:
            raise ConfigError(f"{path}: name a run directory or a cross-validation's model folder (cv/<name>/<model>)")
        entry = by_name(path.name)
    elif (path / PLAN_FILE).is_file():
        raise ConfigError(f"{path}: a cross-validation folder; name one model's folder in it ({path}/resnet or "
                          f"{path}/transformer)")
    else:
        raise ConfigError(f"{path}: not a run directory (no config.json) nor a cross-validation's model folder")
    members = ensemble_members(path, entry.package)
    for run_dir, record in members:
        if record.outcome is None:
            raise ConfigError(f"{run_dir}: unfinished or failed run (no outcome in config.json); finish it first")
        weights = run_dir / entry.model_file
        if not weights.is_file():
            raise ConfigError(f"{weights}: the run's selected weights are missing")
        if not (run_dir / "metrics.json").is_file():
            raise ConfigError(f"{run_dir}/metrics.json: missing (score the run: python -m common score {run_dir})")
    return entry, members


def export_bundle(path: Path, out: Path) -> Path:
    entry, members = resolve(path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists; choose a new folder (a bundle is never written over another)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        args = [a for run_dir, _ in members for a in ("--run-dir", str(run_dir))]
        result = subprocess.run(entry.command("export", *args, "--out-dir", str(tmp)), capture_output=True, text=True)
        if result.returncode != 0:
            raise DataError(f"{entry.package} export failed: {child_error(result.stderr)}")
        write_bundle_files(tmp, entry, members)
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp made it private
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def decision_of(members: list[tuple[Path, RunRecord]]) -> dict:
    """How the bundle's probabilities become a class, as the runs decided (common.runs.decision)."""
    threshold = ensemble_threshold(members)
    if threshold is None:
        return {"rule": "argmax"}
    positive = members[0][1].data.classes[1]
    return {"rule": "threshold", "class": positive, "threshold": threshold,
            "note": f"predict '{positive}' when its probability is >= the threshold (chosen on val, Youden's J; "
                    "the mean over the members)"}


def write_bundle_files(folder: Path, entry: ModelEntry, members: list[tuple[Path, RunRecord]]) -> None:
    first = members[0][1]
    layout = json.loads((folder / LAYOUT_FILE).read_text())
    (folder / LAYOUT_FILE).unlink()
    preprocess = first.data.preprocess.to_dict()
    (folder / PREPROCESS_FILE).write_text(json.dumps(
        {**preprocess, "note": "t1-linear: N4 bias-field correction and affine registration to nilearn's MNI152 "
                               "template are part of the preprocessing (SimpleITK required)"
         if first.data.preprocess.pipeline == "t1-linear" else "reorient to RAS+, resample to shape, normalise"},
        indent=1))
    (folder / CLASSES_FILE).write_text(json.dumps(list(first.data.classes)))
    member_rows = []
    for index, (run_dir, record) in enumerate(members):
        test = json.loads((run_dir / "metrics.json").read_text())["test"]
        member_rows.append({"file": member_file(index), "run": run_dir.name, "fold": record.data.split.fold
                            if record.data.split.folds else None, "seed": record.training.seed,
                            "test": {k: test.get(k) for k in METRIC_KEYS},
                            "test_ci95": {k: test.get("ci95", {}).get(k) for k in METRIC_KEYS}, "test_n": test["n"]})
    from common.evaluation.report import data_credit

    metadata = {
        "format": BUNDLE_FORMAT, "created": now_utc(),
        "task": f"classification of 3D volumes into {len(first.data.classes)} classes",
        "model": {"package": entry.package, "label": entry.label, "preset": first.preset,
                  "model_config": first.model_config, "parameters": first.parameters},
        "input": {"modality": "3D image volume, NIfTI (.nii / .nii.gz); a single 3-D volume per file",
                  "preprocessing": PREPROCESS_FILE, "layout": layout["input_layout"],
                  "shape": list(first.data.preprocess.shape), "dtype": "float32",
                  "value_range": f"after '{first.data.preprocess.normalize}' normalisation"},
        "output": {"name": "logits", "classes": list(first.data.classes),
                   "probabilities": "softmax of each member's logits, averaged over the members",
                   "decision": decision_of(members)},
        "ensemble": "one graph per member; probabilities averaged" if len(members) > 1 else "a single run",
        "members": member_rows,
        "onnx": {"opset": layout["opset"], "onnx": layout["onnx"], "exporter": "torch.onnx (dynamo)",
                 "batch": "dynamic"},
        "versions": {**first.versions, "python": platform.python_version()},
        "training": {"training": to_jsonable(first.training), "precision": first.precision.resolved,
                     "machine": first.machine},
        "data": {"name": first.data.name, "source": first.data.source, "classes": list(first.data.classes),
                 "content_hash": first.data.content_hash, "class_counts": first.data.class_counts,
                 "credit": data_credit(first.data)},
        "files": {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()},
    }
    (folder / CARD_FILE).write_text(model_card(metadata))
    metadata["files"][CARD_FILE] = file_sha256(folder / CARD_FILE)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")


def read_bundle(folder: Path) -> dict:
    """metadata.json, after checking that every file it lists is there with its checksum."""
    folder = Path(folder)
    path = folder / METADATA_FILE
    if not path.is_file():
        raise DataError(f"{folder}: not a bundle (no {METADATA_FILE}); make one with python -m common export")
    try:
        metadata = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise DataError(f"{path}: not a {BUNDLE_FORMAT} bundle")
    for name, expected in metadata.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file}: missing from the bundle")
        if file_sha256(file) != expected:
            raise DataError(f"{file}: its checksum differs from metadata.json (modified or damaged); "
                            "export the bundle again")
    for needed in (PREPROCESS_FILE, CLASSES_FILE, *(m["file"] for m in metadata.get("members", []))):
        if needed not in metadata.get("files", {}):
            raise DataError(f"{path}: does not list {needed} with a checksum")
    return metadata
