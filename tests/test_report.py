import re

import numpy as np
import pytest
from conftest import fake_record
from sklearn import metrics as skm

from common.errors import DataError
from common.evaluation.report import build_report, find_latest_runs
from common.evaluation.stats import mcnemar_exact, reliability_bins
from common.runs.record import write_record
from common.runs.rundir import write_history, write_predictions

CLASSES = ["neg", "pos"]


def fake_run(run_dir, *, model, seed, skill, test_ids=None, written="2026-01-01T00:00:00"):
    rng = np.random.default_rng(seed)
    test_ids = test_ids or [f"t{i:02d}" for i in range(36)]
    ids = [f"v{i:02d}" for i in range(12)] + test_ids
    y = np.arange(len(ids)) % 2
    logits = rng.normal(size=(len(ids), 2))
    logits[np.arange(len(ids)), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    split = ["val"] * 12 + ["test"] * len(test_ids)
    write_predictions(run_dir, classes=CLASSES, split=split, sample_ids=ids, subject_ids=ids, y_true=y,
                      probabilities=probs)
    write_history(run_dir, [dict(epoch=e, train_loss=1 / e, train_accuracy=0.5 + e / 20, val_loss=1.1 / e,
                                 val_accuracy=0.5 + e / 25, lr=1e-3, seconds=1.0) for e in range(1, 5)])
    write_record(run_dir, fake_record(model=model, classes=CLASSES, created=written))
    rounded = np.array([[float(f"{p:.6g}") for p in row] for row in probs])
    return y[12:], rounded[12:]


@pytest.fixture
def two_runs(tmp_path):
    a = fake_run(tmp_path / "runs" / "vit-1", model="tf_transformer", seed=1, skill=0.8)
    b = fake_run(tmp_path / "runs" / "resnet-1", model="torch_resnet", seed=2, skill=1.6)
    return tmp_path, a, b


def _row(markdown, title):
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {title} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_report_numbers_match_sklearn(two_runs):
    root, (y, pa), (_, pb) = two_runs
    md_path = build_report(find_latest_runs(root / "runs"), root / "reports" / "x", n_resamples=200)
    md = md_path.read_text()
    test_part = md.split("### test")[1]
    accuracy = _row(test_part, "accuracy")
    auc = _row(test_part, "ROC AUC")
    assert accuracy[0].startswith(f"{skm.accuracy_score(y, pa.argmax(1)):.3f} (")
    assert accuracy[1].startswith(f"{skm.accuracy_score(y, pb.argmax(1)):.3f} (")
    assert auc[0].startswith(f"{skm.roc_auc_score(y, pa[:, 1]):.3f}")
    assert _row(test_part, "balanced accuracy")[1].startswith(f"{skm.balanced_accuracy_score(y, pb.argmax(1)):.3f}")
    assert _row(test_part, "log loss")[0] == f"{skm.log_loss(y, pa / pa.sum(1, keepdims=True)):.3f}"
    p = mcnemar_exact(pa.argmax(1) == y, pb.argmax(1) == y)["p_value"]
    assert f"McNemar p = {p:.3g}" in md
    assert "another dataset" in md and "synthetic" in md


def test_html_embeds_its_images(two_runs):
    root, *_ = two_runs
    md_path = build_report(find_latest_runs(root / "runs"), root / "reports" / "x", n_resamples=50)
    html = md_path.with_suffix(".html").read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert (md_path.parent / "confusion_test.png").is_file()


def test_mismatched_test_sets_are_refused(tmp_path):
    fake_run(tmp_path / "a", model="tf_transformer", seed=1, skill=1)
    fake_run(tmp_path / "b", model="torch_resnet", seed=2, skill=1, test_ids=[f"t{i:02d}" for i in range(1, 37)])
    with pytest.raises(DataError, match=r"different test sets.*\['t00'\].*\['t36'\]"):
        build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", n_resamples=10)
    assert not (tmp_path / "out" / "report.md").exists()


def test_single_run_report(tmp_path):
    fake_run(tmp_path / "a", model="torch_resnet", seed=1, skill=1)
    md = build_report([tmp_path / "a"], tmp_path / "out", n_resamples=10).read_text()
    assert "Only one run" in md and "| ResNet |" in md.replace("| | ResNet |", "| ResNet |")


def test_latest_runs_are_picked_per_model(tmp_path):
    fake_run(tmp_path / "vit-old", model="tf_transformer", seed=1, skill=1, written="2026-01-01T00:00:00")
    fake_run(tmp_path / "vit-new", model="tf_transformer", seed=1, skill=1, written="2026-02-01T00:00:00")
    fake_run(tmp_path / "resnet", model="torch_resnet", seed=1, skill=1)
    assert [p.name for p in find_latest_runs(tmp_path)] == ["vit-new", "resnet"]


def test_mcnemar_hand_worked_case():
    # 10 discordant pairs, 8 favour A: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56/1024 = 0.109375
    a = np.array([1] * 8 + [0] * 2 + [1] * 5, bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5, bool)
    result = mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"]) == (8, 2)
    assert result["p_value"] == pytest.approx(0.109375)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_expected_calibration_error_of_a_perfectly_calibrated_bin():
    y = np.array([0, 0, 0, 1])  # confidence 0.75 for class 0 on all four: accuracy 0.75
    probs = np.tile([0.75, 0.25], (4, 1))
    assert reliability_bins(y, probs)["ece"] == pytest.approx(0.0)
    assert reliability_bins(np.array([1, 1, 1, 1]), probs)["ece"] == pytest.approx(0.75)


def test_report_shows_the_same_saliency_cases_for_every_run(two_runs):
    from common.explain.geometry import model_grid_geometry
    from common.explain.inputs import ExplainInput
    from common.explain.run import ExplainConfig, ModelHooks, explain_run
    from common.runs.rundir import read_predictions

    root, *_ = two_runs
    runs = find_latest_runs(root / "runs")
    md_path = build_report(runs, root / "reports" / "before", n_resamples=50)
    assert "No saliency maps yet" in md_path.read_text()
    rng = np.random.default_rng(0)
    test = read_predictions(runs[0]).select("test")
    items = [ExplainInput(s, v, model_grid_geometry(v.shape), v, (1.0, 1.0, 1.0), CLASSES[y])
             for s, y, v in zip(test.sample_ids, test.y_true, rng.random((len(test), 8, 8, 8)).astype(np.float32))]
    hooks = ModelHooks("numpy", CLASSES, lambda v: np.tile([0.3, 0.7], (len(v), 1)), lambda v, t: v, "none")
    for run in runs:
        explain_run(items, hooks, ExplainConfig(), run / "explain" / "gradcam", run_dir=run, progress=False)
    md_path = build_report(runs, root / "reports" / "after", n_resamples=50)
    text = md_path.read_text()
    section = text.split("## What the models look at")[1].split("\n## ")[0]
    cases = section.split("\n### ")[1:]  # one sub-section per case, its figures one below the other
    rows = [case.splitlines()[0] for case in cases]
    # per class: one case both runs get right, one some run gets wrong (both exist with these skills)
    assert [row.split("(")[1].split(")")[0] for row in rows] == [
        "neg, all right", "neg, some wrong", "pos, all right", "pos, some wrong"]
    predictions = [read_predictions(r).select("test") for r in runs]
    for row in rows:
        sample = row.split("`")[1]
        truth = CLASSES[test.y_true[test.sample_ids.index(sample)]]
        right = [CLASSES[p.y_pred[p.sample_ids.index(sample)]] == truth for p in predictions]
        assert all(right) == ("all right" in row)
    assert all(case.count("![") == 2 for case in cases)  # one image per run (one method each)
    html = md_path.with_suffix(".html").read_text()
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) == 4 + 2 * len(rows)
    from browser import assert_readable

    assert assert_readable(md_path.with_suffix(".html"))["images"] == 4 + 2 * len(rows)


