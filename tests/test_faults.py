"""Nothing silently wrong: bad input, kills at every write, and reports that must refuse."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import fake_record, write_nifti

from common.data.dataset import prepare_dataset
from common.data.preprocess import PreprocessConfig, preprocess_file
from common.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = PreprocessConfig(shape=(8, 8, 8), normalize="zscore")


def head(scale: float, shape=(12, 12, 12)) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = np.full(shape, 0.05, np.float64)
    data[3:9, 3:9, 3:9] = 1 + 0.1 * rng.normal(size=(6, 6, 6))
    return data * scale


# ---- preprocessing ------------------------------------------------------------------------------
def test_values_beyond_float16_are_refused_not_cached_as_inf(tmp_path):
    path = write_nifti(tmp_path / "big.nii.gz", head(1e5))
    with pytest.raises(DataError, match=r"big.nii.gz: values up to 1.\d+e\+05 .* exceed float16.s range"):
        preprocess_file(path, PreprocessConfig(shape=(8, 8, 8), normalize="none"))
    out = preprocess_file(path, PreprocessConfig(shape=(8, 8, 8), normalize="none", dtype="float32"))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("scale", [1.0, 1e25, 5e35])
def test_large_finite_intensities_normalise_like_small_ones(tmp_path, scale):
    path = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(head(scale).astype(np.float32), np.eye(4)), path)
    out = preprocess_file(path, PreprocessConfig(shape=(12, 12, 12), normalize="zscore", dtype="float32"))
    reference = preprocess_file(write_nifti(tmp_path / "r.nii.gz", head(1.0)),
                                PreprocessConfig(shape=(12, 12, 12), normalize="zscore", dtype="float32"))
    assert np.allclose(out, reference, atol=1e-3)


def test_complex_images_are_refused_by_name(tmp_path):
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image((head(1.0) + 1j).astype(np.complex64), np.eye(4)), path)
    with pytest.raises(DataError, match="c.nii.gz: complex-valued image"):
        preprocess_file(path, TINY)


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_header_declaring_a_huge_volume_is_refused_before_reading(tmp_path, name, monkeypatch):
    header = nib.Nifti1Header()
    header.set_data_shape((800, 800, 800))
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    raw = header.binaryblock + b"\0" * 4 + np.ones(600, np.float32).tobytes()  # 2.7 kB
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(DataError, match="header declares .* over the limit"):
        preprocess_file(path, TINY)
    monkeypatch.setenv("VOLCLS_MAX_VOXELS", str(10**9))
    with pytest.raises(DataError, match=r"file holds [\d,]+: truncated or a corrupt header"):
        preprocess_file(path, TINY)


def test_misnamed_and_unreadable_paths_get_the_right_message(tmp_path):
    write_nifti(tmp_path / "real.nii.gz", head(1.0))
    (tmp_path / "gz_named.nii").write_bytes((tmp_path / "real.nii.gz").read_bytes())
    with pytest.raises(DataError, match="gz_named.nii: is gzip-compressed but named .nii"):
        preprocess_file(tmp_path / "gz_named.nii", TINY)
    nib.save(nib.Nifti1Image(head(1.0).astype(np.float32), np.eye(4)), tmp_path / "plain.nii")
    (tmp_path / "plain_named.nii.gz").write_bytes((tmp_path / "plain.nii").read_bytes())
    with pytest.raises(DataError, match="plain_named.nii.gz: is an uncompressed NIfTI file named .nii.gz"):
        preprocess_file(tmp_path / "plain_named.nii.gz", TINY)
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(DataError, match="folder.nii.gz: is a directory"):
        preprocess_file(tmp_path / "folder.nii.gz", TINY)
    os.symlink(tmp_path / "loop_b.nii.gz", tmp_path / "loop_a.nii.gz")
    os.symlink(tmp_path / "loop_a.nii.gz", tmp_path / "loop_b.nii.gz")
    with pytest.raises(DataError, match="loop_a.nii.gz: cannot be read"):
        preprocess_file(tmp_path / "loop_a.nii.gz", TINY)


def test_a_class_without_samples_is_refused(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=12)
    with pytest.raises(DataError, match=r"class\(es\) \['c'\] have no samples in the train split"):
        prepare_dataset(manifest, label_column="label", classes=["a", "b", "c"], preprocess=TINY,
                        cache_root=cache_root, progress=False)


def test_excel_manifest_with_bom_and_blank_rows(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=12)
    text = manifest.read_text()
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode() + b",,\n\n")
    dataset = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert sum(len(dataset.split(s)) for s in ("train", "val", "test")) == 12
    lines = text.splitlines()
    manifest.write_text("\n".join([lines[0], lines[1], ",sub99,a", *lines[2:]]) + "\n")
    with pytest.raises(DataError, match="labels.csv row 3: empty 'path'"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)


def test_interrupted_cache_builds_are_cleaned_up(make_manifest, cache_root):
    from common.data.cache import remove_stale_builds

    manifest = make_manifest(n_subjects=12)
    volumes = cache_root / "volumes"
    (volumes / ".abc123-999999999-x1").mkdir(parents=True)  # a build whose process is gone
    (volumes / f".abc123-{os.getpid()}-x2").mkdir()  # one still running (ours)
    prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert not (volumes / ".abc123-999999999-x1").exists()
    assert (volumes / f".abc123-{os.getpid()}-x2").exists()
    assert remove_stale_builds(volumes) == []


# ---- kills at every write of the epoch's end (transformer) ------------------------------------------
def _vit(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tf_transformer", *args], env=env, capture_output=True, text=True,
                          timeout=600)


# In the order the driver reaches them in a run: epoch 1's writes, then the end of the run.
KILL_POINTS = ("after_model_save", "after_state_save", "after_resume_record", "after_history", "after_predictions")


@pytest.mark.slow
def test_a_kill_at_any_write_is_finished_by_the_same_command(make_manifest, cache_root, tmp_path):
    """The same command, killed at each write point in turn and run again: every kill leaves a folder the
    next run resumes (or restarts), and the last run finishes it as one uninterrupted run would. One chain
    of six processes instead of a fresh run per point: each point is still reached (the run dies with
    SIGKILL there) on the folder the previous kill left."""
    from common.runs.record import read_record
    from common.runs.rundir import read_history, read_predictions

    manifest = make_manifest(n_subjects=14)
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16", "--preset",
            "tiny", "--batch-size", "4", "--epochs", "2", "--cache-dir", str(cache_root), "--run-dir", str(run_dir),
            "--workers", "1", "--quiet", "--precision", "fp32"]
    for point in KILL_POINTS:
        killed = _vit(args, {"VOLCLS_KILL_AT": point})
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
    assert not (run_dir / "metrics.json").exists()  # killed after its predictions: not finished yet
    finished = _vit(args)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2]
    assert read_record(run_dir).outcome.epochs_run == 2
    assert set(read_predictions(run_dir).split) == {"val", "test"}
    assert sorted(p.name for p in run_dir.glob("state-*")) == ["state-0001.npz", "state-0002.npz"]
    assert not list(run_dir.glob(".*.tmp*"))  # no temporary file left


# ---- reports that must refuse ---------------------------------------------------------------------
def _run(run_dir, *, y_flip=False, **record):
    from common.runs.record import write_record
    from common.runs.rundir import write_predictions

    ids = [f"t{i}" for i in range(10)]
    y = np.arange(10) % 2
    if y_flip:
        y = y.copy()
        y[:3] = 1 - y[:3]
    probs = np.tile([0.3, 0.7], (10, 1))
    write_predictions(run_dir, classes=["neg", "pos"], split=["test"] * 10, sample_ids=ids, subject_ids=ids,
                      y_true=y, probabilities=probs)
    write_record(run_dir, fake_record(**record))
    return run_dir


def test_report_refuses_runs_on_other_data(tmp_path):
    from common.evaluation.report import build_report

    a = _run(tmp_path / "a", model="tf_transformer")
    b = _run(tmp_path / "b", data_hash="e" * 20)
    with pytest.raises(DataError, match=r"different data: data \(content hash\)"):
        build_report([a, b], tmp_path / "out", n_resamples=10)
    c = _run(tmp_path / "c", y_flip=True)
    with pytest.raises(DataError, match=r"disagree on the true class of 3 test sample\(s\), e.g. \['t0', 't1', 't2'\]"):
        build_report([a, c], tmp_path / "out", n_resamples=10)
    assert not (tmp_path / "out" / "report.md").exists()


def test_equal_models_are_reported_as_equal(tmp_path):
    from common.evaluation.report import build_report

    a = _run(tmp_path / "a", model="tf_transformer")
    b = _run(tmp_path / "b")
    text = build_report([a, b], tmp_path / "out", n_resamples=10).read_text()
    assert "accuracy equals Transformer's" in text and "equal than" not in text
    assert "McNemar" in next(line for line in text.splitlines() if "accuracy equals" in line
                             and "balanced" not in line)


# ---- predict ---------------------------------------------------------------------------------------
def test_predict_inputs(tmp_path, capsys):
    from common.data.inference import input_paths, sample_ids_of
    from torch_resnet.cli import main

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = write_nifti(tmp_path / "x" / "s.nii.gz", head(1.0)), write_nifti(tmp_path / "y" / "s.nii.gz", head(1.0))
    assert sample_ids_of([a, b]) == ["x/s", "y/s"]
    assert sample_ids_of([a]) == ["s"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nx/s.nii.gz,a\n,b\n")
    with pytest.raises(DataError, match="m.csv row 3: empty 'path'"):
        input_paths(None, manifest)
    assert main(["predict", "--run-dir", str(tmp_path), "--out", str(tmp_path / "x"), str(a)]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'x'}: is a directory" in err
    assert main(["predict", "--run-dir", str(tmp_path), "--out", str(tmp_path / "no" / "p.csv"), str(a)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unsafe_keras_file_is_refused_with_one_line(tmp_path):
    import keras

    from tf_transformer.model_file import load_selected_model

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "model.keras")
    with pytest.raises(DataError, match="model.keras: refused by Keras' safe mode"):
        load_selected_model(tmp_path / "model.keras")


def test_runs_that_did_not_learn_are_flagged(tmp_path):
    from common.evaluation.metrics import learning_failure
    from common.evaluation.report import build_report

    single = _run(tmp_path / "a", model="tf_transformer")  # every test prediction is 'pos'
    text = build_report([single], tmp_path / "out", n_resamples=50).read_text()
    assert "**Warning — Transformer did not learn:** every prediction is class #1" in text
    assert "<p class='warning'><strong>Warning — Transformer did not learn" in (tmp_path / "out" / "report.html").read_text()
    good = {"confusion_matrix": [[18, 2], [1, 19]], "balanced_accuracy": 0.925, "ci95": {"balanced_accuracy": [0.85, 0.98]}}
    chance = {**good, "balanced_accuracy": 0.6, "ci95": {"balanced_accuracy": [0.45, 0.75]}}
    assert learning_failure(good) is None
    assert "includes chance (0.500)" in learning_failure(chance)


def test_a_tampered_record_with_a_huge_shape_is_refused_before_allocating(tmp_path, capsys):
    import json

    from common.runs.record import write_record
    from torch_resnet.cli import main

    write_record(tmp_path, fake_record())
    values = json.loads((tmp_path / "config.json").read_text())
    values["data"]["preprocess"]["shape"] = [1000, 1000, 1000]
    (tmp_path / "config.json").write_text(json.dumps(values))
    scan = write_nifti(tmp_path / "scan.nii.gz", head(1.0))
    assert main(["predict", "--run-dir", str(tmp_path), str(scan), "--out", str(tmp_path / "p.csv")]) == 2
    assert "1,000,000,000 voxels per volume, over the limit" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_report_html_shows_hostile_labels_and_titles_as_text(tmp_path):
    """Class names, sample ids and titles come from someone's data: never markup in report.html."""
    from common.evaluation.report import build_report

    hostile = "<img src=x onerror=alert(document.domain)>"
    run = _run(tmp_path / "a", model="tf_transformer", classes=(hostile, "<script>alert(1)</script>"))
    build_report([run], tmp_path / "out", n_resamples=20, title="<script>alert('title')</script>")
    page = (tmp_path / "out" / "report.html").read_text()
    from common.evaluation.report import HTML_SCRIPT

    assert page.count("<script>") == 1 and f"<script>{HTML_SCRIPT}</script>" in page  # only the report's own
    assert "onerror=alert" not in page.replace("&lt;img src=x onerror=alert", "")
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in page
    assert "<title>&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;</title>" in page


