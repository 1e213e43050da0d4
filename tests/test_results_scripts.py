"""Each committed results/<dataset>/commands.sh is how a reader reproduces that folder: it must parse, and a
step it does not know is one usage line and exit 2, before anything runs."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "results").glob("*/commands.sh"))


def test_there_are_results_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.parent.name)
def test_a_results_script_parses_and_refuses_an_unknown_step(script):
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    text = script.read_text()
    if not re.search(r"^case \$\{1:-", text, re.MULTILINE):
        return  # a script without steps: one sequence of commands, checked for syntax only
    done = subprocess.run(["bash", str(script), "no-such-step"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "usage:" in done.stderr and done.stdout == ""
    # every step the usage line names is one the script dispatches (a renamed step is caught here)
    usage = done.stderr.split("usage:", 1)[1].replace("$0", "").replace(str(script), "")
    steps = {step for labels in re.findall(r"^  ([a-z][a-z0-9|-]*)\)", text, re.MULTILINE) for step in labels.split("|")}
    named = {segment.split()[0] for segment in re.split(r"[|\[\]]", usage) if segment.split()}
    named = {word for word in named if word.islower()}  # not the arguments (CONFIG, RUN_DIR...)
    assert named and named <= steps, f"{script.parent.name}: usage names {sorted(named - steps)}, no step handles them"
