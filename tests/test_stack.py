"""`shrinkflow up` / `down`: the local Prefect + MLflow stack, against real servers (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shrinkflow.core.errors import UserError
from tests.conftest import pids_alive
from shrinkflow.deployments.processes import ProcessError, Spawned, free_port, free_ports, port_problem, wait_until_ready
from shrinkflow.deployments.stack import (
    PortInUseError,
    SchedulerWatch,
    StackAlreadyRunningError,
    StackConfig,
    StackError,
    check_ports_free,
    stack_dir,
    start_stack,
    state_file,
    stop_stack,
)
from shrinkflow.core.workspace import Workspace

HOST = "127.0.0.1"


@pytest.fixture
def ws(workspace: Path) -> Workspace:
    return Workspace(workspace)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port that something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


def http_get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize(
    ("server", "title", "flag"),
    [("prefect", "Prefect server", "--prefect-port"), ("mlflow", "MLflow server", "--mlflow-port")],
)
def test_a_taken_port_is_refused_and_nothing_starts(
    ws: Workspace, held_port: int, server: str, title: str, flag: str
) -> None:
    prefect_port, mlflow_port = free_ports(2)
    ports = {"prefect_port": prefect_port, "mlflow_port": mlflow_port, f"{server}_port": held_port}
    config = StackConfig(ws, **ports)

    with pytest.raises(PortInUseError) as refused:
        start_stack(config)

    message = str(refused.value)
    assert isinstance(refused.value, UserError)
    assert refused.value.ports == [held_port]
    assert f"port {held_port} on {HOST}" in message and f"for the {title} (already in use)" in message
    assert f"{flag} N" in message and "shrinkflow down" in message
    assert not stack_dir(ws).exists() and not state_file(ws).exists()


def test_ports_must_differ_and_be_valid(ws: Workspace) -> None:
    with pytest.raises(StackError, match="each server needs its own port"):
        StackConfig(ws, prefect_port=5000, mlflow_port=5000)
    with pytest.raises(StackError, match="--mlflow-port 70000"):
        StackConfig(ws, mlflow_port=70000)


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_problem(HOST, port) is None for port in [*ports, free_port()])


def test_down_without_a_stack_is_a_no_op(ws: Workspace) -> None:
    assert stop_stack(ws) is False


@pytest.mark.e2e
def test_up_serves_prefect_and_mlflow_then_down_stops_them(ws: Workspace, tmp_path: Path) -> None:
    prefect_port, mlflow_port = free_ports(2)
    config = StackConfig(ws, host=HOST, prefect_port=prefect_port, mlflow_port=mlflow_port)
    started = time.monotonic()
    stack = start_stack(config)
    try:
        print(f"stack up in {time.monotonic() - started:.1f} s")
        assert stack.prefect_api_url == f"http://{HOST}:{config.prefect_port}/api"
        assert stack.prefect_ui_url == f"http://{HOST}:{config.prefect_port}"
        assert stack.mlflow_url == f"http://{HOST}:{config.mlflow_port}"

        assert http_get(f"{stack.prefect_api_url}/health") == (200, b"true")
        assert http_get(f"{stack.mlflow_url}/health") == (200, b"OK")
        # The UI's browser code is told to call this server's API, not the default port 4200.
        status, body = http_get(f"{stack.prefect_ui_url}/ui-settings")
        assert status == 200 and json.loads(body)["api_url"] == stack.prefect_api_url

        state = json.loads(state_file(ws).read_text())
        assert state["prefect_api_url"] == stack.prefect_api_url and state["mlflow_url"] == stack.mlflow_url
        pids = [state["servers"][name]["pid"] for name in ("prefect", "mlflow")]
        assert pids == [stack.prefect.pid, stack.mlflow.pid]
        assert [os.getpgid(pid) for pid in pids] == [os.getsid(pid) for pid in pids] == pids  # own sessions
        assert [state["servers"][name]["create_time"] for name in ("prefect", "mlflow")] == [
            stack.prefect.create_time, stack.mlflow.create_time
        ]
        assert [state["servers"][name]["port"] for name in ("prefect", "mlflow")] == [
            config.prefect_port, config.mlflow_port
        ]

        # MLflow round trip, with an artifact uploaded through the server into the workspace.
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=stack.mlflow_url)
        experiment_id = client.create_experiment("x")
        assert [e.experiment_id for e in client.search_experiments(filter_string="name = 'x'")] == [experiment_id]
        run_id = client.create_run(experiment_id).info.run_id
        client.log_text(run_id, "hello", "hello.txt")
        uploaded = list((stack_dir(ws) / "mlartifacts").rglob("hello.txt"))
        assert len(uploaded) == 1 and uploaded[0].read_text() == "hello" and run_id in str(uploaded[0])
        assert (stack_dir(ws) / "mlflow.db").is_file()

        # Prefect round trip through its client, and its database lives in the workspace.
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
            with get_client(sync_client=True) as prefect:
                flow_id = prefect.create_flow_from_name("shrinkflow-stack-test")
                assert prefect.read_flow(flow_id).name == "shrinkflow-stack-test"
        assert (stack_dir(ws) / "prefect-home" / "prefect.db").is_file()

        # While it runs: a second `up` is refused, and its ports are reported as taken.
        with pytest.raises(StackAlreadyRunningError, match="shrinkflow down"):
            start_stack(StackConfig(ws, **dict(zip(("prefect_port", "mlflow_port"), free_ports(2)))))
        with pytest.raises(PortInUseError) as taken:
            check_ports_free(StackConfig(Workspace(tmp_path / "other"), **_ports(config)))
        assert taken.value.ports == [config.prefect_port, config.mlflow_port]

        stopping = time.monotonic()
        assert stop_stack(ws) is True
        print(f"stack down in {time.monotonic() - stopping:.1f} s")
        # gone, or a zombie its parent (PID 1, for a server's reparented children) has not reaped yet
        assert pids_alive(pids) == []
        assert port_problem(HOST, config.prefect_port) is None and port_problem(HOST, config.mlflow_port) is None
        assert not state_file(ws).exists()
        assert stop_stack(ws) is False
    finally:
        stack.stop()


@pytest.mark.e2e
def test_a_server_that_fails_to_start_is_reported_with_its_log_and_the_other_is_stopped(ws: Workspace) -> None:
    stack_dir(ws).mkdir(parents=True)
    (stack_dir(ws) / "mlflow.db").write_text("this is not a SQLite database\n" * 100)
    prefect_port, mlflow_port = free_ports(2)
    config = StackConfig(ws, prefect_port=prefect_port, mlflow_port=mlflow_port)

    with pytest.raises(ProcessError) as failed:
        start_stack(config)

    message = str(failed.value)
    assert "MLflow server exited with code" in message and str(stack_dir(ws) / "mlflow.log") in message
    assert "not a database" in message  # the tail of its log
    assert not state_file(ws).exists()
    # The Prefect server that did start is stopped again.
    assert processes_with_argument(str(config.prefect_port)) == []
    assert port_problem(HOST, config.prefect_port) is None
    assert stop_stack(ws) is False


def processes_with_argument(argument: str) -> list[int]:
    """Pids of live processes with `argument` on their command line (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _ports(config: StackConfig) -> dict[str, int]:
    return {"prefect_port": config.prefect_port, "mlflow_port": config.mlflow_port}


SCHEDULER_ERRORS = Path(__file__).parent / "data" / "prefect-scheduler-errors.log"
HEALTHY_LOG = """\
=== shrinkflow up 2026-11-23T23:55:38+00:00: prefect server start --host 127.0.0.1 --port 4391
Check out the dashboard at http://127.0.0.1:4391

23:56:05.995 | INFO    | docket.dependencies - ↩ [   32ms] schedule_recent_deployments(){schedule_recent_deployments}
23:56:06.120 | ERROR   | prefect.server.api.server - Something unrelated to scheduling
"""


def test_scheduler_failures_are_picked_out_of_the_prefect_server_log(tmp_path: Path) -> None:
    """What Prefect 3.8.8's server logged every minute with SQLAlchemy 2.1 (no scheduled run was ever created)."""
    log = tmp_path / "prefect.log"
    log.write_text(HEALTHY_LOG)
    watch = SchedulerWatch(log)
    assert watch.new_errors() == []

    failing = SCHEDULER_ERRORS.read_text()
    cut = failing.index("sqlalchemy.exc.InvalidRequestError") + 10  # the server is mid-way through a line
    with open(log, "a") as out:
        out.write(failing[:cut])
    assert watch.new_errors() == []  # the record is not complete yet
    with open(log, "a") as out:
        out.write(failing[cut:])
    bulk_dml = "sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML statement; please supply a bulk_dml decorated function"
    assert watch.new_errors() == [
        f"schedule_recent_deployments: {bulk_dml}", f"schedule_deployments: {bulk_dml}", f"schedule_deployments: {bulk_dml}",
    ]
    assert watch.new_errors() == []  # each failure is reported once


# ---------------------------------------------------------------------------------------------------------------------
# deployments.processes, on small processes of its own


def spawn(tmp_path: Path, script: str) -> Spawned:
    return Spawned.start("test process", ["sh", "-c", script], tmp_path / "test.log", os.environ, header="test")


def unique_sleep() -> str:
    """A `sleep` duration no other process has on its command line."""
    return f"{600 + time.time_ns() % 10**9 / 10**9:.9f}"


def test_a_recorded_process_is_stopped_with_what_it_started_from_another_record(tmp_path: Path) -> None:
    duration = unique_sleep()
    started = spawn(tmp_path, f"sleep {duration} & sleep {duration} & wait")
    try:
        recorded = Spawned.from_json("test process", json.loads(json.dumps(started.to_json())))  # as `down` reads it
        time.sleep(0.3)
        family = [started.pid, *processes_with_argument(duration)]
        assert recorded.is_running() and len(pids_alive(family)) == 3
        assert recorded.stop(timeout=10) is True
        assert pids_alive(family) == [] and not recorded.is_running()
        assert started.poll() is not None  # collected
        assert recorded.stop(timeout=10) is False
    finally:
        started.stop(timeout=1)


def test_a_later_process_with_the_same_pid_is_not_taken_for_it(tmp_path: Path) -> None:
    started = spawn(tmp_path, f"sleep {unique_sleep()}")
    try:
        earlier = Spawned.from_json("test process", {**started.to_json(), "create_time": started.create_time - 100})
        assert not earlier.is_running() and earlier.stop(timeout=1) is False
        assert started.is_running() and started.poll() is None
    finally:
        started.stop(timeout=1)


def test_what_ignores_sigterm_is_killed_and_leftovers_of_a_gone_leader_are_stopped(tmp_path: Path) -> None:
    stubborn = Spawned.start(
        "stubborn process",
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
        tmp_path / "stubborn.log", os.environ,
    )
    time.sleep(0.5)  # past Python's start-up, where SIGTERM still ends it
    assert stubborn.stop(timeout=0.5) is True and stubborn.poll() == -signal.SIGKILL

    duration = unique_sleep()
    leader = spawn(tmp_path, f"sleep {duration} & exit 0")
    recorded = Spawned.from_json("test process", leader.to_json())
    try:
        deadline = time.monotonic() + 10
        while leader.poll() is None or not processes_with_argument(duration):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [orphan] = processes_with_argument(duration)
        assert recorded.is_running()  # what is left in its process group
        assert recorded.stop(timeout=10) is True and pids_alive([orphan]) == []
    finally:
        recorded.stop(timeout=1)


def test_waiting_for_a_process_fails_with_its_log_when_it_exits_or_takes_too_long(tmp_path: Path) -> None:
    exiting = spawn(tmp_path, "echo about to fail; exit 3")
    exited = r"the test process exited with code 3; its log is .*test.log, ending:"
    with pytest.raises(ProcessError, match=exited) as failed:
        wait_until_ready({exiting: lambda: "answer"}, timeout=30)
    assert str(failed.value).endswith("about to fail")

    slow = spawn(tmp_path, f"echo still starting; sleep {unique_sleep()}")
    try:
        with pytest.raises(ProcessError, match="the test process did not answer within 1 s") as failed:
            wait_until_ready({slow: lambda: "answer"}, timeout=1)
        assert str(failed.value).endswith("still starting") and "about to fail" not in str(failed.value)
        ready = iter([None])
        wait_until_ready({slow: lambda: next(ready)}, timeout=1)
    finally:
        slow.stop(timeout=1)
