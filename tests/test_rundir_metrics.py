import json

import numpy as np
import pytest
from sklearn import metrics as skm

from common.errors import DataError
from common.evaluation.metrics import compute_metrics, score_run
from common.runs.rundir import read_history, read_predictions, write_history, write_predictions


def fake_predictions(run_dir, *, n=40, classes=("a", "b", "c"), seed=0, skill=1.5):
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = np.arange(n) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    split = np.where(np.arange(n) < n // 4, "val", "test")
    write_predictions(run_dir, classes=list(classes), split=split, sample_ids=[f"s{i}" for i in range(n)],
                      subject_ids=[f"p{i}" for i in range(n)], y_true=y, probabilities=probs)
    return y, probs, split


def test_predictions_round_trip_and_metrics_match_sklearn(tmp_path):
    y, probs, split = fake_predictions(tmp_path)
    predictions = read_predictions(tmp_path / "predictions.csv")
    test = predictions.select("test")
    keep = split == "test"
    m = compute_metrics(test, n_resamples=200)
    y_t, p_t = y[keep], probs[keep].round(6)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_t, p_t.argmax(1)))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_t, p_t.argmax(1)))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_t, p_t / p_t.sum(1, keepdims=True), multi_class="ovr"),
                                         abs=1e-4)
    assert m["confusion_matrix"] == skm.confusion_matrix(y_t, p_t.argmax(1)).tolist()
    low, high = m["ci95"]["accuracy"]
    assert low <= m["accuracy"] <= high


def test_binary_auc_uses_positive_class(tmp_path):
    y, probs, split = fake_predictions(tmp_path, classes=("neg", "pos"))
    m = score_run(tmp_path, n_resamples=50)
    keep = split == "test"
    assert m["test"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y[keep], probs[keep, 1]), abs=1e-4)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["n"] == keep.sum()


def test_bootstrap_is_seeded(tmp_path):
    fake_predictions(tmp_path)
    p = read_predictions(tmp_path).select("test")
    assert compute_metrics(p, n_resamples=100, seed=3)["ci95"] == compute_metrics(p, n_resamples=100, seed=3)["ci95"]


@pytest.mark.parametrize("k", [2, 3])
def test_vectorised_bootstrap_equals_scikit_learn_on_every_resample(k):
    """Each resample's value equals scikit-learn's on that resample: with tied scores (rounded
    probabilities), with classes missing from a resample (balanced accuracy over the present ones, AUC
    undefined), and across resample chunks."""
    import warnings

    from common.evaluation.metrics import RESAMPLE_CHUNK, bootstrap_indices, point_metric, resampled_metric

    rng = np.random.default_rng(k)
    n = 9  # small: many resamples miss a class
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n).round(1)  # ties
    p /= p.sum(1, keepdims=True)
    y_hat = p.argmax(1)
    rows = bootstrap_indices(n, n_resamples=RESAMPLE_CHUNK + 50, seed=1)
    for name in ("accuracy", "balanced_accuracy", "roc_auc"):
        fast = resampled_metric(name, y, y_hat, p, rows, n_classes=k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = np.array([point_metric(name, y[r], y_hat[r], p[r], k) for r in rows])
        assert np.isnan(fast).tolist() == np.isnan(slow).tolist(), name
        assert np.isnan(slow).any() == (name == "roc_auc"), name  # the undefined case is exercised
        np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace("sample_id,", "id,", 1), r"missing column\(s\) \['sample_id'\]"),
        (lambda t: t.replace(",a,", ",zz,", 1), "is not one of the classes"),
        (lambda t: t + t.splitlines()[1] + "\n", "duplicate sample id 's0'"),
    ],
)
def test_invalid_predictions_are_refused(tmp_path, edit, message):
    fake_predictions(tmp_path)
    path = tmp_path / "predictions.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataError, match=message):
        read_predictions(path)


def test_probabilities_must_be_a_distribution(tmp_path):
    fake_predictions(tmp_path)
    path = tmp_path / "predictions.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[-1] = "0.9"
    cells[-2] = "0.9"
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match="row 2: probabilities"):
        read_predictions(path)


def test_history_round_trip(tmp_path):
    rows = [dict(epoch=e, train_loss=1.0 / e, train_accuracy=0.5, val_loss=0.9, val_accuracy=0.6, lr=1e-3, seconds=2.0)
            for e in (1, 2)]
    write_history(tmp_path, rows)
    assert read_history(tmp_path) == rows
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == \
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds"


