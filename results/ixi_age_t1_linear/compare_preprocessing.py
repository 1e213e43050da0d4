"""t1-linear against the basic preprocessing: the same 5 folds, per model, paired.

    .venv/bin/python results/ixi_age_t1_linear/compare_preprocessing.py runs/cv/ixi_age_cv runs/cv/ixi_age_t1_linear_cv

Per model: the per-fold differences (t1-linear - basic) with the corrected resampled t-test (Nadeau & Bengio
2003, as the cross-validation report uses), and on the pooled out-of-fold predictions the paired-bootstrap
95 % CI of the difference and the exact McNemar test. Prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common.errors import DataError
from common.evaluation.cv_report import CVModel, corrected_resampled_t_test
from common.evaluation.stats import mcnemar_exact, paired_bootstrap_difference
from common.runs.cv import read_plan

METRICS = (("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC AUC"))


def main(basic_root: Path, aligned_root: Path) -> None:
    basic_plan, aligned_plan = read_plan(basic_root), read_plan(aligned_root)
    if basic_plan.folds != aligned_plan.folds:
        raise DataError("the two cross-validations have different fold counts")
    folds = basic_plan.folds
    print("| model | metric | basic, mean over folds | t1-linear, mean over folds | difference per fold (t-test p) "
          "| pooled difference [95 % CI] |\n|---|---|---|---|---|---|")
    notes = []
    for model in basic_plan.models:
        a, b = CVModel(basic_root, basic_plan, model), CVModel(aligned_root, aligned_plan, model)
        if a.pooled.sample_ids != b.pooled.sample_ids:
            raise DataError(f"{model}: the pooled test samples differ; not the same folds")
        for key, name in METRICS:
            per_fold_a, per_fold_b = a.fold_means(key, folds), b.fold_means(key, folds)
            test = corrected_resampled_t_test(per_fold_b - per_fold_a, test_train_ratio(a))
            pooled = paired_bootstrap_difference(key, a.pooled.y_true, (a.pooled.y_pred, a.pooled.probabilities),
                                                 (b.pooled.y_pred, b.pooled.probabilities),
                                                 n_classes=len(a.pooled.classes))
            low, high = pooled["ci95"]
            print(f"| {a.label} | {name} | {per_fold_a.mean():.3f} | {per_fold_b.mean():.3f} | "
                  f"{test['mean']:+.3f} (p = {test['p_value']:.3f}) | {pooled['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |")
        mcnemar = mcnemar_exact(a.pooled.y_pred == a.pooled.y_true, b.pooled.y_pred == b.pooled.y_true)
        notes.append(f"{a.label}: McNemar on pooled correctness: basic only right {mcnemar['a_only']}, t1-linear only "
                     f"right {mcnemar['b_only']}, p = {mcnemar['p_value']:.3f}.")
    print("\n" + "\n".join(f"- {n}" for n in notes))


def test_train_ratio(model: CVModel) -> float:
    """n_test / n_train of the folds, as the cross-validation report computes it."""
    ratios = [sum(r.data.class_counts["test"].values()) / sum(r.data.class_counts["train"].values())
              for r, _ in model.runs.values()]
    return float(np.mean(ratios))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
