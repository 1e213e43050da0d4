"""The report of a cross-validation (`python -m common report cv/<name> [cv/<other> ...]`): how sure we are.

Several cross-validation folders go into one report when they share folds, seeds and data (checked
fold by fold on the test samples): each model is tuned in its own folder, the selected ones compared.

- per fold x seed test metrics and their mean +- sd;
- pooled out-of-fold predictions (each sample predicted by the models that never saw it, averaged
  over seeds) with bootstrap CIs, confusion matrix, ROC and reliability;
- the two models compared across folds with the corrected resampled t-test (Nadeau & Bengio 2003)
  and on the pooled predictions with McNemar's test and paired bootstrap CIs;
- the seed-to-seed spread: how much a rerun moves the cross-validated result.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

from common.atomic import atomic_write_text
from common.errors import DataError
from common.evaluation.formatting import fmt, with_ci
from common.evaluation.metrics import compute_metrics
from common.evaluation.report import (
    SUMMARY_METRICS,
    Run,
    comparison_sentences,
    data_section,
    learning_warnings,
    to_html,
    write_figures,
)
from common.models import by_name
from common.runs.cv import read_plan
from common.runs.decision import decide, mean_threshold
from common.runs.record import data_identity, read_record
from common.runs.rundir import Predictions, read_predictions


def corrected_resampled_t_test(differences: np.ndarray, test_train_ratio: float) -> dict:
    """Nadeau & Bengio (2003): the variance of k-fold differences is inflated by 1/k + n_test/n_train,
    because the training sets overlap; plain paired t-tests on folds are far too confident."""
    d = np.asarray(differences, dtype=float)
    k = len(d)
    variance = d.var(ddof=1) if k > 1 else 0.0
    if k < 2 or variance == 0:
        return {"mean": float(d.mean()), "t": float("nan"), "p_value": float("nan"), "df": k - 1}
    t = d.mean() / np.sqrt((1 / k + test_train_ratio) * variance)
    return {"mean": float(d.mean()), "t": float(t), "p_value": float(2 * stats.t.sf(abs(t), k - 1)), "df": k - 1}


class CVModel:
    """One model's runs of a cross-validation: their test metrics and the pooled out-of-fold predictions."""

    def __init__(self, root: Path, plan, model: str, label: str | None = None):
        self.root, self.plan, self.name, self.label = Path(root), plan, model, label or by_name(model).label
        self.runs = {}  # (fold, seed) -> (record, test Predictions)
        for fold in range(plan.folds):
            for seed in plan.seeds:
                run_dir = plan.run_dir(root, model, fold, seed)
                record = read_record(run_dir)
                if record.outcome is None:
                    raise DataError(f"{run_dir}: unfinished; rerun the cv command to finish it")
                self.runs[(fold, seed)] = (record, read_predictions(run_dir).select("test"))
        self.metrics = {key: compute_metrics(pred, n_resamples=1) for key, (_, pred) in self.runs.items()}
        self.pooled = self._pool(plan)

    def _pool(self, plan) -> Predictions:
        """Each sample's test probabilities averaged over seeds (it is in exactly one test fold); its class by
        its fold's decision rule (argmax, or the mean of the fold's seed runs' val thresholds)."""
        first = next(iter(self.runs.values()))[1]
        by_sample: dict[str, list] = {}
        truth, subject = {}, {}
        for (fold, _), (_, pred) in self.runs.items():
            for i, sample in enumerate(pred.sample_ids):
                by_sample.setdefault(sample, []).append((fold, pred.probabilities[i]))
                truth[sample], subject[sample] = pred.y_true[i], pred.subject_ids[i]
        thresholds = {fold: mean_threshold([record.outcome.threshold for (f, _), (record, _) in self.runs.items()
                                            if f == fold], where=f"{self.root / self.name} fold {fold}")
                      for fold in range(plan.folds)}
        for sample, entries in by_sample.items():
            if len({fold for fold, _ in entries}) != 1 or len(entries) != len(plan.seeds):
                raise DataError(f"sample {sample} is in the test set of folds {sorted({f for f, _ in entries})}: "
                                "the folds do not partition the data")
        ids = sorted(by_sample)
        probabilities = np.array([np.mean([p for _, p in by_sample[s]], axis=0) for s in ids])
        y_pred = np.array([decide(p[None], thresholds[by_sample[s][0][0]])[0] for s, p in zip(ids, probabilities)])
        return Predictions(first.path, first.classes, ids, [subject[s] for s in ids], np.array(["test"] * len(ids)),
                           np.array([truth[s] for s in ids]), y_pred, probabilities)

    def fold_means(self, metric: str, folds: int) -> np.ndarray:
        """(folds,) the metric per fold, averaged over seeds."""
        return np.array([np.mean([m[metric] for (f, _), m in self.metrics.items() if f == fold])
                         for fold in range(folds)])

    def seed_spread(self, metric: str, seeds) -> float | None:
        """sd across seeds of the fold-averaged metric: how much a rerun with another seed moves it."""
        if len(seeds) < 2:
            return None
        per_seed = [np.mean([m[metric] for (_, s), m in self.metrics.items() if s == seed]) for seed in seeds]
        return float(np.std(per_seed, ddof=1))

    def as_run(self) -> Run:
        """The pooled predictions as a report Run; its record's class counts are those of the pooled set."""
        record = next(iter(self.runs.values()))[0]
        classes = list(record.data.classes)
        counts = {"pooled test folds": {c: int((self.pooled.y_true == i).sum()) for i, c in enumerate(classes)}}
        record = replace(record, data=replace(record.data, class_counts=counts))
        return Run(self.root / self.name, self.label, record, self.pooled, [])

    def test_samples(self, fold: int) -> set[str]:
        return {s for (f, _), (_, pred) in self.runs.items() if f == fold for s in pred.sample_ids}


