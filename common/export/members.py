"""The model packages' `export` subcommand: each run's network as `member-<i>.onnx`, and the input layout.

Run by `python -m <package> export --run-dir RUN [--run-dir RUN ...] --out-dir DIR` (common.export.bundle
starts it in a child process: common imports no deep-learning framework)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

LAYOUT_FILE = "layout.json"


def member_file(index: int) -> str:
    return f"member-{index}.onnx"


def add_export_arguments(sub) -> None:
    export = sub.add_parser("export", help="the runs' networks as ONNX graphs (used by `python -m common export`)")
    export.add_argument("--run-dir", type=Path, action="append", required=True, help="a finished run (repeatable)")
    export.add_argument("--out-dir", type=Path, required=True, help="an existing folder for member-<i>.onnx")


def export_members(args: argparse.Namespace, export_run: Callable[[Path, Path], None], input_layout: str) -> None:
    import onnx

    opsets = set()
    for index, run_dir in enumerate(args.run_dir):
        out = args.out_dir / member_file(index)
        export_run(run_dir, out)
        opsets.add(next(o.version for o in onnx.load(str(out), load_external_data=False).opset_import
                        if o.domain in ("", "ai.onnx")))
    (args.out_dir / LAYOUT_FILE).write_text(json.dumps({"input_layout": input_layout, "opset": max(opsets),
                                                        "onnx": onnx.__version__}))
