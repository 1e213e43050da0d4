"""--decision youden: a binary task's operating point, chosen on val at the end of training and used by every
later prediction (predictions.csv, predict, cv reports, bundles, explain); argmax stays the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.preprocess import PreprocessConfig
from common.errors import ConfigError
from common.runs.decision import check_decision, decide, mean_threshold, youden_threshold
from tests.test_options import ScriptedAdapter


def test_youden_threshold_is_the_val_operating_point_of_the_highest_balanced_accuracy():
    y = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.2, 0.35, 0.3, 0.6])  # at 0.3: both positives, one negative -> J = 1 - 1/3
    probabilities = np.stack([1 - p1, p1], axis=1)
    assert youden_threshold(y, probabilities) == pytest.approx(0.3)
    assert decide(probabilities, 0.3).tolist() == [0, 0, 1, 1, 1]
    assert decide(probabilities, None).tolist() == [0, 0, 0, 0, 1]  # argmax
    perfect = np.stack([1 - np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.2, 0.3, 0.4])], axis=1)
    assert youden_threshold(np.array([0, 0, 1, 1]), perfect) == pytest.approx(0.3)  # the highest of the best
    with pytest.raises(ConfigError, match="val split needs volumes of both classes"):
        youden_threshold(np.array([1, 1]), perfect[:2])


def test_the_rule_is_refused_where_it_cannot_decide():
    check_decision("argmax", ["a", "b", "c"], np.array([0, 0]))  # argmax: anything goes
    with pytest.raises(ConfigError, match="--decision youden: .*binary task; this dataset has 3 classes"):
        check_decision("youden", ["a", "b", "c"], np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="val split needs volumes of both classes"):
        check_decision("youden", ["a", "b"], np.array([1, 1, 1]))
    assert mean_threshold([None, None], "x") is None and mean_threshold([0.2, 0.4], "x") == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="cv/m: some runs decide by a val threshold .* and some by argmax"):
        mean_threshold([0.2, None], "cv/m")


class ShiftedAdapter(ScriptedAdapter):
    """P(class 1) is 0.3 for class-1 volumes and 0.1 for class-0 ones: ranked perfectly, but argmax predicts
    class 0 for every volume (a model trained on imbalanced data, in miniature)."""

    def __init__(self, dataset):
        super().__init__(dataset.split("val").y, [np.full(1, 0.9)])
        self.splits = [dataset.split(name) for name in ("val", "test")]

    def predict(self, x):
        y = next(s.y for s in self.splits if len(s.y) == len(x) and np.array_equal(s.x, x))
        p1 = np.where(y == 1, 0.3, 0.1)
        return np.stack([1 - p1, p1], axis=1)


def _train(tmp_path, dataset, decision):
    from common.runs.config import RuntimeConfig, TrainConfig
    from common.runs.driver import run_training
    from common.runs.precision import Hardware

    return run_training(model="torch_resnet", preset="tiny", model_config={}, dataset=dataset,
                        training=TrainConfig(precision="fp32", augment=False, epochs=2, decision=decision),
                        runtime=RuntimeConfig(run_dir=tmp_path / decision, quiet=True),
                        hardware=Hardware("cpu", "test CPU"), build=lambda precision: ShiftedAdapter(dataset))


@pytest.fixture
def binary_dataset(make_manifest, cache_root):
    from common.data.dataset import prepare_dataset

    return prepare_dataset(make_manifest(n_subjects=30), label_column="label",
                           preprocess=PreprocessConfig(shape=(8, 8, 8)), cache_root=cache_root, progress=False)


def test_a_youden_run_keeps_its_val_threshold_and_every_prediction_follows_it(binary_dataset, tmp_path):
    from common.data.inference import write_probabilities
    from common.evaluation.metrics import compute_metrics
    from common.export.bundle import decision_of
    from common.runs.ensemble import ensemble_threshold
    from common.runs.record import read_record
    from common.runs.rundir import read_predictions

    youden, argmax = _train(tmp_path, binary_dataset, "youden"), _train(tmp_path, binary_dataset, "argmax")
    record = read_record(youden)
    assert record.training.decision == "youden" and record.outcome.threshold == pytest.approx(0.3)
    assert read_record(argmax).outcome.threshold is None
    chosen, plain = read_predictions(youden), read_predictions(argmax)
    assert (chosen.y_pred == chosen.y_true).all()  # val and test: the val threshold separates them
    assert (plain.y_pred == 0).all() and np.allclose(plain.probabilities, chosen.probabilities)
    test = compute_metrics(chosen.select("test"), n_resamples=10)
    assert test["balanced_accuracy"] == pytest.approx(1.0)
    assert compute_metrics(plain.select("test"), n_resamples=10)["balanced_accuracy"] == pytest.approx(0.5)
    # predict on new volumes and the ONNX bundle's metadata decide the same way
    members = [(youden, record)]
    assert ensemble_threshold(members) == pytest.approx(0.3)
    new = np.array([[0.65, 0.35], [0.8, 0.2]])
    out = write_probabilities(tmp_path / "p.csv", ["x", "y"], ["a", "b"], new, decide(new, ensemble_threshold(members)))
    assert [line.split(",")[1] for line in out.read_text().splitlines()[1:]] == ["b", "a"]
    assert decision_of(members) == {"rule": "threshold", "class": "b", "threshold": pytest.approx(0.3),
                                    "note": decision_of(members)["note"]}
    assert decision_of([(argmax, read_record(argmax))]) == {"rule": "argmax"}
    with pytest.raises(ConfigError, match="some runs decide by a val threshold"):
        ensemble_threshold([(youden, record), (argmax, read_record(argmax))])


def test_youden_on_three_classes_is_refused_before_training(make_manifest, cache_root, tmp_path):
    from common.data.dataset import prepare_dataset

    dataset = prepare_dataset(make_manifest(n_subjects=30, classes=("a", "b", "c")), label_column="label",
                              preprocess=PreprocessConfig(shape=(8, 8, 8)), cache_root=cache_root, progress=False)
    with pytest.raises(ConfigError, match="this dataset has 3 classes"):
        _train(tmp_path, dataset, "youden")
    assert not Path(tmp_path / "youden").exists()  # nothing half-written


@pytest.mark.filterwarnings("ignore::UserWarning")  # one test sample per fold: sklearn notes the single class
def test_pooled_cross_validation_predictions_use_each_folds_threshold(tmp_path):
    """Out-of-fold pooling: a sample takes the decision of the fold it was tested in."""
    from dataclasses import replace

    from common.evaluation.cv_report import CVModel
    from common.runs.cv import CVPlan, claim_plan, read_plan
    from common.runs.record import write_record
    from common.runs.rundir import write_predictions
    from tests.conftest import fake_record

    plan = CVPlan(models=("resnet",), folds=2, seeds=(0,), common_args=(), model_args={})
    claim_plan(tmp_path, plan)
    for fold, threshold in ((0, 0.3), (1, 0.5)):
        run_dir = plan.run_dir(tmp_path, "resnet", fold, 0)
        run_dir.mkdir(parents=True)
        record = fake_record(decision="youden")
        write_record(run_dir, replace(record, outcome=replace(record.outcome, threshold=threshold)))
        write_predictions(run_dir, classes=["neg", "pos"], split=["test"], sample_ids=[f"s{fold}"],
                          subject_ids=[f"s{fold}"], y_true=np.array([1]), probabilities=np.array([[0.65, 0.35]]),
                          threshold=threshold)
    pooled = CVModel(tmp_path, read_plan(tmp_path), "resnet").pooled
    assert pooled.sample_ids == ["s0", "s1"] and pooled.y_pred.tolist() == [1, 0]  # 0.35 >= 0.3; 0.35 < 0.5
