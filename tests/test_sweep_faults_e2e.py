"""A sweep in trouble, with real processes: a second sweep of the same study, the only Dask worker killed mid-trial,
a scheduler with no worker left, and SIGTERM to a sweep on a local cluster. The sweeps report to the session's
Prefect server (no temporary server to start); MLflow and the study are in the workspace's SQLite files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from shrinkflow.core.sweep import INTERRUPTED_ATTR
from shrinkflow.core.workspace import Workspace
from shrinkflow.deployments.processes import free_port
from shrinkflow.tracking.sweeps import STUDY_TAG
from tests.conftest import REPO, descendants, pids_alive, subprocess_env, tiny_digits_config
from tests.test_faults import assert_refused

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TIMEOUT = 240  # a deadline against a hang, not a timing assertion
NAME = "sweep_faults"
SHARED_MEMORY = Path("/dev/shm")


@pytest.fixture
def api_env(prefect_harness: None) -> dict[str, str]:
    """The environment of a command that reports to the session's Prefect server."""
    from prefect.settings import get_current_settings

    return {**subprocess_env(), "PREFECT_API_URL": str(get_current_settings().api.url), "PYTHONUNBUFFERED": "1"}


def long_sweep(tmp_path: Path) -> Path:
    """Trials that train long enough (30 epochs, no early stop) to be caught running."""
    raw = tiny_digits_config(**{
        "prune.enabled": "false", "quantize.modes": "[dynamic]", "train.epochs": "30", "train.early_stopping_patience": "null",
    }).model_dump(mode="json")
    raw["name"] = NAME
    raw["sweep"] = {"sampler": "random", "trials": 2, "seed": 3, "parameters": {"model.hidden_units": {"choice": [[8], [12]]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Command:
    """A `shrinkflow` command in a session of its own, its output read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shrinkflow.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=REPO, env=env, start_new_session=True,
        )
        self.lines: list[str] = []
        self.started: set[int] = set()  # every process seen below it
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, in_file: Path | None = None) -> None:
        deadline = time.monotonic() + TIMEOUT
        while needle not in (in_file.read_text(errors="replace") if in_file and in_file.exists() else self.text):
            with contextlib.suppress(Exception):
                self.started |= set(descendants(self.process.pid))
            assert self.process.poll() is None, f"exited before {needle!r}:\n{self.text[-4000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} within {TIMEOUT} s:\n{self.text[-4000:]}"
            time.sleep(0.2)

    def finish(self) -> int:
        code = self.process.wait(timeout=TIMEOUT)
        self._reader.join(timeout=60)  # the output to its end, as anything the command left writing to it closes it
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in pids_alive(sorted(self.started)):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dask_scheduler_and_worker(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A `dask scheduler` and one single-threaded `dask worker`; yields (address, the worker, the worker's log)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**subprocess_env(), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "worker.log"
    semaphores = set(SHARED_MEMORY.glob("sem.*"))
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env, start_new_session=True,
    )
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
        )
    try:
        with Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(1, timeout=TIMEOUT)
        yield address, worker, log
    finally:
        for process in (worker, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        unlink_orphans(set(SHARED_MEMORY.glob("sem.*")) - semaphores)


def unlink_orphans(semaphores: set[Path]) -> None:
    """Remove the POSIX semaphores no process has open any more: those of the `dask worker` killed outright (as a
    lost machine would be), whose resource tracker died with it, so nobody else would."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            mapped |= {line.split()[-1] for line in maps.read_text().splitlines() if "/dev/shm/sem." in line}
    for semaphore in semaphores:
        if str(semaphore) not in mapped:
            semaphore.unlink(missing_ok=True)


def sweep_args(config: Path, workspace: Path, *more: str) -> list[str]:
    """A sweep's command line; --verbose: Prefect's whole log in the terminal, as the test waits for its lines."""
    return ["sweep", str(config), "--workspace", str(workspace), "--verbose", *more]


def the_study(workspace: Path) -> optuna.Study:
    [database] = (workspace / "sweeps").glob("*.db")
    [summary] = optuna.get_all_study_summaries(f"sqlite:///{database}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{database}")


def sweep_parent(workspace: Path) -> object:
    client = MlflowClient(tracking_uri=Workspace(workspace).tracking_uri())
    experiment = client.get_experiment_by_name(NAME)
    [parent] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STUDY_TAG}` != ''")
    return parent


def test_a_sweep_that_loses_its_only_worker_stops_in_one_line_and_resumes_and_sigterm_stops_it_at_once(
    api_env: dict[str, str], dask_scheduler_and_worker: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    """One study, four commands:
    1. a sweep on a Dask cluster whose only worker is killed mid-trial. Before: it hung without a word until
       SIGTERM, its MLflow parent run left RUNNING. Now: it stops after --worker-wait seconds, in one line.
    2. while it runs, a second sweep of the same study. Before: both ran (two parent runs, 3 trials for
       `trials: 2`, a floor of none). Now: refused with exit 2, naming the first.
    3. a sweep on the scheduler that has no worker left. Before: exit 2 after Prefect's whole traceback. Now:
       refused before anything starts, in one line.
    4. the same sweep resumed on a local cluster, stopped by SIGTERM. Before: the parent run stayed RUNNING (and
       with --workers 64, SIGTERM was ignored and hundreds of semaphores leaked: --workers is bounded now,
       tests/test_faults.py). Now: exit 143 at once, the run KILLED, no process or semaphore left behind.
    """
    address, worker, _ = dask_scheduler_and_worker
    config, workspace = long_sweep(tmp_path), tmp_path / "ws"
    first = Command(sweep_args(config, workspace, "--dask-address", address, "--worker-wait", "4"), api_env)
    try:
        first.wait_for("trials done; 1 at a time")  # the study is locked, the parent run open, trial 0 submitted
        second = subprocess.run(
            [sys.executable, "-m", "shrinkflow.cli.main", *sweep_args(config, workspace, "--dask-address", address)],
            capture_output=True, text=True, cwd=REPO, env=api_env, timeout=TIMEOUT,
        )
        assert_refused(second, "is being swept by another process", f"(pid {first.process.pid} on ", "run this command again")
        os.killpg(worker.pid, signal.SIGKILL)
        code = first.finish()
    finally:
        first.kill()
    output = first.text
    assert code == 1, output[-4000:]
    last = output.rstrip().splitlines()[-1]
    assert last.startswith(f"shrinkflow: error: the Dask cluster at {address} has had no worker for 4 s"), last
    assert "run the same command again to resume" in last
    assert "Traceback" not in output
    # The cut-off trial is marked interrupted and its values wait to run again; nothing is left RUNNING.
    study = the_study(workspace)
    assert {t.state for t in study.trials} <= {TrialState.FAIL, TrialState.WAITING, TrialState.COMPLETE}
    [cut_off] = [t for t in study.trials if t.user_attrs.get(INTERRUPTED_ATTR)]
    assert [t.params for t in study.trials if t.state == TrialState.WAITING] == [cut_off.params]
    parent = sweep_parent(workspace)
    assert parent.info.status == "FAILED" and "EnvironmentLost" in parent.data.tags["error"]

    third = subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", *sweep_args(config, workspace, "--dask-address", address, "--worker-wait", "2")],
        capture_output=True, text=True, cwd=REPO, env=api_env, timeout=TIMEOUT,
    )
    assert_refused(third, f"the Dask scheduler at {address} has no worker after 2 s", "dask worker")

    resumed = Command(sweep_args(config, workspace, "--workers", str(len(os.sched_getaffinity(0)))), api_env)
    try:
        resumed.wait_for("trials done; ")  # its local cluster is up, the cut-off trial submitted again
        started = sorted(resumed.started | set(descendants(resumed.process.pid)))
        assert started
        os.kill(resumed.process.pid, signal.SIGTERM)
        code = resumed.finish()
    finally:
        resumed.kill()
    output = resumed.text
    assert code == 143, output[-4000:]
    assert output.rstrip().splitlines()[-1].startswith("shrinkflow: interrupted by SIGTERM: the sweep stopped; run it again to resume")
    assert "Traceback" not in output and "leaked semaphore" not in output
    assert pids_alive(started) == []
    parent = sweep_parent(workspace)  # the same parent run, reopened by the resume
    assert parent.info.status == "KILLED"
    assert not [t for t in the_study(workspace).trials if t.state == TrialState.RUNNING]
