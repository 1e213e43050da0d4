"""Both trainers on the demo with tiny presets, then the report: its numbers are the runs' numbers."""

import numpy as np
import pytest
from sklearn import metrics as skm

from common.evaluation.report import build_report, find_latest_runs
from common.runs.record import read_record
from common.runs.rundir import read_history, read_predictions


def _row(markdown: str, title: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {title} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


@pytest.mark.slow
def test_demo_to_report(tmp_path, monkeypatch):
    from tf_transformer.cli import main as vit_main
    from torch_resnet.cli import main as resnet_main

    monkeypatch.setenv("VOLCLS_CACHE", str(tmp_path / "cache"))
    common = ["train", "--shape", "16", "16", "16", "--preset", "tiny", "--epochs", "2", "--quiet",
              "--runs-root", str(tmp_path / "runs")]
    assert resnet_main(common) == 0
    assert vit_main(common) == 0
    runs = find_latest_runs(tmp_path / "runs")  # transformer first, then ResNet
    records = [read_record(r) for r in runs]
    assert [r.model for r in records] == ["tf_transformer", "torch_resnet"]
    assert records[0].data == records[1].data  # same data, split, classes and counts
    markdown = build_report(runs, tmp_path / "report", n_resamples=50).read_text()
    test_part = markdown.split("### test")[1]
    for column, (run, record) in enumerate(zip(runs, records)):
        test = read_predictions(run).select("test")
        assert _row(test_part, "accuracy")[column].startswith(f"{skm.accuracy_score(test.y_true, test.y_pred):.3f}")
        assert _row(test_part, "n")[column] == str(sum(record.data.class_counts["test"].values()))
        assert _row(markdown, "parameters")[column] == f"{record.parameters:,}"
        assert _row(markdown, "preset")[column] == "tiny"
        assert _row(markdown, "best epoch (on val) / epochs run")[column] == \
            f"{record.outcome.best_epoch} / {record.outcome.epochs_run}"
        history = read_history(run)
        best = min(history, key=lambda row: row["val_loss"])
        assert record.outcome.best_epoch == best["epoch"] and record.outcome.best_value == pytest.approx(best["val_loss"])
        val = read_predictions(run).select("val")
        val_loss = -np.log(np.clip(val.probabilities[np.arange(len(val)), val.y_true], 1e-7, 1)).mean()
        assert val_loss == pytest.approx(best["val_loss"], abs=1e-4)  # predictions come from the selected model
    assert f"split hash `{records[0].data.split_hash}`" in markdown
    from common.evaluation.summary import summarise

    summary = summarise(runs, n_resamples=20)
    assert summary["protocol"] == "single split" and set(summary["models"]) == {"ResNet", "Transformer"}
    assert summary["models"]["ResNet"]["runs"][0]["test"]["accuracy"] == pytest.approx(
        skm.accuracy_score(read_predictions(runs[1]).select("test").y_true,
                           read_predictions(runs[1]).select("test").y_pred))