def load_cv_models(roots: list[Path]) -> tuple[object, list[CVModel]]:
    """The plan (folds, seeds) and every model of one or more cross-validation folders, checked to be
    comparable: the same folds and seeds, the same data content, and fold by fold the same test samples
    (another split seed or fold count would pair different held-out subjects). A model that appears in
    two folders is labelled with its folder's name."""
    roots = [Path(r) for r in roots]
    plans = [read_plan(r) for r in roots]
    for root, plan in zip(roots[1:], plans[1:]):
        if (plan.folds, plan.seeds) != (plans[0].folds, plans[0].seeds):
            raise DataError(f"{root}: {plan.folds} folds, seeds {list(plan.seeds)}; {roots[0]} has "
                            f"{plans[0].folds} folds, seeds {list(plans[0].seeds)}: not comparable")
    entries = [(root, plan, m) for root, plan in zip(roots, plans) for m in plan.models]
    titles = [by_name(m).label for _, _, m in entries]
    models = [CVModel(root, plan, m, by_name(m).label if titles.count(by_name(m).label) == 1
                      else f"{by_name(m).label} ({root.name})") for root, plan, m in entries]
    hashes = {data_identity(r.data) for m in models for r, _ in m.runs.values()}
    if len(hashes) != 1:
        raise DataError(f"{', '.join(map(str, roots))}: runs on different data (content hashes {sorted(hashes)})")
    for fold in range(plans[0].folds):
        reference = models[0].test_samples(fold)
        for other in models[1:]:
            if other.test_samples(fold) != reference:
                raise DataError(f"fold {fold}: {other.root} ({other.label}) tested other samples than "
                                f"{models[0].root} ({models[0].label}); were they split with another --split-seed?")
    return plans[0], models


def _mean_sd(values) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def fold_comparison(a: CVModel, b: CVModel, plan, key: str) -> dict:
    """B - A across folds on `key`: the corrected resampled t-test (Nadeau & Bengio 2003)."""
    ratios = [sum(r.data.class_counts["test"].values()) / sum(r.data.class_counts["train"].values())
              for r, _ in a.runs.values()]
    return corrected_resampled_t_test(b.fold_means(key, plan.folds) - a.fold_means(key, plan.folds),
                                      float(np.mean(ratios)))


