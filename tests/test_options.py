"""Every command-line option is tested (issue 24 item 5).

- Options generated from the typed configs (DataConfig, TrainConfig, RuntimeConfig, TorchOptions,
  KerasOptions): each one, given a value other than its default, reaches its field.
- The other options (subcommands' own arguments): each is named by a test elsewhere; OPTION_TESTS says
  which, and a new option without an entry fails here.
- What the less common training options do: patience, --select-metric and --balanced-sampler through the
  driver with a scripted adapter (no framework), --check-only, the dataset's name and licence.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from pathlib import Path

import numpy as np
import pytest

from common.data.preprocess import PreprocessConfig
from common.runs.config import DataConfig, RuntimeConfig, TrainConfig
from common.runs.typed import flag, from_namespace

TESTS = Path(__file__).resolve().parent

# Values for fields whose automatic "default changed" value would break a cross-field rule.
SPECIAL_VALUES = {
    "data": "demo2", "fold": 1, "folds": 3, "split_ratios": (0.6, 0.2, 0.2), "shape": (20, 20, 20),
    "percentiles": (1.0, 99.0), "bids_filter": ("ses=M00",), "flip_axes": (0, 1), "classes": ("x", "y"),
    "class_names": ("x", "y"), "logical_cpu_devices": 2,
}


def _changed_value(field: dataclasses.Field, hint, default):
    """A value of `field` other than its default, and the argv that gives it."""
    name, option = field.name, field.metadata.get("flag") or flag(field.name)
    inner = hint
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
    if inner is bool:
        value = not default
        return value, [option if value else "--no-" + option[2:]]
    if name in SPECIAL_VALUES:
        value = SPECIAL_VALUES[name]
    elif field.metadata.get("choices"):
        value = next(c for c in field.metadata["choices"] if c != default)
    elif inner is int:
        value = (default or 0) + 1
    elif inner is float:
        value = 0.5 if default in (0.0, None) else default / 2
    elif inner is str:
        value = "changed"
    elif inner is Path:
        value = Path("somewhere")
    else:
        raise AssertionError(f"no changed value for {name} ({hint}): add one to SPECIAL_VALUES")
    parts = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    return value, [option, *parts]


def _typed_cases(parser_factory, classes):
    argv, expected = ["train"], {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for field in dataclasses.fields(cls):
            value, args = _changed_value(field, hints[field.name], getattr(defaults, field.name))
            argv += args
            expected[(cls, field.name)] = value
    return parser_factory(), argv, expected


@pytest.mark.parametrize("package", ["torch_resnet", "tf_transformer"])
def test_every_generated_option_reaches_its_field(package):
    if package == "torch_resnet":
        from torch_resnet.cli import build_parser
        from torch_resnet.options import TorchOptions as Options
    else:
        from tf_transformer.cli import build_parser
        from tf_transformer.options import KerasOptions as Options
    classes = (DataConfig, TrainConfig, RuntimeConfig, Options)
    parser, argv, expected = _typed_cases(build_parser, classes)
    args = parser.parse_args(argv)
    built = {cls: from_namespace(cls, args) for cls in classes}
    for (cls, name), value in expected.items():
        assert getattr(built[cls], name) == value, f"{cls.__name__}.{name}"
    for cls in classes:  # and every one of them differs from its default, so none was left out
        assert all(getattr(built[cls], f.name) != getattr(cls(), f.name) for f in dataclasses.fields(cls)), cls


# Options that are not generated from a typed config, and the tests that exercise them ("file::test").
OPTION_TESTS = {
    "--backend": "test_options.py::test_an_unsupported_keras_backend_is_one_line",
    "--verbose": "test_options.py::test_verbose_shows_the_backend_start_up_log",
    "--preset": "test_tf_transformer_training.py::test_training_writes_the_run_directory_and_predicts",
    "--model": "test_recipe.py::test_a_bad_model_override_stops_the_cli_before_any_work",
    "--run-dir": "test_tf_transformer_training.py::test_training_writes_the_run_directory_and_predicts",
    "--manifest": "test_tf_transformer_training.py::test_training_writes_the_run_directory_and_predicts",
    "--out": "test_tf_transformer_training.py::test_training_writes_the_run_directory_and_predicts",
    "--batch-size": "test_driver.py::test_both_adapters_receive_the_same_batches",
    "--workers": "test_cv.py::test_cv_checks_its_settings_with_the_trainers_before_writing_anything",
    "--device": "test_explain.py::test_explain_cli_refuses_bad_requests",
    "--split": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--method": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--target": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--gradcam-layer": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--limit": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--occlusion-size": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--occlusion-stride": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--occlusion-baseline": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--random-weights": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    # the trainers' own `export` subcommand, which `python -m common export` runs in a child process
    "--out-dir": "test_export.py::test_a_bundle_predicts_as_the_run_does_without_torch_or_tensorflow",
    "--bootstrap": "test_report.py::test_score_and_report_clis_take_their_options",
    "--no-plots": "test_report.py::test_score_and_report_clis_take_their_options",
    "--title": "test_report.py::test_score_and_report_clis_take_their_options",
    "--out-root": "test_report.py::test_score_and_report_clis_take_their_options",
    "--parallel": "test_jobs.py::test_parallel_and_cpus_per_job_decide_the_resources",
    "--resnet-args": "test_cv.py::test_cross_validation_end_to_end",
    "--transformer-args": "test_cv.py::test_cross_validation_end_to_end",
    "--models": "test_cv.py::test_cross_validation_end_to_end",
    "--seeds": "test_cv.py::test_cross_validation_end_to_end",
    "--name": "test_cv.py::test_cross_validation_end_to_end",
    "--cv-root": "test_cv.py::test_cross_validation_end_to_end",
    "--lesions": "test_explain.py::test_maps_of_a_trained_model_find_the_planted_signal",
    "--bundle": "test_export.py::test_a_bundle_predicts_as_the_run_does_without_torch_or_tensorflow",
    "--tune-root": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--trials": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--objective": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--sampler-seed": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--storage": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--cpus-per-job": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--gpus-per-job": "test_tune.py::test_tune_options_reach_the_plan_and_the_study",
    "--ray-address": "test_tune.py::test_tune_and_cv_on_a_two_node_ray_cluster_survive_a_stopped_node",
    "--into": "test_keep.py::test_keep_copies_the_record_and_nothing_else",
    "--keep-into": "test_keep.py::test_cv_keep_into_keeps_what_finished_before_a_failure_and_resumes_from_it",
}


def _walk(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")
        else:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    yield prefix, option


def _generated_flags() -> set[str]:
    from tf_transformer.options import KerasOptions
    from torch_resnet.options import TorchOptions

    out = set()
    for cls in (DataConfig, TrainConfig, RuntimeConfig, TorchOptions, KerasOptions):
        for field in dataclasses.fields(cls):
            option = field.metadata.get("flag") or flag(field.name)
            out |= {option, "--no-" + option[2:]}
    return out


def test_every_other_option_has_a_named_test_that_exists():
    from common.cli import build_parser as common_parser
    from tf_transformer.cli import build_parser as vit_parser
    from torch_resnet.cli import build_parser as resnet_parser

    generated = _generated_flags()
    options = {option for parser in (resnet_parser(), vit_parser(), common_parser())
               for _, option in _walk(parser, "") if option not in generated}
    missing = sorted(options - set(OPTION_TESTS))
    assert not missing, f"options without a test: {missing} (add one, and its entry in OPTION_TESTS)"
    for option, where in OPTION_TESTS.items():
        file, test = where.split("::")
        text = (TESTS / file).read_text()
        assert f"def {test}(" in text, f"{option}: {where} does not exist"
        assert option in text or option == "--out-dir", f"{option}: {where} never passes it"


def test_an_unsupported_keras_backend_is_one_line(capsys, monkeypatch):
    import keras

    from tf_transformer.cli import main

    assert keras.backend.backend() == "tensorflow"  # conftest's default

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert main(["train", "--data", "demo", "--check-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: KERAS_BACKEND=jax: the transformer runs on tensorflow or torch (the backends the "
                   "project installs and tests)"]
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert main(["--backend", "torch", "train", "--data", "demo", "--check-only"]) == 2
    assert "already imported with tensorflow" in capsys.readouterr().err


def test_verbose_shows_the_backend_start_up_log(monkeypatch):
    """--verbose leaves stderr alone while the backend starts; without it the start-up log is hidden."""
    from tf_transformer import cli, startup

    silenced = []
    monkeypatch.setattr(startup, "_stderr_silenced", lambda: silenced.append(True) or __import__("contextlib").nullcontext())
    startup.start_backend(verbose=True)
    assert silenced == []
    startup.start_backend(verbose=False)
    assert silenced == [True]
    seen = []
    monkeypatch.setattr(startup, "start_backend", lambda *, verbose=False: seen.append(verbose))
    assert cli.main(["--verbose", "train", "--data", "demo", "--check-only", "--quiet"]) == 0
    assert seen == [True]


def test_the_precision_policy_is_restored_after_building():
    import keras

    from tf_transformer.keras_state import precision_policy

    before = keras.mixed_precision.global_policy().name
    with precision_policy("bf16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert layer.dtype_policy.name == "mixed_bfloat16"  # what was built keeps its policy
    assert keras.mixed_precision.global_policy().name == before
    with pytest.raises(RuntimeError), precision_policy("fp16"):
        raise RuntimeError("a failed build")
    assert keras.mixed_precision.global_policy().name == before


# ---- what the training options do, through the driver, with a scripted adapter -----------------------
class ScriptedAdapter:
    """Predicts, at epoch e, the true val class with probability script[e] (sample by sample); no framework."""

    model_file, state_suffix = "model.json", ".json"

    def __init__(self, val_y: np.ndarray, script: list[np.ndarray]):
        self.val_y, self.script, self.epoch, self.saved = val_y, script, 0, []
        self.train_labels: list[np.ndarray] = []

    def facts(self):
        from common.runs.driver import AdapterFacts

        return AdapterFacts(model_config={}, parameters=1, flops_per_sample=1, device="cpu", options={}, versions={})

    def fit_epoch(self, batches, *, learning_rate, on_step):
        from common.runs.driver import EpochStats

        labels = [batches[step].y for step in range(len(batches))]
        self.train_labels.append(np.concatenate(labels))
        self.epoch += 1
        return EpochStats(loss=1.0 / self.epoch, accuracy=0.5, samples=sum(len(y) for y in labels))

    def predict(self, x):
        correct = self.script[min(self.epoch, len(self.script)) - 1]
        n = len(x)
        y = self.val_y if n == len(self.val_y) else np.zeros(n, int)
        p = correct[:n] if len(correct) >= n else np.full(n, correct[0])
        probs = np.empty((n, 2))
        probs[np.arange(n), y] = p
        probs[np.arange(n), 1 - y] = 1 - p
        return probs

    def save_model(self, path):
        self.saved.append(self.epoch)
        path.write_text(str(self.epoch))

    def load_model(self, path):
        pass

    def save_state(self, path):
        path.write_text("{}")

    def load_state(self, path):
        pass

    def peak_memory_bytes(self):
        return 0


def _drive(tmp_path, dataset, script, **training) -> tuple[ScriptedAdapter, Path]:
    from common.runs.driver import run_training
    from common.runs.precision import Hardware

    adapter = ScriptedAdapter(dataset.split("val").y, script)
    run_dir = run_training(model="torch_resnet", preset="tiny", model_config={}, dataset=dataset,
                           training=TrainConfig(precision="fp32", augment=False, **training),
                           runtime=RuntimeConfig(run_dir=tmp_path / "run", quiet=True),
                           hardware=Hardware("cpu", "test CPU"), build=lambda precision: adapter)
    return adapter, run_dir


@pytest.fixture
def small_dataset(make_manifest, cache_root):
    from common.data.dataset import prepare_dataset

    return prepare_dataset(make_manifest(n_subjects=20), label_column="label",
                           preprocess=PreprocessConfig(shape=(8, 8, 8)), cache_root=cache_root, progress=False)


def test_patience_stops_after_that_many_epochs_without_improvement(small_dataset, tmp_path):
    from common.runs.record import read_record

    n = len(small_dataset.split("val").y)
    script = [np.full(n, p) for p in (0.9, 0.8, 0.7, 0.6, 0.95)]  # best at 1, then worse: 5 would improve
    adapter, run_dir = _drive(tmp_path, small_dataset, script, epochs=5, patience=2, warmup_epochs=0)
    record = read_record(run_dir)
    assert adapter.epoch == 3 and record.outcome.best_epoch == 1  # stopped after 2 stale epochs
    assert adapter.saved == [1]


def test_select_metric_chooses_the_epoch_by_that_val_metric(small_dataset, tmp_path):
    from common.runs.record import read_record

    val_y = small_dataset.split("val").y
    n = len(val_y)
    half = np.where(np.arange(n) % 2 == 0, 0.99, 0.45)  # lower loss than 0.6 everywhere, but half wrong
    assert -np.log(half).mean() < -np.log(0.6)
    script = [np.full(n, 0.6), half]
    by_loss = read_record(_drive(tmp_path / "loss", small_dataset, script, epochs=2)[1]).outcome
    by_accuracy = read_record(_drive(tmp_path / "acc", small_dataset, script, epochs=2,
                                     select_metric="val_accuracy")[1]).outcome
    assert (by_loss.best_epoch, by_accuracy.best_epoch) == (2, 1)
    assert math.isclose(by_accuracy.best_value, 1.0)


def test_balanced_sampler_draws_each_class_equally_often(make_manifest, cache_root, tmp_path):
    from common.data.dataset import prepare_dataset

    classes = ("a", "a2", "a3", "b")  # make_manifest labels by subject % 4: a, a2, a3, b -> 3:1 after merging
    manifest = make_manifest(n_subjects=40, classes=classes)
    text = manifest.read_text().replace(",a2\n", ",a\n").replace(",a3\n", ",a\n")
    manifest.write_text(text)
    dataset = prepare_dataset(manifest, label_column="label", preprocess=PreprocessConfig(shape=(8, 8, 8)),
                              cache_root=cache_root, progress=False)
    n = len(dataset.split("val").y)
    counts = {}
    for balanced in (False, True):
        adapter, _ = _drive(tmp_path / str(balanced), dataset, [np.full(n, 0.9)], epochs=3, balanced_sampler=balanced,
                            warmup_epochs=0)
        labels = np.concatenate(adapter.train_labels)
        counts[balanced] = np.bincount(labels, minlength=2) / len(labels)
    assert counts[False][0] > 0.7  # the training split's 3:1
    assert abs(counts[True][0] - 0.5) < 0.15  # drawn with replacement, class-balanced


def test_check_only_builds_the_cache_and_trains_nothing(make_manifest, cache_root, tmp_path, capsys):
    from torch_resnet.cli import main

    run_dir = tmp_path / "run"
    args = ["train", "--data", str(make_manifest(n_subjects=12)), "--label-column", "label", "--shape", "16", "16",
            "16", "--preset", "tiny", "--cache-dir", str(cache_root), "--run-dir", str(run_dir), "--workers", "1",
            "--check-only"]
    assert main(args) == 0
    assert "checked: options, tiny model config and data (2 classes)" in capsys.readouterr().out
    assert not run_dir.exists() and any(cache_root.rglob("*.npy"))


def test_dataset_name_and_licence_reach_the_record(make_manifest, cache_root, tmp_path):
    from common.runs.record import read_record

    dataset = DataConfig(data=str(make_manifest(n_subjects=20)), label_column="label", shape=(8, 8, 8),
                         cache_dir=cache_root, dataset_name="Lab scans 2026", dataset_licence="CC BY 4.0, the lab")
    from common.runs.options import dataset_for

    prepared = dataset_for(dataset, progress=False)
    n = len(prepared.split("val").y)
    _, run_dir = _drive(tmp_path, prepared, [np.full(n, 0.9)], epochs=1)
    data = read_record(run_dir).data
    assert (data.name, data.licence) == ("Lab scans 2026", "CC BY 4.0, the lab")


def test_tensorflow_starts_with_onednn_kernels_unless_the_environment_says(monkeypatch):
    """TensorFlow enables oneDNN itself only on AVX512-VNNI/BF16/AMX CPUs; the project asks for it everywhere
    (11x on an AVX2-only CPU), and an explicit TF_ENABLE_ONEDNN_OPTS of the user's is kept."""
    from tf_transformer.keras_state import ONEDNN_VARIABLE, cpu_kernels, select_backend

    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    select_backend(None)
    assert os.environ[ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(ONEDNN_VARIABLE, "0")
    assert cpu_kernels() == "0" and os.environ[ONEDNN_VARIABLE] == "0"


def test_the_machine_is_described_with_the_vector_units_that_decide_kernel_speed():
    from common.runs.hardware import cpu_description, has_bf16_units, vector_features

    zen4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    assert vector_features(zen4) == ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"]
    assert vector_features("flags : fpu sse avx2 amx_tile amx_bf16\n") == ["AVX2", "AMX"]
    assert has_bf16_units(zen4) and has_bf16_units("flags : fpu sse avx2 amx_tile amx_bf16\n")
    assert not has_bf16_units("flags : fpu sse avx2 fma\n") and not has_bf16_units("")
    assert vector_features("model name : an ARM core\n") == []
    assert "logical CPUs" in cpu_description()
