"""Running one benchmark configuration per process and keeping its JSON: shared by every suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.atomic import atomic_write_text


def run_json(module: str, args: list[str], env_extra: dict | None = None, timeout: float | None = None) -> dict:
    """Run `python -m module args` (one benchmark configuration per process); its last stdout line is JSON.
    A failure, a crash (e.g. killed for memory) or a timeout comes back as {"error": ..., "command": ...}."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    command = [sys.executable, "-m", module, *args]
    shown = " ".join(["python", "-m", module, *args])
    if env_extra:
        shown = " ".join(f"{k}={v}" for k, v in env_extra.items()) + " " + shown
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "command": shown}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "command": shown}
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "no JSON result on stdout", "command": shown}
    result["command"] = shown
    return result


def save_json(path: Path, result: dict) -> None:
    atomic_write_text(Path(path), json.dumps(result, indent=1, default=str))
