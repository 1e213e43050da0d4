"""`make report`: one side-by-side comparison of run directories, as report.md and a self-contained report.html.

Everything is recomputed from each run's predictions.csv and history.csv with common.evaluation.metrics, so
both models are scored by exactly the same code. Runs whose test sample ids differ are refused.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.data.sources import is_medmnist_file
from common.errors import DataError
from common.evaluation.formatting import fmt, with_ci
from common.evaluation.metrics import compute_metrics, learning_failure
from common.evaluation.stats import mcnemar_exact, paired_bootstrap_difference, reliability_bins
from common.models import PACKAGES, by_package
from common.runs.record import RunRecord, data_identity, is_run_dir, read_record
from common.runs.rundir import Predictions, read_history, read_predictions

SUMMARY_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"),
                   ("roc_auc", "ROC AUC"), ("log_loss", "log loss"))
SEED_REFERENCE = """\
For reference only, the seed lab's own figures (docs/design.md sections 2-3). They come from **another dataset**
(the lab's brain MRI at 192^3, on A100 GPUs, with its own split) and are not comparable with the numbers above.

| seed model | reported |
|---|---|
| Transformer | train loss 0.2616, train acc 0.8916, val loss 0.5043, val acc 0.7979 |
| 3D ResNet | best epoch 99; train loss 1.1192, test loss 1.3018; train acc 0.7839, test acc 0.5971 |
"""


@dataclass
class Run:
    path: Path
    label: str
    record: RunRecord
    predictions: Predictions
    history: list[dict]

    def split(self, name: str) -> Predictions:
        return self.predictions.select(name)


def find_latest_runs(runs_root: Path) -> list[Path]:
    """The newest finished transformer run and the newest finished ResNet run under runs_root."""
    latest: dict[str, tuple[str, Path]] = {}
    for run_dir in sorted(p for p in Path(runs_root).glob("*") if is_run_dir(p)):
        try:
            record = read_record(run_dir)
        except DataError:
            continue  # another version's or a damaged record: name it explicitly to see why
        if record.outcome is None or not (run_dir / "predictions.csv").is_file():
            continue  # unfinished run
        if record.model not in latest or record.created > latest[record.model][0]:
            latest[record.model] = (record.created, run_dir)
    return [latest[m][1] for m in PACKAGES if m in latest]


def load_runs(paths: list[Path]) -> list[Run]:
    if not paths:
        raise DataError("no finished run directories to report on (train a model first, or name run directories)")
    runs = []
    seen: dict[Path, Path] = {}
    for path in paths:
        if Path(path).resolve() in seen:
            raise DataError(f"{path}: named twice (also as {seen[Path(path).resolve()]}); a report compares "
                            "different runs")
        seen[Path(path).resolve()] = Path(path)
        record = read_record(path)
        if record.outcome is None:
            raise DataError(f"{path}: unfinished run (a training started or continued there did not finish); "
                            "rerun its training command to finish it, or leave it out")
        runs.append(Run(Path(path), by_package(record.model).label, record, read_predictions(Path(path) / "predictions.csv"),
                        read_history(path) if (Path(path) / "history.csv").is_file() else []))
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.path.name})"
    check_same_test_set(runs)
    return runs


def check_same_test_set(runs: list[Run]) -> None:
    """Runs are compared only on the same data, split, classes and test samples with the same labels."""
    first = runs[0]
    first_content = data_identity(first.record.data)
    for run in runs[1:]:
        differ = [f"{name}: {a} ({first.path}) vs {b} ({run.path})" for name, a, b in (
            ("data (content hash)", first_content, data_identity(run.record.data)),
            ("split hash", first.record.data.split_hash, run.record.data.split_hash),
            ("classes", list(first.record.data.classes), list(run.record.data.classes))) if a != b]
        if differ:
            raise DataError("runs were made on different data: " + "; ".join(differ)
                            + "; compare runs made on the same data and split")
    reference = set(first.split("test").sample_ids)
    for run in runs[1:]:
        ids = set(run.split("test").sample_ids)
        if ids != reference:
            only_first, only_other = sorted(reference - ids), sorted(ids - reference)
            raise DataError(
                f"runs have different test sets: {first.path} has {len(only_first)} test sample(s) that {run.path} "
                f"lacks (e.g. {only_first[:3]}) and {run.path} has {len(only_other)} it lacks (e.g. {only_other[:3]}); "
                "compare runs made on the same data and split")
        if run.predictions.classes != first.predictions.classes:
            raise DataError(f"runs have different classes: {first.predictions.classes} vs {run.predictions.classes}")
    check_true_classes_agree([(run.path, run.split("test")) for run in runs])


def check_true_classes_agree(named: list[tuple[Path, Predictions]]) -> None:
    """Every sample id has one true class across the runs' predictions, else refuse: not the same data."""
    truth: dict[str, tuple[int, Path]] = {}
    for path, predictions in named:
        disagree, other = [], None
        for sample, y in zip(predictions.sample_ids, predictions.y_true):
            first_y, first_path = truth.setdefault(sample, (y, path))
            if first_y != y:
                disagree.append(sample)
                other = other or first_path
        if disagree:
            raise DataError(f"{path} and {other} disagree on the true class of {len(disagree)} test "
                            f"sample(s), e.g. {disagree[:5]}: not the same data")


def _aligned(run: Run, order: list[str]) -> Predictions:
    """The run's test predictions in the sample order `order` (for paired tests)."""
    test = run.split("test")
    position = {s: i for i, s in enumerate(test.sample_ids)}
    return test.take(np.array([position[s] for s in order]))


def shown_location(data, out_dir: Path | None) -> str:
    """Where the data came from without any machine's absolute path: the demo by name, an absolute path
    relative to the report (as typed when it was relative: it was relative to where the run started)."""
    if data.source == "demo":
        return "the synthetic demo (generated into the cache)"
    location = Path(data.location)
    if location.is_absolute() and out_dir is not None:
        return f"{data.source} `{os.path.relpath(location, Path(out_dir).resolve())}` (relative to this report)"
    return f"{data.source} `{location.name if location.is_absolute() else location}`"


def data_section(runs: list[Run], out_dir: Path | None = None) -> str:
    data = runs[0].record.data
    pre = data.preprocess
    lines = ["## Data", ""]
    lines.append(f"- source: {shown_location(data, out_dir)}; label column `{data.label_column}`; classes "
                 f"{', '.join(data.classes)}")
    lines.append(f"- target shape {pre.shape}, resize `{pre.resize}`, normalisation `{pre.normalize}`; data "
                 f"(content hash) `{data_identity(data)}`, split hash `{data.split_hash}` ({data.split_method})")
    hashes = {r.record.data.split_hash for r in runs}
    same = "all runs used the same split" if len(hashes) == 1 else f"split hashes differ: {sorted(hashes)}"
    lines.append(f"- test set check: every run predicted the same {len(runs[0].split('test'))} test samples; {same}")
    if data.dropped:
        lines.append(f"- **{len(data.dropped)} invalid sample(s) left out** (--drop-invalid): "
                     + ", ".join(f"`{k}`" for k in list(data.dropped)[:10]) + (" …" if len(data.dropped) > 10 else ""))
    if data.class_counts:
        classes = list(data.classes)
        lines += ["", "| split | " + " | ".join(classes) + " | total |", "|---" * (len(classes) + 2) + "|"]
        for split, per_class in data.class_counts.items():
            lines.append(f"| {split} | " + " | ".join(str(per_class.get(c, 0)) for c in classes)
                         + f" | {sum(per_class.values())} |")
    credit = data_credit(data)
    if credit:
        lines += ["", credit]
    return "\n".join(lines)


def data_credit(data) -> str | None:
    """The user's credit line, else the known one of IXI / a MedMNIST file / the synthetic demo, else none."""
    named = f"Data: {data.name}" if data.name else None
    if data.licence:
        return f"{named or 'Data'}: {data.licence}." if named else f"Data licence: {data.licence}."
    location = data.location.lower()
    if "ixi" in location:
        return "Data: IXI dataset (brain-development.org), Imperial College London, CC BY-SA 3.0."
    if data.source == "medmnist" and is_medmnist_file(data.location):
        return "Data: MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), CC BY 4.0."
    if data.source == "demo":
        return "Data: the built-in **synthetic** demo volumes (not real scans)."
    return f"{named}." if named else None


def learning_warnings(runs: list[Run], metrics: dict[str, dict[str, dict]]) -> list[str]:
    """A red line per run whose test predictions show no learning (common.evaluation.metrics.learning_failure)."""
    out = []
    for run in runs:
        failure = learning_failure(metrics[run.label]["test"])
        if failure:
            out.append(f"**Warning — {run.label} did not learn:** {failure}. "
                       "Its numbers below measure a failed training, not the model.")
    return out


def metrics_section(runs: list[Run], metrics: dict[str, dict[str, dict]], *, n_resamples: int) -> str:
    lines = ["## Metrics", ""]
    for warning in learning_warnings(runs, metrics):
        lines += [warning, ""]
    lines += [f"Point estimate with its seeded bootstrap 95 % CI ({n_resamples} resamples) where given.", ""]
    for split in ("val", "test"):
        present = [r for r in runs if split in metrics[r.label]]
        if not present:
            continue
        lines += [f"### {split}", "", "| metric | " + " | ".join(r.label for r in present) + " |",
                  "|---" * (len(present) + 1) + "|"]
        for key, title in SUMMARY_METRICS:
            lines.append(f"| {title} | " + " | ".join(with_ci(metrics[r.label][split], key) for r in present) + " |")
        lines.append("| n | " + " | ".join(str(metrics[r.label][split]["n"]) for r in present) + " |")
        lines.append("")
    classes = runs[0].predictions.classes
    lines += ["### Per class (test)", "", "| class | " + " | ".join(f"{r.label} P / R / F1" for r in runs)
              + " | support |", "|---" * (len(runs) + 2) + "|"]
    for c in classes:
        cells = []
        for r in runs:
            pc = metrics[r.label]["test"]["per_class"][c]
            cells.append(f"{fmt(pc['precision'])} / {fmt(pc['recall'])} / {fmt(pc['f1'])}")
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {metrics[runs[0].label]['test']['per_class'][c]['support']} |")
    return "\n".join(lines)


COMPARED = (("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC AUC"), ("accuracy", "accuracy"))
PRIMARY = ("balanced_accuracy", "balanced accuracy")  # the verdict's metric: chance is 1/K whatever the class balance


def paired_comparison(a: Run, b: Run, *, n_resamples: int = 1000) -> dict:
    """B - A on the same test samples: {metric: (difference, (low, high))} by paired bootstrap, and the exact
    McNemar test of which samples each got right."""
    order = sorted(a.split("test").sample_ids)
    pa, pb = _aligned(a, order), _aligned(b, order)
    y = pa.y_true
    out = {"mcnemar": mcnemar_exact(pa.y_pred == y, pb.y_pred == y)}
    for name, _ in COMPARED:
        diff = paired_bootstrap_difference(name, y, (pa.y_pred, pa.probabilities), (pb.y_pred, pb.probabilities),
                                           n_classes=len(pa.classes), n_resamples=n_resamples)
        out[name] = (diff["difference"], tuple(diff["ci95"]))
    return out


def verdict_section(runs: list[Run], metrics: dict[str, dict[str, dict]], comparisons: dict[str, dict]) -> str:
    """The answer first: which model is ahead on test, by how much, how sure; and what a majority-class
    guess would score on the same test set."""
    key, title = PRIMARY
    test = {r.label: metrics[r.label]["test"] for r in runs}
    lines = ["## Verdict", ""]
    if len(runs) >= 2:
        a = runs[0]
        for b in runs[1:]:
            d, (low, high) = comparisons[b.label][key]
            p = comparisons[b.label]["mcnemar"]["p_value"]
            if not np.isfinite(d):
                continue
            sure = low > 0 or high < 0
            leader, other = (b.label, a.label) if d > 0 else (a.label, b.label)
            head = (f"**{leader} is ahead of {other}** on test {title}" if sure
                    else f"**{a.label} and {b.label} are not significantly different** on test {title}")
            lines.append(f"{head}: {fmt(test[a.label][key])} vs {fmt(test[b.label][key])} "
                         f"({b.label} − {a.label} = {d:+.3f}, paired bootstrap 95 % CI {low:+.3f}…{high:+.3f}; "
                         f"exact McNemar p = {p:.3g} on accuracy).")
            lines.append("")
    else:
        lines += [f"One run: {runs[0].label}'s test {title} is {with_ci(test[runs[0].label], key)}.", ""]
    y = runs[0].split("test").y_true
    k = len(runs[0].predictions.classes)
    majority = float(np.bincount(y, minlength=k).max() / len(y)) if len(y) else float("nan")
    lines += [f"| model (test, n = {len(y)}) | {title} (95 % CI) | ROC AUC (95 % CI) | accuracy (95 % CI) |",
              "|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.label} | {with_ci(test[r.label], key)} | {with_ci(test[r.label], 'roc_auc')} "
                     f"| {with_ci(test[r.label], 'accuracy')} |")
    lines.append(f"| majority-class guess | {fmt(1 / k)} (chance: 1/K) | 0.500 | {fmt(majority)} |")
    return "\n".join(lines)


def comparison_sentences(a: Run, b: Run, *, n_resamples: int = 1000, comparison: dict | None = None) -> list[str]:
    """Plain sentences on whether B differs from A on the same test samples."""
    comparison = comparison or paired_comparison(a, b, n_resamples=n_resamples)
    test = comparison["mcnemar"]
    verdict = "significant at 0.05" if test["p_value"] < 0.05 else "not significant"
    out = []
    for name, title in COMPARED:
        d, (low, high) = comparison[name]
        if not np.isfinite(d):
            continue
        ci_note = "excludes 0" if (low > 0 or high < 0) else "includes 0"
        if d == 0:
            sentence = f"{b.label}'s {title} equals {a.label}'s"
        else:
            sentence = (f"{b.label}'s {title} is {'higher' if d > 0 else 'lower'} than {a.label}'s by {abs(d):.3f}")
        sentence += f" (paired bootstrap 95 % CI of the difference {low:+.3f}…{high:+.3f}, {ci_note})"
        if name == "accuracy":  # McNemar tests accuracy: which samples each model got right
            sentence += f"; exact McNemar p = {test['p_value']:.3g} ({test['a_only']} test samples only {a.label} " \
                        f"got right, {test['b_only']} only {b.label}): {verdict}"
        out.append(sentence + ".")
    return out


def facts_section(runs: list[Run]) -> str:
    def outcome(r: RunRecord, name: str):
        return getattr(r.outcome, name) if r.outcome else None

    rows = [("preset", lambda r: r.preset),
            ("parameters", lambda r: f"{r.parameters:,}"),
            ("FLOPs / sample (forward)", lambda r: _si(r.flops_per_sample)),
            ("training time", lambda r: _duration(outcome(r, "train_seconds"))),
            ("samples / s (training)", lambda r: fmt(outcome(r, "samples_per_second"), 2)),
            ("peak memory", lambda r: _bytes(outcome(r, "peak_memory_bytes"))),
            ("best epoch (on val) / epochs run", lambda r: f"{outcome(r, 'best_epoch')} / {outcome(r, 'epochs_run')}"),
            ("decision", lambda r: "argmax" if outcome(r, "threshold") is None else
             f"'{r.data.classes[1]}' at p >= {outcome(r, 'threshold'):.3f} (chosen on val)"),
            ("device", lambda r: r.device),
            ("precision", lambda r: f"{r.precision.resolved} ({r.precision.reason})"),
            ("libraries", lambda r: ", ".join(f"{k} {v}" for k, v in r.versions.items())),
            ("epochs / batch / optimizer / lr", lambda r: f"{r.training.epochs} / {r.training.batch_size} / "
                                                          f"{r.training.optimizer} / {r.training.lr}")]
    lines = ["## Model facts", "", "| | " + " | ".join(r.label for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for title, get in rows:
        lines.append(f"| {title} | " + " | ".join(str(get(r.record)) if get(r.record) is not None else "n/a"
                                                  for r in runs) + " |")
    lines.append("| run directory | " + " | ".join(f"`{r.path}`" for r in runs) + " |")
    return "\n".join(lines)


def _si(value) -> str | None:
    if not value:
        return None
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def _bytes(value) -> str | None:
    return f"{value / 2**30:.2f} GiB" if value else None


def _duration(seconds) -> str | None:
    if seconds is None:
        return None
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def write_figures(folder: Path, runs: list[Run], metrics: dict, calibration: dict[str, dict], *,
                  folds: dict[str, list] | None = None) -> dict[str, Path]:
    """The report's figures; `folds` (a cross-validation): label -> per-fold (y_true, probabilities), drawn
    as thin ROC curves under the pooled one."""
    from common.evaluation.plots import (
        save_confusion_matrices,
        save_reliability_diagram,
        save_roc_curves,
        save_training_curves,
    )

    classes = runs[0].predictions.classes
    figures = {
        "Confusion matrices (test)": save_confusion_matrices(
            folder / "confusion_test.png", {r.label: np.array(metrics[r.label]["test"]["confusion_matrix"]) for r in runs},
            classes),
        "ROC curves (test)": save_roc_curves(
            folder / "roc_test.png", {r.label: (r.split("test").y_true, r.split("test").probabilities) for r in runs},
            classes, folds=folds),
        "Reliability diagram (test)": save_reliability_diagram(
            folder / "reliability_test.png",
            calibration),
    }
    histories = {r.label: r.history for r in runs if r.history}
    if histories:
        figures["Training curves (train dashed, val solid)"] = save_training_curves(folder / "curves.png", histories)
    return figures


def build_report(run_dirs: list[Path], out_dir: Path, *, title: str = "Model comparison",
                 n_resamples: int = 1000) -> Path:
    runs = load_runs([Path(p) for p in run_dirs])
    metrics = {r.label: {s: compute_metrics(r.split(s), n_resamples=n_resamples)
                         for s in ("val", "test") if len(r.split(s))} for r in runs}
    for r in runs:
        if "test" not in metrics[r.label]:
            raise DataError(f"{r.path}/predictions.csv: no test predictions")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from common.explain.report_section import saliency_section

    saliency = saliency_section(runs, out_dir)
    for r in runs:  # shown relative to the report, so the links hold wherever the command ran
        r.path = Path(os.path.relpath(r.path.resolve(), out_dir.resolve()))
    calibration = {r.label: reliability_bins(r.split("test").y_true, r.split("test").probabilities) for r in runs}
    figures = write_figures(out_dir, runs, metrics, calibration)
    comparisons = {other.label: paired_comparison(runs[0], other, n_resamples=n_resamples) for other in runs[1:]}
    parts = [f"# {title}", "", verdict_section(runs, metrics, comparisons), "",
             "Runs (relative to this report): " + ", ".join(f"{r.label} `{r.path}`" for r in runs),
             "", data_section(runs, out_dir), "",
             metrics_section(runs, metrics, n_resamples=n_resamples), ""]
    if len(runs) >= 2:
        parts += ["## Is the difference real?", "", "Paired on the same test samples; selection was on val only.", ""]
        for other in runs[1:]:
            parts += [f"- {s}" for s in comparison_sentences(runs[0], other, n_resamples=n_resamples,
                                                             comparison=comparisons[other.label])]
        parts.append("")
    else:
        parts += ["## Is the difference real?", "", "Only one run: nothing to compare.", ""]
    parts += ["## Calibration", "", " ".join(
        f"{label}: expected calibration error {bins['ece']:.3f} (10 bins)." for label, bins in calibration.items()), ""]
    parts += ["## Figures", ""]
    for caption, path in figures.items():
        parts += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    parts += saliency
    parts += [facts_section(runs), "", "## The seed's reported figures", "", SEED_REFERENCE]
    markdown_text = "\n".join(parts)
    atomic_write_text(out_dir / "report.md", markdown_text)
    atomic_write_text(out_dir / "report.html", to_html(markdown_text, out_dir, title))
    return out_dir / "report.md"


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;cursor:zoom-in}code{background:#f5f5f5;padding:1px 3px}.warning{color:#c00}
img.zoom{position:fixed;inset:0;margin:auto;max-width:96vw;max-height:96vh;z-index:10;background:#fff;
box-shadow:0 0 0 100vmax rgba(0,0,0,.6);cursor:zoom-out}"""
# Click a figure to see it at the screen's size; click again (or Escape) to put it back.
HTML_SCRIPT = ("document.addEventListener('click',e=>{if(e.target.tagName==='IMG')e.target.classList.toggle('zoom')});"
               "document.addEventListener('keydown',e=>{if(e.key==='Escape')document.querySelectorAll('img.zoom')"
               ".forEach(i=>i.classList.remove('zoom'))});")


def to_html(markdown_text: str, folder: Path, title: str) -> str:
    """The report as one HTML file with every figure embedded as a data: URI.

    Class names, sample ids, dataset names and titles come from someone's data and reach the Markdown
    as text: raw HTML is not passed through (Python-Markdown's html_block and inline html handlers are
    removed), so `<img onerror=...>` in a label is shown, never run."""
    import html

    import markdown

    converter = markdown.Markdown(extensions=["tables"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = converter.convert(markdown_text)
    body = body.replace("<p><strong>Warning — ", "<p class='warning'><strong>Warning — ")

    def embed(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"/:]+\.png)"', embed, body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head><body>{body}<script>{HTML_SCRIPT}</script></body></html>")
