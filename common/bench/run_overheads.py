"""What a run spends outside its training steps, measured both ways in one command:

    python -m common.bench.run_overheads [--repeats 3] [--n 300] [--out FILE]

- Scoring: the bootstrap 95 % CIs of one split's predictions (accuracy, balanced accuracy, ROC AUC; 1000
  resamples of n binary predictions), one scikit-learn call per resample (point_metric: how
  common.evaluation.metrics computed them before) against every resample at once (resampled_metric: how
  it computes them now). A run scores val and test when it ends; reports score every run and the pooled
  predictions again.
- Transformer start: build, compile and the first training step (tracing) of the `small` preset at 32^3, batch 4,
  the optimizer's slots made by that step (Keras' default) or before it (compile_for_training, as training
  does). One fresh process per measurement (`python -m tf_transformer.bench --first-step ...`), the two
  alternated.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from common.atomic import write_or_print
from common.bench.io import run_json
from common.evaluation.metrics import BOOTSTRAP_METRICS, bootstrap_indices, point_metric, resampled_metric
from common.runs.hardware import cpu_description


def bootstrap_seconds(n: int, repeats: int, n_resamples: int = 1000) -> dict:
    """Median seconds of the three metrics' bootstrap, per resample with scikit-learn and vectorised, and
    the largest difference between the two ways' values (they must agree)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1).round(4)  # a model of some skill
    p = np.stack([1 - p1, p1], axis=1)
    y_hat = p.argmax(axis=1)
    rows = bootstrap_indices(n, n_resamples=n_resamples, seed=0)

    def per_resample():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return [np.array([point_metric(m, y[r], y_hat[r], p[r], 2) for r in rows]) for m in BOOTSTRAP_METRICS]

    def vectorised():
        return [resampled_metric(m, y, y_hat, p, rows, n_classes=2) for m in BOOTSTRAP_METRICS]

    timings = {"scikit-learn per resample": [], "vectorised": []}
    values = {}
    for _ in range(repeats):
        for name, compute in (("scikit-learn per resample", per_resample), ("vectorised", vectorised)):
            start = time.perf_counter()
            values[name] = compute()
            timings[name].append(time.perf_counter() - start)
    agree = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(*values.values()))
    return {"n": n, "resamples": n_resamples, "metrics": list(BOOTSTRAP_METRICS),
            "seconds": {k: statistics.median(v) for k, v in timings.items()}, "max_difference": agree}


def first_step_seconds(repeats: int) -> dict:
    runs: dict[str, list] = {"lazy": [], "prebuilt": []}
    for _ in range(repeats):
        for slots in runs:
            runs[slots].append(run_json("tf_transformer.bench", ["--first-step", slots, "--preset", "small",
                                                                 "--shape", "32", "--batch", "4"]))
    failed = [r for rs in runs.values() for r in rs if "error" in r]
    if failed:
        return {"error": failed[0]["error"], "command": failed[0]["command"]}
    return {"seconds": {k: statistics.median(r["seconds"] for r in rs) for k, rs in runs.items()},
            "all_seconds": {k: [r["seconds"] for r in rs] for k, rs in runs.items()}}


def render(result: dict) -> str:
    b = result["bootstrap"]
    old, new = b["seconds"]["scikit-learn per resample"], b["seconds"]["vectorised"]
    lines = ["# Run overheads", "", f"`{result['command']}` on {result['date']}; {result['machine']}.", "",
             f"Bootstrap 95 % CIs of one split ({', '.join(b['metrics'])}; {b['resamples']} resamples of n = {b['n']}), "
             f"median of {result['repeats']}:", "",
             "| way | seconds |", "|---|---|",
             f"| scikit-learn, one call per resample | {old:.3f} |", f"| every resample at once | {new:.4f} |", "",
             f"Vectorised: **{old / new:.0f}x** faster; largest difference between the two ways' values "
             f"{b['max_difference']:.1e}.", ""]
    f = result["first_step"]
    if "skipped" in f:
        lines += [f"Transformer first step: not measured ({f['skipped']}).", ""]
    elif "error" in f:
        lines += [f"Transformer first step: failed: {f['error']} (`{f['command']}`)", ""]
    else:
        lazy, pre = f["seconds"]["lazy"], f["seconds"]["prebuilt"]
        lines += ["Transformer `small`, 32^3, batch 4: build + compile + first training step (tracing), one process each, "
                  f"median of {result['repeats']}:", "", "| optimizer slots | seconds | all |", "|---|---|---|",
                  f"| made by the first step (Keras' default) | {lazy:.1f} | "
                  + ", ".join(f"{v:.1f}" for v in f["all_seconds"]["lazy"]) + " |",
                  f"| made before it (compile_for_training) | {pre:.1f} | "
                  + ", ".join(f"{v:.1f}" for v in f["all_seconds"]["prebuilt"]) + " |", "",
                  f"Prebuilt: **{lazy / pre:.2f}x** faster to the first step.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.bench.run_overheads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=300, help="predictions per split (default 300)")
    parser.add_argument("--no-transformer", action="store_true", help="the scoring part only (no TensorFlow)")
    parser.add_argument("--out", help="write the table here (default: print it)")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    result = {"command": " ".join(["python -m common.bench.run_overheads", *given]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{cpu_description()}; Python {platform.python_version()}", "repeats": args.repeats,
              "bootstrap": bootstrap_seconds(args.n, args.repeats),
              "first_step": ({"skipped": "--no-transformer"} if args.no_transformer
                             else first_step_seconds(args.repeats))}
    write_or_print(render(result) + "\n<!-- " + json.dumps(result) + " -->\n", args.out and Path(args.out),
                   "run overheads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
