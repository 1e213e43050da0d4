"""The report's "What the models look at": the same test cases side by side for every run and method.

Reads what `explain --split test` wrote under each run (<run>/explain/<method>/); computes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.explain.run import METHODS, SETTINGS, file_stem, read_table

HOW_TO = ("No saliency maps yet: `make explain ARGS=\"--run-dir RUN --split test [--method occlusion]\"` for each run "
          "writes them, and the next report shows them here.")


def _tables(run_path: Path) -> dict[str, dict[str, dict]]:
    """method -> sample id -> saliency.csv row, for the test-split explanations of one run."""
    out = {}
    for method in METHODS:
        folder = Path(run_path) / "explain" / method
        if (folder / SETTINGS).is_file():
            rows = {row["sample_id"]: row for row in read_table(folder) if row["y_true"]}
            if rows:
                out[method] = rows
    return out


def pick_cases(runs, shared: set[str]) -> list[tuple[str, str]]:
    """(sample id, why) per class: one every run gets right and one some run gets wrong, where they exist."""
    test = [run.split("test") for run in runs]
    first = test[0]
    cases = []
    for k, name in enumerate(first.classes):
        ids = [s for s, y in zip(first.sample_ids, first.y_true) if y == k and s in shared]
        right = [s for s in ids if all(_prediction(t, s) == name for t in test)]
        wrong = [s for s in ids if any(_prediction(t, s) != name for t in test)]
        cases += [(s, f"{name}, all right") for s in right[:1]] + [(s, f"{name}, some wrong") for s in wrong[:1]]
    return cases


def _prediction(predictions, sample_id: str) -> str:
    return predictions.classes[int(predictions.y_pred[predictions.sample_ids.index(sample_id)])]


def saliency_section(runs, out_dir: Path) -> list[str]:
    """Markdown lines; copies the chosen figures into out_dir (flat names: the HTML embeds them)."""
    lines = ["## What the models look at", ""]
    tables = {run.label: _tables(run.path) for run in runs}
    columns = [(run, method) for run in runs for method in METHODS if method in tables[run.label]]
    if not columns:
        return lines + [HOW_TO, ""]
    shared = set.intersection(*(set(tables[run.label][method]) for run, method in columns))
    cases = pick_cases(runs, shared)
    if not cases:
        return lines + ["The runs' saliency maps cover no test case in common.", ""]
    lines += ["Saliency maps for the same test cases (three planes through each map's peak; brighter = more evidence "
              "for the mapped class, which is the model's prediction unless `--target` chose one). "
              "Maps: `<run>/explain/<method>/maps/*.nii.gz`, on each scan's own grid. Click a figure to enlarge it.",
              ""]
    for sample_id, why in cases:
        lines += [f"### `{sample_id}` ({why})", ""]
        for run, method in columns:
            row = tables[run.label][method][sample_id]
            name = f"saliency-{file_stem(run.label)}-{method}-{file_stem(sample_id)}.png"
            shutil.copyfile(Path(run.path) / "explain" / method / row["figure"], Path(out_dir) / name)
            lines += [f"**{run.label}, {method}** — predicted {row['y_pred']}, map of {row['target']}:", "",
                      f"![{run.label} {method} {sample_id}]({name})", ""]
    return lines
