"""Which ResNet stage Grad-CAM should read, selected on val: the pointing game of every stage's map on the
demo's val lesions, per trained ResNet; then test for the selected stage and the last stage (the record).

    python results/explain_demo/gradcam_layers.py RUN_DIR... > results/explain_demo/gradcam_layers.md

Each stage's maps go to RUN/explain/<split>-<layer>/ (`python -m torch_resnet explain --gradcam-layer`).
Selection: the highest val pointing game; a tie goes to the deepest stage (the most class-specific)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from common.explain.checks import lesion_masks, pointing_game
from common.runs.record import read_record
from torch_resnet.cli import main as resnet_main

LAYERS = [f"layer{n}" for n in range(3, 12)]


def game(run_dir: Path, split: str, layer: str):
    out = run_dir / "explain" / f"{split}-{layer}"
    if not (out / "saliency.csv").is_file():
        with contextlib.redirect_stdout(sys.stderr):  # explain's progress: not part of the table
            code = resnet_main(["explain", "--run-dir", str(run_dir), "--split", split, "--method", "gradcam",
                                "--target", "lesion", "--gradcam-layer", layer, "--out", str(out)])
        if code != 0:
            raise SystemExit(f"explain {run_dir} {split} {layer}: exit {code}")
    return pointing_game(out, lesion_masks(read_record(run_dir), None))


def show(p) -> str:
    return f"{p.value:.3f} ({p.hits}/{p.total}) [{p.low:.2f}, {p.high:.2f}]"


def main(run_dirs: list[Path]) -> None:
    print("| run (preset) | " + " | ".join(LAYERS) + " | selected on val | test: selected | test: layer11 |")
    print("|---|" + "---|" * (len(LAYERS) + 3))
    for run_dir in run_dirs:
        val = {layer: game(run_dir, "val", layer) for layer in LAYERS}
        selected = max(reversed(LAYERS), key=lambda layer: val[layer].value)  # ties: the deepest
        cells = " | ".join(f"{val[layer].hits}/{val[layer].total}" for layer in LAYERS)
        print(f"| {run_dir.name} ({read_record(run_dir).preset}) | {cells} | {selected} | "
              f"{show(game(run_dir, 'test', selected))} | {show(game(run_dir, 'test', 'layer11'))} |")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