def cv_verdict_section(models: list[CVModel], plan, pooled_runs: list[Run], pooled_metrics: dict) -> list[str]:
    """The answer first: which model is ahead in cross-validation (balanced accuracy, corrected resampled
    t-test across folds), and what a majority-class guess and chance would score on the same samples."""
    lines = ["## Verdict", ""]
    if len(models) == 2:
        a, b = models
        test = fold_comparison(a, b, plan, "balanced_accuracy")
        p = test["p_value"]
        if np.isfinite(p) and p < 0.05:
            leader, other = (b, a) if test["mean"] > 0 else (a, b)
            head = f"**{leader.label} is ahead of {other.label}**"
        else:
            head = f"**{a.label} and {b.label} are not significantly different**"
        lines += [f"{head} on balanced accuracy across the {plan.folds} folds: {b.label} − {a.label} = "
                  f"{test['mean']:+.3f} on average (corrected resampled t-test p = {fmt(p, 3)}).", ""]
    y = pooled_runs[0].predictions.y_true
    k = len(pooled_runs[0].predictions.classes)
    majority = float(np.bincount(y, minlength=k).max() / len(y)) if len(y) else float("nan")
    lines += [f"| model (pooled out-of-fold, n = {len(y)}) | balanced accuracy (95 % CI) | mean ± sd over "
              "folds × seeds | ROC AUC (95 % CI) |", "|---|---|---|---|"]
    for m, r in zip(models, pooled_runs):
        lines.append(f"| {m.label} | {with_ci(pooled_metrics[r.label]['test'], 'balanced_accuracy')} | "
                     f"{_mean_sd([x['balanced_accuracy'] for x in m.metrics.values()])} | "
                     f"{with_ci(pooled_metrics[r.label]['test'], 'roc_auc')} |")
    lines += [f"| majority class / chance | {1 / k:.3f} | | 0.500 |", "",
              "Recall per class (pooled out-of-fold): " + "; ".join(
                  f"{r.label} " + ", ".join(f"{c} {pooled_metrics[r.label]['test']['per_class'][c]['recall']:.2f}"
                                            for c in r.predictions.classes) for r in pooled_runs) + ".", "",
              f"Predicting the majority class for every sample scores accuracy {majority:.3f} and balanced accuracy "
              f"{1 / k:.3f} (chance for {k} classes).", ""]
    return lines


