"""Stopping `shrinkflow run` and `shrinkflow up` from outside: Ctrl-C, SIGTERM, `down`, SIGKILL, and losing
the Prefect server. Real CLI processes and real servers; the signals are sent with both cores busy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from shrinkflow.core.workspace import Workspace
from tests.conftest import ONLY_PRUNE_AND_QUANTIZE, REPO, descendants, pids_alive, subprocess_env

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 300  # a generous deadline for a stop, not a timing assertion
# Long enough to be caught training: 30 epochs of the small CNN without early stopping.
LONG_RUN = [
    "--set", "train.epochs=30", "--set", "train.early_stopping_patience=null", "--set", "quantize.modes=[dynamic]",
    *(arg for key, value in ONLY_PRUNE_AND_QUANTIZE.items() for arg in ("--set", f"{key}={value}")),
]


def background_job() -> None:
    """In the child: what a non-interactive shell does to a background job (`make test &`, CI): SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def busy_cores() -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def start_run(workspace: Path, *args: str) -> subprocess.Popen[str]:
    """`shrinkflow run` as a shell starts it: the leader of its own process group, SIGINT ignored as in a
    background job of a non-interactive shell (the command must handle Ctrl-C itself)."""
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkflow.cli.main", "run", str(REPO / "configs" / "digits_cnn.yaml"),
         "--workspace", str(workspace), "--verbose", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=subprocess_env(),
        start_new_session=True, preexec_fn=background_job,
    )


def read_until(process: subprocess.Popen[str], needle: str, lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if needle in line:
            return
    raise AssertionError(f"the run ended before {needle!r}:\n{''.join(lines[-40:])}")


def finish(process: subprocess.Popen[str], lines: list[str]) -> str:
    assert process.stdout is not None
    lines += process.stdout.readlines()
    process.wait(timeout=RUN_TIMEOUT)
    return "".join(lines)


def assert_nothing_shipped(workspace: Path, name: str = "digits_cnn", parent_status: str = "KILLED") -> None:
    ws = Workspace(workspace)
    assert not (ws.exports / name).exists()
    client = MlflowClient(tracking_uri=ws.tracking_uri(), registry_uri=ws.tracking_uri())
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert {run.info.status for run in runs} == {parent_status}  # the parent and the child that was training


@pytest.mark.parametrize(("signum", "to_group", "code", "said"), [
    (signal.SIGINT, True, 130, "interrupted by Ctrl-C (SIGINT)"),  # Ctrl-C: the terminal signals the whole group
    (signal.SIGTERM, False, 143, "interrupted by SIGTERM"),  # kill, systemd, a container stop: the process only
])
def test_a_stopped_run_exits_with_the_signal_in_one_line_and_leaves_nothing(
    tmp_path: Path, busy_cores: None, signum: int, to_group: bool, code: int, said: str
) -> None:
    workspace = tmp_path / "ws"
    run, lines = start_run(workspace, *LONG_RUN), []
    try:
        read_until(run, "epoch 2/30", lines)
        started = descendants(run.pid)  # the temporary Prefect server among them
        assert started
        (os.killpg if to_group else os.kill)(run.pid, signum)
        output = finish(run, lines)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == code, output[-3000:]
    assert output.rstrip().splitlines()[-1].startswith(f"shrinkflow: {said}: the run stopped")
    assert "Traceback" not in output
    assert pids_alive(started) == []  # no orphaned server
    assert_nothing_shipped(workspace)


def test_losing_the_temporary_prefect_server_stops_the_run_and_ships_nothing(tmp_path: Path) -> None:
    """Before: tasks went on without the server, shipped a champion, and the run failed minutes later."""
    workspace = tmp_path / "ws"
    run, lines = start_run(workspace, *LONG_RUN), []
    try:
        read_until(run, "epoch 1/30", lines)  # the run has started: its server is in use
        [server] = [pid for pid in descendants(run.pid) if "uvicorn" in " ".join(psutil.Process(pid).cmdline())]
        os.kill(server, signal.SIGKILL)
        output = finish(run, lines)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 1, output[-3000:]
    assert "shrinkflow: error: the temporary Prefect server stopped unexpectedly (exit code -9)" in output
    assert "nothing from it was shipped" in output
    assert "Traceback" not in output
    assert_nothing_shipped(workspace, parent_status="FAILED")


def test_a_killed_run_leaves_no_temporary_server_behind(tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the server, in a session of its own, goes because its parent died."""
    run, lines, started = start_run(tmp_path / "ws", *LONG_RUN), [], []
    try:
        read_until(run, "epoch 1/30", lines)
        started = descendants(run.pid)
        assert started
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=RUN_TIMEOUT)
        deadline = time.monotonic() + 60
        while pids_alive(started) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pids_alive(started) == []
    finally:
        for pid in pids_alive(started):
            os.kill(pid, signal.SIGKILL)


# `shrinkflow down` stops a stack too: tests/test_deployments_e2e.py stops its `up` that way.
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_up_stops_everything_it_started_with_both_cores_busy(tmp_path: Path, busy_cores: None, stop: str) -> None:
    """Before: `up` started as a background job inherited SIGINT ignored, so Ctrl-C never reached it."""
    from shrinkflow.deployments.processes import free_ports, port_problem

    workspace = tmp_path / "ws"
    ports = free_ports(2)
    up = subprocess.Popen(
        [sys.executable, "-m", "shrinkflow.cli.main", "up", "--workspace", str(workspace),
         "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=subprocess_env(),
        start_new_session=True, preexec_fn=background_job,
    )
    lines: list[str] = []
    started: list[int] = []
    try:
        read_until(up, "Press Ctrl-C to stop", lines)
        started = descendants(up.pid)  # both servers and the runner, each in a session of its own
        assert len(started) >= 3
        (os.killpg if stop == "ctrl-c" else os.kill)(up.pid, signal.SIGINT if stop == "ctrl-c" else signal.SIGTERM)
        output = finish(up, lines)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for pid in pids_alive(started):
            os.kill(pid, signal.SIGKILL)
    assert up.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert pids_alive(started) == []
    assert [port for port in ports if port_problem("127.0.0.1", port)] == []
