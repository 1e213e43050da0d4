"""The job runner (common.runs.jobs) on a real local Ray cluster: --parallel bounds the jobs in flight even
when each job declares few enough CPUs for Ray to pack more of them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.cli import build_parser
from common.errors import ConfigError
from common.runs.jobs import Job, Resources, cluster, resources_from_args, run_jobs

# Each job marks itself running, waits, counts the jobs running beside it, and leaves: the largest count
# seen is how many ran at once.
OVERLAP_PROBE = """
import os, pathlib, sys, time
running = pathlib.Path(sys.argv[1]); me = running / sys.argv[2]
me.touch(); time.sleep(1.5)
seen = len(list(running.iterdir()))
with open(running.parent / "seen.txt", "a") as out: out.write(f"{seen} {os.nice(0)}\\n")
me.unlink()
"""


def _most_at_once(tmp_path, at_once) -> int:
    running = tmp_path / "running"
    running.mkdir()
    jobs = [Job(f"job {i}", (sys.executable, "-c", OVERLAP_PROBE, str(running), str(i)), tmp_path / f"{i}.log")
            for i in range(4)]
    with cluster(None):  # a local cluster of this machine's CPUs: 0.5-CPU jobs fit at least two at once
        assert run_jobs(jobs, Resources(cpus=0.5, at_once=at_once)) == []
    rows = [line.split() for line in (tmp_path / "seen.txt").read_text().splitlines()]
    # each job at the command's own priority: Ray's default (niceness 15) starved cv's trainings beside other work
    assert {int(nice) for _, nice in rows} == {os.nice(0)}
    return max(int(seen) for seen, _ in rows)


@pytest.mark.slow(minutes=1)  # a local Ray cluster: 15 s on an idle 2-core machine
def test_parallel_bounds_the_jobs_in_flight(tmp_path):
    assert _most_at_once(tmp_path, at_once=1) == 1  # Ray alone would run at least two of them at once


# A cv-like command: one local cluster, one job that records its pid and would run for ten minutes.
INTERRUPTED_RUNNER = """
import sys
from pathlib import Path
from common.runs.jobs import Job, Resources, cluster, run_jobs
from common.runs.options import run_command
tmp = Path(sys.argv[1])
job = Job("sleeper", (sys.executable, "-c", f"import os, time; open({str(tmp / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(600)"), tmp / "job.log")
def work():
    with cluster(None):
        return run_jobs([job], Resources(cpus=1))
sys.exit(run_command(work))
"""


@pytest.mark.slow(minutes=1)
def test_ctrl_c_stops_the_jobs_and_exits_130(tmp_path):
    """Ctrl-C on a cv or tune while a job runs: the command ends with exit 130 and its "rerun" line, the local
    cluster is shut down and the job's process is gone (no training left running on its own)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    # Ctrl-C as a terminal delivers it: to a process that has SIGINT at its default, which Python turns into
    # KeyboardInterrupt (a pytest-xdist worker, like a background shell job, passes SIGINT on ignored).
    runner = subprocess.Popen([sys.executable, "-c", INTERRUPTED_RUNNER, str(tmp_path)], env=env,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not (tmp_path / "pid").is_file() or not (tmp_path / "pid").read_text():
            assert runner.poll() is None, runner.stderr.read()
            time.sleep(0.2)
        job_pid = int((tmp_path / "pid").read_text())
        runner.send_signal(signal.SIGINT)
        _, err = runner.communicate(timeout=180)  # a bound for a broken build, far below the job's ten minutes
    finally:
        runner.kill()
    assert runner.returncode == 130, err[-2000:]
    assert "interrupted; rerun the same command to resume" in err
    for _ in range(100):  # the job dies with its Ray worker (PR_SET_PDEATHSIG), a moment after the shutdown
        if not Path(f"/proc/{job_pid}").exists() or "zombie" in _state(job_pid):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{job_pid}").exists() or "zombie" in _state(job_pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "gone"


def _parse(*options):
    args, _ = build_parser().parse_known_args(["cv", "--name", "x", "--models", "resnet", *options])
    return args


def _bound_and_cpus(*options):
    resources = resources_from_args(_parse(*options))
    return resources.at_once, resources.cpus


def test_parallel_and_cpus_per_job_decide_the_resources(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert _bound_and_cpus() == (None, 8)  # one job takes every CPU
    assert _bound_and_cpus("--parallel", "4") == (4, 2)
    assert _bound_and_cpus("--cpus-per-job", "1") == (None, 1)  # no bound: Ray packs eight at once
    assert _bound_and_cpus("--parallel", "2", "--cpus-per-job", "1") == (2, 1)
    with pytest.raises(ConfigError, match="--parallel 0: must be >= 1"):
        resources_from_args(_parse("--parallel", "0"))
    with pytest.raises(ConfigError, match="--parallel 0: must be >= 1"):
        Resources(at_once=0)


def test_a_local_cluster_that_does_not_start_is_one_error_line(monkeypatch):
    """Ray raises a bare Exception when its raylet does not start in time (seen on a loaded 2-core machine):
    one ConfigError naming the cluster and what to do, not a traceback."""
    import ray

    def timed_out(**kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match=r"a local Ray cluster: cannot connect \(The current node timed out.*run again"):
        with cluster(None):
            pass