def test_report_refuses_an_unfinished_run_and_the_same_run_twice(tmp_path):
    from common.evaluation.report import build_report

    done = _run(tmp_path / "done", model="tf_transformer")
    unfinished = _run(tmp_path / "unfinished", outcome=False)  # continued with more epochs and killed
    with pytest.raises(DataError, match=r"unfinished: unfinished run"):
        build_report([done, unfinished], tmp_path / "out", n_resamples=10)
    with pytest.raises(DataError, match="named twice"):
        build_report([done, tmp_path / "x" / ".." / "done"], tmp_path / "out", n_resamples=10)
    assert not (tmp_path / "out").exists()


def test_summary_refuses_runs_whose_test_labels_disagree(tmp_path):
    from common.evaluation.summary import summarise

    a = _run(tmp_path / "a", model="tf_transformer")
    b = _run(tmp_path / "b", y_flip=True)
    with pytest.raises(DataError, match=r"disagree on the true class of 3 test sample\(s\)"):
        summarise([a, b], n_resamples=10)


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    from common.runs.options import run_command

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted) == 130
    assert capsys.readouterr().err == "interrupted; rerun the same command to resume\n"


def test_a_full_disk_is_named_before_the_cache_and_at_a_write(make_manifest, cache_root, tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from common.atomic import atomic_write
    from common.data.dataset import prepare_dataset
    from common.data.preprocess import PreprocessConfig

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))  # 1000 bytes free
    manifest = make_manifest(n_subjects=12)
    with pytest.raises(DataError, match=r"the cache of 12 volumes needs 96.0 KiB, the disk has 1.0 KiB free"):
        prepare_dataset(manifest, label_column="label", cache_root=cache_root, progress=False,
                        preprocess=PreprocessConfig(shape=(16, 16, 16), normalize="zscore"))

    def no_space(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file "
                           "data/0: file write failed") from OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DataError, match=r"model.pt: the disk is full"):
        atomic_write(tmp_path / "model.pt", no_space)
    assert not list(tmp_path.glob(".model.pt*"))