def test_the_verdict_comes_first_with_the_majority_baseline(tmp_path):
    fake_run(tmp_path / "runs" / "vit-1", model="tf_transformer", seed=1, skill=0.2)
    b = fake_run(tmp_path / "runs" / "resnet-1", model="torch_resnet", seed=2, skill=4.0)
    md = build_report(find_latest_runs(tmp_path / "runs"), tmp_path / "r", n_resamples=200).read_text()
    assert md.index("## Verdict") < md.index("## Metrics") < md.index("## Is the difference real?")
    verdict = md.split("## Verdict")[1].split("Runs (relative")[0]
    assert "**ResNet is ahead of Transformer** on test balanced accuracy" in verdict
    assert _row(verdict, "majority-class guess") == ["0.500 (chance: 1/K)", "0.500", "0.500"]  # 18 / 18
    assert _row(verdict, "ResNet")[0].startswith(f"{skm.balanced_accuracy_score(b[0], b[1].argmax(1)):.3f} (")
    fake_run(tmp_path / "close" / "vit-1", model="tf_transformer", seed=3, skill=1.0)
    fake_run(tmp_path / "close" / "resnet-1", model="torch_resnet", seed=4, skill=1.0)
    md = build_report(find_latest_runs(tmp_path / "close"), tmp_path / "c", n_resamples=200).read_text()
    assert "**Transformer and ResNet are not significantly different** on test balanced accuracy" in md