def test_atomic_writes_honour_the_umask(tmp_path):
    import os

    from common.atomic import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    atomic_write_text(tmp_path / "b.txt", "y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporary left


def test_epochs_to_learn_is_the_first_epoch_with_perfect_val_accuracy():
    from common.evaluation.robustness import Cell, first_perfect_epoch, render

    history = [{"epoch": "1", "val_accuracy": "0.5"}, {"epoch": "2", "val_accuracy": "1.0"},
               {"epoch": "3", "val_accuracy": "1.0"}]
    assert first_perfect_epoch(history) == 2 and first_perfect_epoch(history[:1]) is None
    cells = [Cell("ResNet", "small", "bf16", 0, 0, 1.0, 2), Cell("ResNet", "small", "bf16", 1, 0, 0.9, None),
             Cell("ResNet", "small", "bf16", 2, 0, 1.0, 4), Cell("ResNet", "?", "?", 3, 0, None, None)]
    text = render(cells)
    # 3 finished runs: median 4 (the run that never learned counts as later than every epoch), no CI
    # under 6 runs; 1 of 3 never learned, exact CI 0.8-90.6 %
    assert "| ResNet | small | bf16 | 3 | 0 | 0.900 | 2 / 3 | 4 | 1 (1–91 %) |" in text
    assert "| ResNet | small | bf16 | 1 | 0 | 0.900 | never |" in text and "| ResNet | ? | ? | 3 | 0 | missing |  |" in text


def test_a_run_that_never_learned_is_counted_not_dropped_from_the_median():
    from common.evaluation.robustness import median_epochs_to_learn

    # dropping the three failures would read a median of 2.5 epochs for a preset that fails 3 times in 5
    assert median_epochs_to_learn([2, 3, None, None, None])[0] == float("inf")
    assert median_epochs_to_learn([2, 3, 4, None, 9])[0] == 4


def test_the_median_interval_is_the_order_statistic_one_and_the_failure_interval_is_exact():
    from scipy.stats import beta

    from common.evaluation.robustness import failure_rate_interval, median_epochs_to_learn

    epochs = [9, 3, 15, 1, 12, 7, 5, 14, 2, 11, 6, 13, 4, 10, 8]  # 1..15
    # n = 15 at 95 %: the 4th and 12th smallest (binomial order-statistic table; coverage 96.5 %)
    assert median_epochs_to_learn(epochs) == (8, 4, 12)
    assert median_epochs_to_learn([*range(1, 15), None]) == (8, 4, 12)  # the run of 15 epochs never learned
    low, high = failure_rate_interval(2, 15)
    assert low == pytest.approx(beta.ppf(0.025, 2, 14)) and high == pytest.approx(beta.ppf(0.975, 3, 13))
    assert failure_rate_interval(0, 15)[0] == 0


def test_a_model_trained_in_two_precisions_gets_a_row_of_all_its_runs():
    from common.evaluation.robustness import Cell, render

    cells = [Cell("ResNet", "small", p, fold, 0, 1.0, fold + 1) for p in ("bf16", "fp32") for fold in range(3)]
    cells.append(Cell("Transformer", "small", "fp32", 0, 0, 1.0, 3))
    text = render(cells)
    assert "| ResNet | small | all | 6 | 0 | 1.000 | 6 / 6 | 2 (1–3) | 0 (0–46 %) |" in text
    assert "| Transformer | small | all |" not in text
    recipe = [Cell("ResNet", "small_recipe", "bf16", fold, 0, 0.5, None) for fold in range(3)]
    text = render(cells + recipe)  # another preset of the same model: its own rows, never pooled with small's
    assert "| ResNet | small_recipe | bf16 | 3 | 0 | 0.500 | 0 / 3 | never | 3 (29–100 %) |" in text
    assert "| ResNet | small | bf16 | 3 | 0 | 1.000 | 3 / 3 |" in text
    assert "| ResNet | small | all | 6 | 0 | 1.000 | 6 / 6 | 2 (1–3) | 0 (0–46 %) |" in text
    assert "| ResNet | small_recipe | all |" not in text


def test_a_matrix_still_training_shows_each_missing_run_under_its_planned_preset_and_precision(tmp_path):
    from common.evaluation.robustness import cells_of, planned_value, render
    from common.runs.cv import CVPlan, claim_plan

    assert planned_value(("--preset", "tiny", "--precision=bf16", "--preset", "small"), "--preset", "?") == "small"
    assert planned_value(("--precision=bf16",), "--precision", "?") == "bf16"
    assert planned_value(("--lr", "1e-3"), "--precision", "?") == "?"
    claim_plan(tmp_path, CVPlan(("resnet",), 2, (0,), ("--data", "demo", "--precision", "bf16"),
                                {"resnet": ["--preset", "small"]}))
    cells = cells_of(tmp_path)  # no run has started: every cell missing, none guessed
    assert [(c.preset, c.precision, c.test_accuracy) for c in cells] == [("small", "bf16", None)] * 2
    assert "| ResNet | small | bf16 | 2 | 2 | n/a | 0 / 0 | n/a | n/a |" in render(cells)
