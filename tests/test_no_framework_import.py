import subprocess
import sys


def test_importing_common_loads_no_deep_learning_framework():
    code = (
        "import sys, common, common.cli, common.dataset, common.metrics, common.plots, common.report, "
        "common.options, common.tensorboard, common.rundir\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
