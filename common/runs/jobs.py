"""Training jobs on a Ray cluster: each (model, fold, seed[, trial]) run is one Ray task that declares the
CPUs and GPUs it needs, so Ray places it (and sets CUDA_VISIBLE_DEVICES for it). `ray.init()` starts a local
cluster by default; --ray-address (or RAY_ADDRESS) joins an existing one, whose nodes must see the same
run folders (a shared filesystem), as every node of a training cluster does.

A job is a trainer command line (`python -m torch_resnet train ... --run-dir D`): the trainers resume by
themselves, so a task that Ray runs again after its node died continues the run where it stopped, and a
rerun of the whole command skips what has finished. A failed job is listed with its log while the others
finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError

RAY_ADDRESS_ENV = "RAY_ADDRESS"


@dataclass(frozen=True)
class Job:
    name: str  # for the progress lines and the failure list, e.g. "resnet fold 0 seed 1"
    command: tuple[str, ...]  # the trainer's command line
    log: Path  # stdout and stderr of the command, appended (a resumed job adds to it)


@dataclass(frozen=True)
class Resources:
    """What each job declares to Ray, and how many jobs may be in flight at once (None: as many as the
    cluster's CPUs fit)."""

    cpus: float = 1.0
    gpus: float = 0.0
    at_once: int | None = None

    def __post_init__(self):
        if self.cpus <= 0 or self.gpus < 0:
            raise ConfigError(f"--cpus-per-job {self.cpus} / --gpus-per-job {self.gpus}: must be > 0 / >= 0")
        if self.at_once is not None and self.at_once < 1:
            raise ConfigError(f"--parallel {self.at_once}: must be >= 1")


@dataclass(frozen=True)
class JobFailure:
    job: Job
    reason: str  # "exit 1" or why Ray gave up on it (a node lost more often than Ray retries)

    def line(self) -> str:
        return f"{self.job.name}: {self.reason}, log {self.job.log}"


def add_cluster_arguments(parser) -> None:
    """The options of where jobs run (cv and tune); none of them changes what a run trains."""
    group = parser.add_argument_group("jobs (Ray)")
    group.add_argument("--parallel", type=int, default=None,
                       help="at most N jobs at once; each declares 1/N of this machine's CPUs unless "
                            "--cpus-per-job says (default: as many as fit at --cpus-per-job CPUs each, else 1)")
    group.add_argument("--cpus-per-job", type=float,
                       help="CPUs each job declares to Ray, and the trainer's threads (default: this machine's "
                            "CPUs / --parallel)")
    group.add_argument("--gpus-per-job", type=float, default=0.0,
                       help="GPUs each job declares; Ray sets CUDA_VISIBLE_DEVICES for it (default: 0)")
    group.add_argument("--ray-address", default=None,
                       help=f"join this Ray cluster (default: ${RAY_ADDRESS_ENV}, else a local cluster of this "
                            "machine); its nodes must see the same folders")


def resources_from_args(args) -> Resources:
    """--parallel bounds the jobs in flight; without it Ray packs the cluster's CPUs with jobs of
    --cpus-per-job each, or runs one job at a time on every CPU when that is not given either."""
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: must be >= 1")
    cpus = (args.cpus_per_job if args.cpus_per_job is not None
            else max(1, (os.cpu_count() or 1) // (args.parallel or 1)))
    return Resources(cpus=cpus, gpus=args.gpus_per_job, at_once=args.parallel)


def trainer_threads(resources: Resources) -> int:
    """The trainer's --threads: the CPUs its job declared (whole ones, at least 1)."""
    return max(1, int(resources.cpus))


def run_command(command: tuple[str, ...], log: str) -> int:
    """Run one job's command on this node; its exit status. The command starts through this module's
    `__main__`, which asks Linux to kill it with the Ray worker that started it (a preexec_fn is unsafe in
    Ray's threaded worker), so a stopped node leaves no orphaned trainer holding the run's lock when Ray
    runs the job again elsewhere."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        guarded = [sys.executable, "-m", "common.runs.jobs", *command]
        return subprocess.Popen(guarded, stdout=out, stderr=subprocess.STDOUT).wait()


@contextmanager
def cluster(address: str | None):
    """Ray for the jobs inside: joins the cluster at `address` (or $RAY_ADDRESS), else starts a local
    cluster of this machine; disconnects (and stops a local cluster) at the end unless an outer `cluster`
    connected first. A cluster started with `ray start` uses token authentication: run with
    RAY_AUTH_MODE=token, as its nodes do."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    _connect(ray, address)
    try:
        yield ray
    finally:
        ray.shutdown()


def _connect(ray, address: str | None) -> None:
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    # The trainers' output goes to each job's log, not to this terminal.
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:  # "local": a new cluster of this process, never one that `ray start` left running here
            # Ray lowers its workers' priority (niceness 15) by default, and the trainings they start inherit
            # it: beside any other work a cv or tune ran starved. The jobs are the command's work: its priority.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
    except Exception as exc:  # noqa: BLE001  Ray raises a bare Exception when its node does not start in time
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        hint = "" if address else "; on a machine too loaded for Ray's processes to start in time, run again later"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"{where}: cannot connect ({reason}){hint}") from None


def run_jobs(jobs: list[Job], resources: Resources) -> list[JobFailure]:
    """Run every job as a Ray task, inside `cluster(...)`, at most `resources.at_once` of them submitted at a
    time (None: all, Ray runs as many as its CPUs fit); returns the failures (the others have finished)."""
    if not jobs:
        return []
    import ray

    remote = ray.remote(run_command).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=3)
    waiting = list(jobs)
    pending = {}
    failures = []
    while waiting or pending:
        while waiting and (resources.at_once is None or len(pending) < resources.at_once):
            job = waiting.pop(0)
            pending[remote.remote(job.command, str(job.log))] = job
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            status = ray.get(done[0])
            reason = None if status == 0 else f"exit {status}"
        except Exception as exc:  # the task's node was lost more often than Ray retries, or a Ray error
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if reason:
            failures.append(JobFailure(job, reason))
    return failures


def _exec_dying_with_parent(command: list[str]) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, kept across exec
    os.execvp(command[0], command)


if __name__ == "__main__":
    _exec_dying_with_parent(sys.argv[1:])
