"""tune/<name>/tuning.md: per model the budget used, the optimisation history, the parameters' importance
and the selected configuration, from the studies alone (val only: test is read by the cv that follows)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from common.atomic import atomic_write_text
from common.models import by_name
from common.runs.record import is_run_dir, read_record
from common.tune.study import OBJECTIVES, TunePlan


def budget_of(root: Path, model: str) -> dict:
    """Runs and training seconds of every trial run of `model` (finished or not), and the device."""
    seconds, runs, devices = 0.0, 0, set()
    for config in sorted((root / model).glob("t-*/fold*/config.json")):
        if not is_run_dir(config.parent):
            continue
        record = read_record(config.parent)
        runs += 1
        devices.add(record.device)
        if record.outcome is not None:
            seconds += record.outcome.train_seconds
    return {"runs": runs, "train_seconds": round(seconds, 1), "devices": sorted(devices)}


def trials_table(study, plan: TunePlan) -> list[str]:
    """Every trial: its state, its value (a pruned trial's: the running mean at the fold it stopped after), the
    folds it ran, and its parameters."""
    names = sorted({name for trial in study.trials for name in trial.params})
    lines = [f"| trial | state | mean val {plan.objective} | folds | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for trial in study.trials:
        steps = trial.intermediate_values
        value = trial.value if trial.value is not None else (steps[max(steps)] if steps else None)
        cells = [f"{trial.params[n]:.3g}" if isinstance(trial.params.get(n), float) else str(trial.params.get(n, ""))
                 for n in names]
        lines.append(f"| {trial.number} | {trial.state.name.lower()} | {'' if value is None else f'{value:.4f}'} | "
                     f"{len(steps)} | " + " | ".join(cells) + " |")
    return [*lines, "", "A failed trial is one a killed `tune` left running; it ran again as a new trial with "
            "the same parameters, and its finished folds were not trained again.", ""]


def trial_counts(study) -> dict[str, int]:
    return dict(Counter(trial.state.name.lower() for trial in study.trials))


def _history_figure(study, path: Path, label: str, objective: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in study.trials if t.value is not None]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.intermediate_values]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([t.number for t in complete], [t.value for t in complete], "o", color="tab:blue", label="complete")
    if pruned:
        ax.plot([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                "x", color="tab:gray", label="pruned (last reported)")
    best, values = [], []
    maximise = study.direction.name == "MAXIMIZE"
    for t in sorted(complete, key=lambda t: t.number):
        values.append(t.value)
        best.append((t.number, max(values) if maximise else min(values)))
    if best:
        ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=f"mean val {objective} over the folds", title=f"{label}: optimisation history")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importances(study) -> dict[str, float]:
    """fANOVA importance of each parameter (optuna.importance); empty with fewer than two complete trials."""
    import optuna

    if len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) < 2:
        return {}
    try:
        return {k: round(float(v), 3) for k, v in optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)).items()}
    except (RuntimeError, ValueError):  # e.g. every complete trial with the same value
        return {}


def write_tuning_report(root: Path, plan: TunePlan, studies: dict) -> Path:
    key, direction = OBJECTIVES[plan.objective]
    lines = [f"# Tuning: {root.name}", "",
             f"One Optuna study per model (seeded TPE, median pruning after each fold), the same search space for "
             f"the training options, the same {plan.folds} folds and the same trial budget. Objective: the mean "
             f"val {plan.objective} over the folds ({direction}). Only val was read; the selected configurations "
             f"then ran through cross-validation (`cv/report/report.md`), where test is read once.", ""]
    summary = {}
    for model, study in studies.items():
        label = by_name(model).label
        counts, budget = trial_counts(study), budget_of(root, model)
        best = study.best_trial
        figure = root / f"history_{model}.png"
        _history_figure(study, figure, label, plan.objective)
        weights = importances(study)
        summary[model] = {"trials": counts, "budget": budget, "best_value": best.value, "best_params": best.params,
                          "best_trial": best.number, "importance": weights}
        lines += [f"## {label}", "",
                  f"Trials: {', '.join(f'{n} {state}' for state, n in sorted(counts.items()))}. Budget: "
                  f"{budget['runs']} fold runs, {budget['train_seconds']:.0f} s of training on "
                  f"{', '.join(budget['devices']) or '?'}.", "",
                  f"Selected (trial {best.number}, mean val {plan.objective} {best.value:.4f}):", "",
                  "| parameter | value | importance |", "|---|---|---|"]
        lines += [f"| {name} | {value:.4g} | {weights.get(name, float('nan')):.3f} |" if isinstance(value, float)
                  else f"| {name} | {value} | {weights.get(name, float('nan')):.3f} |" for name, value in
                  sorted(best.params.items())]
        lines += ["", f"![{label}: optimisation history]({figure.name})", ""]
        lines += trials_table(study, plan)
    atomic_write_text(root / "tuning.json", json.dumps(summary, indent=1, default=str))
    out = root / "tuning.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
