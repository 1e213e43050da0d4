import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _makefile_bench_steps() -> list[list[str]]:
    """The commands of the Makefile's run_benchmarks recipe, as `make bench-quick` runs them."""
    recipe = re.search(r"define run_benchmarks\n(.*?)endef", (ROOT / "Makefile").read_text(), re.S).group(1)
    return [line.strip().split()[1:] for line in recipe.splitlines() if line.strip().startswith("$(PY)")]


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out, folder = tmp_path / "BENCH.md", tmp_path / "json"
    steps = _makefile_bench_steps()
    assert [s[1] for s in steps] == ["common.bench.suite", "torch_resnet.bench", "tf_transformer.bench",
                                     "common.bench.suite"]
    for step in steps:
        args = [a.replace("$(BENCH_DIR)", str(folder)).replace("$(1)", "--quick").replace("$(2)", str(out))
                .replace('"$(3)"', "make bench-quick") for a in step]
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, (args, done.stderr[-3000:])
    text = out.read_text()
    for heading in ("## Data pipeline", "## ResNet (seed architecture) training throughput",
                    "## ResNet memory of one training step", "## Transformer training throughput by backend",
                    "## Does the loader keep up?", "## Training memory of the seed presets at 192^3, on paper",
                    "## Transformer presets: the cost of the small-data recipe",
                    "## Saliency maps: seconds per volume",
                    "## t1-linear preprocessing (N4 + affine registration to MNI152)"):
        assert heading in text, heading
    assert "failed" not in text
    assert "2 processes vs 1" in text and "Checkpointing needs" in text
    assert "| torch_resnet | 16^3 |" in text and "| tf_transformer | 16^3 |" in text


def test_compile_payback_section_renders_both_caches():
    from common.bench.suite import _render_cpu_checks

    timing = {"warmup_seconds": 0.5, "step_seconds": 0.4}
    payback = {"preset": "small", "shape": 32, "batch": 8, "precision": "fp32", "channels_last": True,
               "eager": timing, "compiled_cold": {"warmup_seconds": 50.5, "step_seconds": 0.3},
               "compiled_warm": {"warmup_seconds": 3.5, "step_seconds": 0.3}, "compiled_speedup": 4 / 3,
               "payback_steps": 500.0, "payback_steps_warm": 30.0, "command": "python -m torch_resnet.bench compile"}
    text = "\n".join(_render_cpu_checks({"resnet_compile": payback}))
    assert "**1.33x** faster" in text and "after **500 steps** the first time" in text
    assert "after **30 steps** from a warm cache" in text
    never = "\n".join(_render_cpu_checks({"resnet_compile": {**payback, "payback_steps": None,
                                                              "payback_steps_warm": None}}))
    assert "never (compiled steps are not faster)" in never
