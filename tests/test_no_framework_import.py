import subprocess
import sys


def test_importing_common_loads_no_deep_learning_framework():
    code = (
        "import sys, common, common.cli, common.data.dataset, common.evaluation.metrics, common.evaluation.plots, common.evaluation.report, "
        "common.runs.options, common.runs.tensorboard, common.runs.rundir\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