def build_cv_report(roots: Path | list[Path], out_dir: Path, *, title: str = "Cross-validation",
                    n_resamples: int = 1000) -> Path:
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    plan, models = load_cv_models(roots)
    pooled_runs = [m.as_run() for m in models]
    pooled_metrics = {r.label: {"test": compute_metrics(r.predictions, n_resamples=n_resamples)} for r in pooled_runs}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from common.evaluation.stats import reliability_bins

    calibration = {r.label: reliability_bins(r.predictions.y_true, r.predictions.probabilities) for r in pooled_runs}
    folds = {m.label: [(pred.y_true, pred.probabilities) for _, (_, pred) in sorted(m.runs.items())] for m in models}
    figures = write_figures(out_dir, pooled_runs, pooled_metrics, calibration, folds=folds)
    first_record = next(iter(models[0].runs.values()))[0]
    parts = [f"# {title}", "", *cv_verdict_section(models, plan, pooled_runs, pooled_metrics),
             f"{plan.folds}-fold cross-validation (subject-grouped, stratified; in each fold the test fold is held "
             f"out and val is carved from the rest), seeds {list(plan.seeds)}, models "
             f"{', '.join(m.label for m in models)}: {len(models) * plan.folds * len(plan.seeds)} runs under "
             f"{', '.join(f'`{r}`' for r in roots)}. Selection on val only; each test fold touched once per run.", ""]
    plans = {m.root: m.plan for m in models}  # each folder's plan, read once by load_cv_models
    for root in roots:
        root_plan = plans[root]
        parts += [(f"Trainer options{f' (`{root}`)' if len(roots) > 1 else ''}: "
                   f"`{' '.join(root_plan.common_args) or '(defaults)'}`"
                   + "".join(f"; {by_name(m).label} only: `{' '.join(a)}`" for m, a in root_plan.model_args.items()
                             if a)), ""]
    parts += [data_section(pooled_runs, out_dir).replace(f"split hash `{first_record.data.split_hash}` "
                                                f"({first_record.data.split_method})", "one split per fold"), ""]
    parts += ["## Per fold and seed (test)", "",
              "| model | fold | seed | " + " | ".join(t for _, t in SUMMARY_METRICS) + " | n test |",
              "|---" * (len(SUMMARY_METRICS) + 4) + "|"]
    for m in models:
        for (fold, seed), metrics in sorted(m.metrics.items()):
            parts.append(f"| {m.label} | {fold} | {seed} | " + " | ".join(fmt(metrics[k]) for k, _ in SUMMARY_METRICS)
                         + f" | {metrics['n']} |")
    parts += ["", "## Mean ± sd over folds × seeds (test)", "",
              "| metric | " + " | ".join(m.label for m in models) + " |", "|---" * (len(models) + 1) + "|"]
    for key, name in SUMMARY_METRICS:
        parts.append(f"| {name} | " + " | ".join(_mean_sd([x[key] for x in m.metrics.values()]) for m in models) + " |")
    parts += ["", "## Pooled out-of-fold predictions", "",
              f"Each of the {len(pooled_runs[0].predictions)} samples predicted by the models of the fold that held it "
              "out, probabilities averaged over seeds; seeded bootstrap 95 % CIs.", ""]
    parts += learning_warnings(pooled_runs, pooled_metrics)
    parts += ["| metric | " + " | ".join(r.label for r in pooled_runs) + " |", "|---" * (len(pooled_runs) + 1) + "|"]
    for key, name in SUMMARY_METRICS:
        parts.append(f"| {name} | " + " | ".join(with_ci(pooled_metrics[r.label]["test"], key)
                                                 for r in pooled_runs) + " |")
    parts += ["", "## How much a rerun moves the result", ""]
    if len(plan.seeds) < 2:
        parts.append("One seed per fold: rerun with `--seeds 0 1 2` to measure the seed-to-seed spread.")
    for m in models:
        spread = m.seed_spread("balanced_accuracy", plan.seeds)
        if spread is not None:
            parts.append(f"- {m.label}: the fold-averaged balanced accuracy has an sd of {spread:.3f} across "
                         f"{len(plan.seeds)} seeds; AUC {m.seed_spread('roc_auc', plan.seeds):.3f}.")
    if len(models) == 2:
        parts += ["", "## Is the difference real?", ""]
        a, b = models
        for key, name in (("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC AUC")):
            test = fold_comparison(a, b, plan, key)
            verdict = ("significant at 0.05" if test["p_value"] < 0.05 else "not significant") \
                if np.isfinite(test["p_value"]) else "undefined (no variation across folds)"
            parts.append(f"- Across the {plan.folds} folds, {b.label}'s {name} is "
                         f"{'higher' if test['mean'] > 0 else 'lower' if test['mean'] < 0 else 'equal'} than "
                         f"{a.label}'s by {abs(test['mean']):.3f} on average; corrected resampled t-test "
                         f"(Nadeau & Bengio 2003) t = {fmt(test['t'], 2)}, df = {test['df']}, "
                         f"p = {fmt(test['p_value'], 3)}: {verdict}.")
        parts += [f"- On the pooled out-of-fold predictions: {s}" for s in
                  comparison_sentences(pooled_runs[0], pooled_runs[1], n_resamples=n_resamples)]
    parts += ["", "## Figures (pooled out-of-fold predictions; ROC: each fold × seed as a thin line)", ""]
    for caption, path in figures.items():
        parts += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    text = "\n".join(parts) + "\n"
    atomic_write_text(out_dir / "report.md", text)
    atomic_write_text(out_dir / "report.html", to_html(text, out_dir, title))
    return out_dir / "report.md"


def is_cv_folder(path: Path) -> bool:
    return (Path(path) / "plan.json").is_file()


def cv_folders_among(paths: list[Path]) -> list[Path]:
    """All of `paths` when they are cross-validation folders, none when none is; a mix is refused."""
    folders = [Path(p) for p in paths if is_cv_folder(p)]
    if folders and len(folders) != len(paths):
        raise DataError(f"{folders[0]} is a cross-validation folder: use cross-validations together, "
                        "not with single runs")
    return folders


__all__ = ["build_cv_report", "corrected_resampled_t_test", "cv_folders_among", "is_cv_folder",
           "load_cv_models"]
