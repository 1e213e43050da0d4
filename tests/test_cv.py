"""Cross-validation: every (model, fold, seed) as a run, resumable, refused when changed, one report."""

import json

import numpy as np
import pytest

from common.errors import ConfigError
from common.evaluation.cv_report import corrected_resampled_t_test


def test_corrected_resampled_t_test_by_hand():
    d = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    result = corrected_resampled_t_test(d, test_train_ratio=0.25)
    # t = mean / sqrt((1/k + n2/n1) * var): 0.026 / sqrt((0.2 + 0.25) * 0.00053)
    assert result["t"] == pytest.approx(0.026 / np.sqrt(0.45 * d.var(ddof=1)))
    assert result["df"] == 4 and 0.1 < result["p_value"] < 0.5
    naive = d.mean() / np.sqrt(d.var(ddof=1) / 5)
    assert abs(result["t"]) < abs(naive)  # the correction is more cautious than a plain paired t-test
    assert np.isnan(corrected_resampled_t_test(np.zeros(3), 0.25)["p_value"])


def test_cv_options_the_plan_owns_are_refused(tmp_path, capsys):
    from common.cli import main

    assert main(["cv", "--name", "x", "--cv-root", str(tmp_path), "--seed", "3"]) == 2  # not --seeds: no abbreviations
    assert main(["cv", "--name", "x", "--cv-root", str(tmp_path), "--folds", "1"]) == 2
    assert main(["cv", "--name", "x", "--cv-root", str(tmp_path), "--resnet-args", "--dataset-name 'lab"]) == 2
    assert "--resnet-args '--dataset-name 'lab': No closing quotation" in capsys.readouterr().err
    # each job's threads come from --cpus-per-job: a --threads of the user's would be silently overridden
    assert main(["cv", "--name", "x", "--cv-root", str(tmp_path), "--resnet-args", "--threads 1"]) == 2
    assert "--threads: cv sets it for every job from its own --cpus-per-job; remove it" in capsys.readouterr().err
    assert main(["cv", "--name", "x", "--cv-root", str(tmp_path), "--seed=3", "--data", "demo"]) == 2
    assert "--seed=3: cv sets it for every job from its own --seeds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cv_checks_its_settings_with_the_trainers_before_writing_anything(make_manifest, cache_root, tmp_path, capsys):
    from common.cli import main

    manifest = make_manifest(n_subjects=16)  # 8 subjects a class
    command = ["cv", "--models", "resnet", "--cv-root", str(tmp_path / "cv"), "--data", str(manifest),
               "--label-column", "label", "--shape", "16", "16", "16", "--preset", "tiny", "--epochs", "1",
               "--cache-dir", str(cache_root), "--workers", "1"]
    assert main([*command, "--name", "typo", "--folds", "2", "--resnet-args", "--lrr 0.1"]) == 2
    assert "ResNet trainer refuses these settings (nothing was written): unrecognized arguments: --lrr" in \
        capsys.readouterr().err
    assert main([*command, "--name", "many", "--folds", "20"]) == 2
    assert "a stratified 20-fold split needs at least 20 per class" in capsys.readouterr().err
    assert main([*command, "--name", "quote", "--resnet-args", "--lr '0.1"]) == 2
    assert "--resnet-args" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()


def test_plan_differences_name_the_option_and_ignore_runtime_options():
    from common.runs.cv import plan_differences

    stored = {"models": ["resnet"], "folds": 5, "seeds": [0], "common_args": ["--lr", "0.001", "--threads", "2"],
              "model_args": {"resnet": ["--epochs", "60", "--quiet"]}}
    same = {**stored, "common_args": ["--lr", "0.001", "--workers", "4"], "model_args": {"resnet": ["--epochs", "60"]}}
    assert plan_differences(stored, same) == []
    changed = {**stored, "common_args": ["--lr=0.002", "--augment"], "model_args": {"resnet": []}}
    assert plan_differences(stored, changed) == ["--augment: (absent) -> (set)", "--lr: 0.001 -> 0.002",
                                                 "--epochs (resnet only): 60 -> (absent)"]