# ---- a record or a model file from somewhere else (issue 29 item 12) -------------------------------------
def _tiny_run(package: str, manifest, cache_root, run_dir, shape=16) -> Path:
    import importlib

    main = importlib.import_module(f"{package}.cli").main
    assert main(["train", "--data", str(manifest), "--label-column", "label", "--shape", *[str(shape)] * 3,
                 "--preset", "tiny", "--batch-size", "4", "--epochs", "1", "--cache-dir", str(cache_root),
                 "--run-dir", str(run_dir), "--workers", "1", "--quiet", "--precision", "fp32"]) == 0
    return run_dir


def _edit_record(run_dir: Path, edit) -> None:
    import json

    values = json.loads((run_dir / "config.json").read_text())
    edit(values)
    (run_dir / "config.json").write_text(json.dumps(values))


@pytest.mark.parametrize("package, model_file", [("torch_resnet", "model.pt"), ("tf_transformer", "model.keras")])
def test_a_record_or_model_file_from_elsewhere_is_refused_by_name(make_manifest, cache_root, tmp_path, capsys,
                                                                   package, model_file):
    import importlib
    import shutil

    main = importlib.import_module(f"{package}.cli").main
    manifest = make_manifest(n_subjects=12)
    run = _tiny_run(package, manifest, cache_root, tmp_path / "run")
    other = _tiny_run(package, manifest, cache_root, tmp_path / "other", shape=12)
    predict = ["predict", "--run-dir", str(run), "--manifest", str(manifest), "--out", str(tmp_path / "p.csv")]
    assert main(predict) == 0
    (tmp_path / "p.csv").unlink()
    shutil.copy(run / "config.json", tmp_path / "config.json")
    # a record whose data section no longer matches its model (a 40^3 shape, a third class)
    _edit_record(run, lambda v: v["data"]["preprocess"].update(shape=[40, 40, 40]))
    capsys.readouterr()
    assert main(predict) == 2
    assert "model_config.input_shape (16, 16, 16) differs from data.preprocess.shape (40, 40, 40)" in \
        capsys.readouterr().err
    shutil.copy(tmp_path / "config.json", run / "config.json")
    _edit_record(run, lambda v: v["data"].update(classes=["a", "b", "c"]))
    assert main(predict) == 2
    assert "model_config.num_classes 2 differs from the 3 classes in data.classes" in capsys.readouterr().err
    shutil.copy(tmp_path / "config.json", run / "config.json")
    # another run's model file put in this run's place
    shutil.copy(other / model_file, run / model_file)
    assert main(predict) == 2
    err = capsys.readouterr().err
    assert str(run / model_file) in err and ("another architecture" in err or "not this run's model" in err)
    assert not (tmp_path / "p.csv").exists()


def test_finishing_a_transformer_run_over_a_foreign_model_file_is_refused(tmp_path):
    """The driver loads model.keras at the end of a run: another architecture's file is named, not a traceback."""
    from common.errors import ConfigError
    from common.runs.config import TrainConfig
    from common.runs.precision import PrecisionDecision
    from tf_transformer.config import preset
    from tf_transformer.model import build_transformer
    from tf_transformer.options import KerasOptions
    from tf_transformer.train import KerasAdapter

    config = preset("tiny").with_data(input_shape=(16,) * 3, num_classes=2)
    adapter = KerasAdapter(config, TrainConfig(), KerasOptions(), PrecisionDecision("fp32", "fp32", "test"))
    foreign = build_transformer(preset("tiny").with_data(input_shape=(12,) * 3, num_classes=3))
    foreign.save(tmp_path / "model.keras")
    with pytest.raises(ConfigError, match="model.keras: not this run's model"):
        adapter.load_model(tmp_path / "model.keras")