def test_score_and_report_clis_take_their_options(two_runs, capsys):
    """`score --bootstrap N --no-plots` and `report --title T --bootstrap N --name --out-root --runs-root`."""
    import json

    from common.cli import main

    root, *_ = two_runs
    run = root / "runs" / "vit-1"
    assert main(["score", str(run), "--bootstrap", "30", "--no-plots"]) == 0
    assert json.loads((run / "metrics.json").read_text())["bootstrap"]["n_resamples"] == 30
    assert not (run / "confusion_test.png").exists() and not (run / "curves.png").exists()
    assert main(["score", str(run), "--bootstrap", "30"]) == 0
    assert (run / "confusion_test.png").is_file() and (run / "curves.png").is_file()
    capsys.readouterr()
    assert main(["report", "--runs-root", str(root / "runs"), "--title", "Lab comparison", "--bootstrap", "40",
                 "--name", "mine", "--out-root", str(root / "out")]) == 0
    page = (root / "out" / "mine" / "report.md").read_text()
    assert page.startswith("# Lab comparison") and "bootstrap 95 % CI (40 resamples)" in page


def test_the_report_reads_in_a_browser(two_runs):
    """Headless Chromium at 1400 x 900: images load, the verdict fits the first screen, no cell overflows."""
    from browser import assert_readable

    root, *_ = two_runs
    md_path = build_report(find_latest_runs(root / "runs"), root / "reports" / "x", n_resamples=50)
    assert_readable(md_path.with_suffix(".html"))


def test_summary_follows_its_json_schema_and_marks_the_selected(two_runs):
    import json
    from pathlib import Path

    from common.evaluation.summary import mark_selected, summarise, validate

    root, *_ = two_runs
    summary = mark_selected(summarise([root / "runs" / "vit-1", root / "runs" / "resnet-1"], n_resamples=20),
                            ["resnet-1"])
    validate(summary)
    assert {label: e["selected"] for label, e in summary["models"].items()} == {"Transformer": False, "ResNet": True}
    with pytest.raises(DataError, match="--selected nothing: no such entry"):
        mark_selected(summary, ["nothing"])
    del summary["models"]["ResNet"]["training"]
    with pytest.raises(DataError, match="at models/ResNet: 'training' is a required property"):
        validate(summary)
    # Every committed summary is in the current schema and validates.
    results = Path(__file__).resolve().parents[1] / "results"
    committed = sorted(results.glob("*/summary.json")) + sorted(results.glob("*/*/summary.json"))
    assert len(committed) >= 8, committed
    for path in committed:
        validate(json.loads(path.read_text()), origin=str(path))


def test_each_model_keeps_one_style_in_every_figure():
    from common.evaluation.plots import model_style

    labels = ["Transformer", "ResNet (a)", "ResNet (b)", "Other"]
    vit, resnet_a, resnet_b = (model_style(label, labels) for label in labels[:3])
    assert vit["color"] != resnet_a["color"] and vit["linestyle"] != resnet_a["linestyle"]
    assert (resnet_a["color"], resnet_a["linestyle"]) == (resnet_b["color"], resnet_b["linestyle"])
    assert resnet_a["marker"] != resnet_b["marker"]  # two configurations of one model: same colour, other marker
    assert model_style("Transformer") == model_style("Transformer", labels)  # the same in every figure
    assert model_style("Other", labels)["color"] not in (vit["color"], resnet_a["color"])


def test_no_committed_report_shows_a_machine_path():
    """Committed reports and results name data relative to the report or by name, never /home/... or /tmp/..."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"(?<![\w.])/(?:home|tmp|root|work|Users|mnt|scratch|var/folders)/")
    import subprocess

    listed = subprocess.run(["git", "ls-files", "results", "reports"], cwd=root, capture_output=True, text=True)
    files = ([root / line for line in listed.stdout.splitlines()] if listed.returncode == 0
             else [p for folder in ("results", "reports") for p in (root / folder).rglob("*")])  # committed files
    offenders = [str(p.relative_to(root)) for p in files if p.suffix in (".md", ".json", ".csv", ".txt", ".html")
                 and p.is_file() and pattern.search(p.read_text(errors="replace"))]
    assert offenders == []


def test_a_summary_names_its_data_without_a_machine_path(tmp_path):
    from dataclasses import replace

    from common.evaluation.summary import summary_location
    from tests.conftest import fake_record

    data = fake_record().data  # the demo
    assert summary_location(data, tmp_path) == "demo"
    absolute = replace(data, source="manifest", location=str(tmp_path / "data" / "labels.csv"))
    assert summary_location(absolute, tmp_path / "results" / "x") == "../../data/labels.csv"
    assert summary_location(absolute, None) == "labels.csv"
    typed = replace(data, source="manifest", location="../shared/data/ixi/labels.csv")  # as typed: kept
    assert summary_location(typed, tmp_path) == "../shared/data/ixi/labels.csv"