def _resnet_copy(root, to, swap_folds=False):
    """A cross-validation folder of ROOT's ResNet runs only; with swap_folds, each fold's runs stand as the next
    fold's (so every fold holds out other subjects than ROOT's)."""
    import shutil
    from dataclasses import asdict, replace

    from common.runs.cv import PLAN_FILE, read_plan

    plan = replace(read_plan(root), models=("resnet",))
    to.mkdir()
    (to / PLAN_FILE).write_text(json.dumps(asdict(plan)))
    for fold in range(plan.folds):
        for seed in plan.seeds:
            shutil.copytree(plan.run_dir(root, "resnet", fold, seed),
                            plan.run_dir(to, "resnet", (fold + 1) % plan.folds if swap_folds else fold, seed))
    return to


@pytest.mark.slow(minutes=3)
def test_cross_validation_end_to_end(make_manifest, cache_root, tmp_path, capsys):
    from common.cli import main
    from common.runs.record import read_record
    from common.runs.rundir import read_predictions

    manifest = make_manifest(n_subjects=16)
    command = ["cv", "--models", "resnet", "transformer", "--folds", "2", "--seeds", "0", "1", "--name", "t",
               "--parallel", "2", "--transformer-args", "--warmup-epochs 0",
               "--cv-root", str(tmp_path / "cv"), "--data", str(manifest), "--label-column", "label",
               "--shape", "16", "16", "16", "--preset", "tiny", "--epochs", "1", "--batch-size", "4",
               "--cache-dir", str(cache_root), "--workers", "1", "--precision", "fp32"]
    assert main(command) == 0
    root = tmp_path / "cv" / "t"
    runs = sorted(root.glob("*/fold*-seed*/config.json"))
    assert len(runs) == 8
    tests = [set(read_predictions(p.parent).select("test").sample_ids) for p in runs if "resnet" in str(p)]
    assert len(set().union(*tests)) == 16  # the test folds cover every sample
    assert read_record(root / "resnet" / "fold1-seed1").training.seed == 1
    warmups = {m: read_record(root / m / "fold0-seed0").training.warmup_epochs for m in ("resnet", "transformer")}
    assert warmups == {"resnet": 1, "transformer": 0}  # --transformer-args reach the transformer's runs only
    report = (root / "report" / "report.md").read_text()
    assert "corrected resampled t-test" in report and "Pooled out-of-fold" in report
    assert report.split("\n## ")[1].startswith("Verdict") and "majority class / chance | 0.500" in report
    assert "Recall per class (pooled out-of-fold): ResNet " in report
    from browser import assert_readable

    assert_readable(root / "report" / "report.html")  # in Chromium: the verdict on the first screen
    assert "sd of" in report and report.count("| ResNet | ") >= 4
    from common.evaluation.summary import SCHEMA, summarise

    summary = summarise([root], n_resamples=20)
    assert summary["schema"] == SCHEMA and set(summary["models"]) == {"ResNet", "Transformer"}
    resnet = summary["models"]["ResNet"]
    assert len(resnet["runs"]) == 4 and resnet["pooled_out_of_fold"]["n"] == 16
    assert resnet["mean"]["accuracy"] == pytest.approx(np.mean([r["test"]["accuracy"] for r in resnet["runs"]]))
    # A model tuned in its own cross-validation is reported with the others when the folds match. The other
    # folders are copies of this one's ResNet runs (what the report reads: plan, records, predictions), not
    # new trainings: a copy under another name is such a cross-validation; with its folds swapped it held
    # out other subjects in each fold, as another --split-seed would.
    both = _resnet_copy(root, tmp_path / "cv" / "t-lr")
    other_split = _resnet_copy(root, tmp_path / "cv" / "t-split", swap_folds=True)
    assert main(["report", str(root), str(both), "--out-root", str(tmp_path), "--name", "both"]) == 0
    joint = (tmp_path / "both" / "report.md").read_text()
    assert "| ResNet (t) | " in joint and "| ResNet (t-lr) | " in joint and "| Transformer | " in joint
    summary = summarise([root, both], n_resamples=20)
    assert set(summary["models"]) == {"ResNet (t)", "ResNet (t-lr)", "Transformer"}
    assert summary["models"]["ResNet (t-lr)"]["cv_folder"] == str(both)
    capsys.readouterr()
    assert main(["report", str(root), str(other_split), "--out-root", str(tmp_path)]) == 2
    assert "fold 0" in capsys.readouterr().err  # other held-out subjects: not comparable
    assert main(["report", str(root), str(runs[0].parent), "--out-root", str(tmp_path)]) == 2  # cv with a run
    from common.evaluation.robustness import cells_of, render

    cells = cells_of(root)  # the demo robustness matrix reads cv folders
    assert len(cells) == 8 and {c.precision for c in cells} == {"fp32"}
    assert all(0 <= c.test_accuracy <= 1 for c in cells)
    assert "| ResNet | tiny | fp32 | 4 | 0 |" in render(cells)
    capsys.readouterr()
    assert main(command) == 0  # the same command again: everything finished, nothing retrained
    assert "8 runs, 8 already finished" in capsys.readouterr().out
    assert main([*command, "--cpus-per-job", "1", "--workers", "1"]) == 0  # where and how it runs: not a setting
    capsys.readouterr()
    changed = [*command[:-2], "--precision", "bf16"]
    assert main(changed) == 2
    assert "other settings (stored -> requested): --precision: fp32 -> bf16" in capsys.readouterr().err
    from common.runs.cv import CVPlan, claim_plan

    with pytest.raises(ConfigError):
        claim_plan(root, CVPlan(("resnet",), 3, (0,), (), {}))
    # a fold ensemble: the mean of the members' probabilities
    from torch_resnet.cli import main as resnet_main

    def probabilities(run_dir, out):
        assert resnet_main(["predict", "--run-dir", str(run_dir), "--manifest", str(manifest), "--out", str(out)]) == 0
        return np.loadtxt(out, delimiter=",", skiprows=1, usecols=(2, 3))

    members = sorted((root / "resnet").glob("fold*-seed*/"))
    single = [probabilities(m, tmp_path / f"{m.name}.csv") for m in members if m.is_dir()]
    ensemble = probabilities(root / "resnet", tmp_path / "ensemble.csv")
    assert len(single) == 4 and np.allclose(ensemble, np.mean(single, axis=0), atol=1e-5)
    assert len(json.loads((tmp_path / "ensemble.csv.members.json").read_text())["members"]) == 4
    # the fold ensemble as a bundle: one graph per member, the same averaged probabilities
    assert main(["export", str(root / "resnet"), "--out", str(tmp_path / "bundle")]) == 0
    assert len(json.loads((tmp_path / "bundle" / "metadata.json").read_text())["members"]) == 4
    assert main(["predict", "--bundle", str(tmp_path / "bundle"), "--manifest", str(manifest), "--out",
                 str(tmp_path / "bundle.csv")]) == 0
    from_bundle = np.loadtxt(tmp_path / "bundle.csv", delimiter=",", skiprows=1, usecols=(2, 3))
    assert np.abs(from_bundle - ensemble).max() < 1e-4
    # The ensemble is read through the plan: a missing fold is named, a plain folder of runs refused.
    import shutil

    shutil.rmtree(root / "resnet" / "fold1-seed0")
    capsys.readouterr()
    assert resnet_main(["predict", "--run-dir", str(root / "resnet"), "--manifest", str(manifest), "--out",
                        str(tmp_path / "partial.csv")]) == 2
    assert "missing or unfinished: fold 1 seed 0" in capsys.readouterr().err
    assert resnet_main(["predict", "--run-dir", str(tmp_path / "cv"), "--manifest", str(manifest), "--out",
                        str(tmp_path / "everything.csv")]) == 2
    assert "a plain folder of runs is not averaged" in capsys.readouterr().err
    assert not (tmp_path / "partial.csv").exists() and not (tmp_path / "everything.csv").exists()
