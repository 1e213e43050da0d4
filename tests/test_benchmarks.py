import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "BENCH.md"
    done = subprocess.run([sys.executable, "-m", "common.benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Data pipeline", "## ResNet (seed architecture) training throughput",
                    "## ResNet memory of one training step", "## Transformer training throughput by backend"):
        assert heading in text, heading
    assert "failed" not in text
    assert "2 processes vs 1" in text and "Checkpointing needs" in text
