"""A local server stack for `shrinkflow up` / `shrinkflow down`: a Prefect server and an MLflow tracking server.

Both servers keep their state inside the workspace, under `<workspace>/stack/`:

    prefect-home/        PREFECT_HOME of the Prefect server (its SQLite database lives here)
    mlflow.db            the MLflow backend store (SQLite)
    mlartifacts/         where the MLflow server stores artifacts that clients upload through it
    prefect.log, mlflow.log
    stack.json           what is running: pids with their create times, ports, URLs (written once both answer)

Each server runs in a session of its own (deployments.processes), so stopping it reaches every process
it spawned, and the servers outlive the command that started them until `shrinkflow down`. Nothing here
imports Prefect, MLflow or TensorFlow: the servers are separate programs, found next to the running
Python interpreter (the project's virtual environment).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from shrinkflow.deployments.processes import LOOPBACK, Spawned, answers, forget, port_problem, stop, wait_until_ready
from shrinkflow.core.errors import UserError
from shrinkflow.core.files import write_json_atomically
from shrinkflow.core.workspace import Workspace

STATE_VERSION = 2  # 2: processes named by pid and create_time
DEFAULT_HOST = LOOPBACK
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
# A first Prefect start creates its database and runs every migration: 15 s on an idle 2-core machine,
# several times that when the machine is busy (e.g. tests training models in parallel).
DEFAULT_STARTUP_TIMEOUT = 180.0
DEFAULT_STOP_TIMEOUT = 20.0

PREFECT, MLFLOW = "prefect", "mlflow"
PORT_FLAGS = {PREFECT: "--prefect-port", MLFLOW: "--mlflow-port"}
TITLES = {PREFECT: "Prefect server", MLFLOW: "MLflow server"}


class StackError(UserError):
    """The local server stack cannot be started or stopped as asked."""


class PortInUseError(StackError):
    """A port one of the servers needs cannot be bound."""

    def __init__(self, host: str, conflicts: list[tuple[str, int, str]]) -> None:
        self.host = host
        self.conflicts = conflicts  # (server, port, reason)
        lines = [
            f"port {port} on {host} is not available for the {TITLES[server]} ({reason}); "
            f"choose another with {PORT_FLAGS[server]} N"
            for server, port, reason in conflicts
        ]
        lines.append("If an earlier stack is still up, stop it with `shrinkflow down`.")
        super().__init__("\n".join(lines))

    @property
    def ports(self) -> list[int]:
        return [port for _, port, _ in self.conflicts]


class StackAlreadyRunningError(StackError):
    """The workspace already has a running stack (two servers must never share one database)."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which loopback ports its servers listen on; the servers' databases
    (SQLite files in the workspace unless given: postgresql+asyncpg://... for Prefect, postgresql://... for MLflow)."""

    workspace: Workspace
    host: str = DEFAULT_HOST
    prefect_port: int = DEFAULT_PREFECT_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    prefect_database: str | None = None
    mlflow_database: str | None = None

    def __post_init__(self) -> None:
        for server, port in self.ports.items():
            if not 0 < port < 65536:
                raise StackError(f"{PORT_FLAGS[server]} {port}: a port must be between 1 and 65535")
        if self.prefect_port == self.mlflow_port:
            raise StackError(
                f"--prefect-port and --mlflow-port are both {self.prefect_port}: each server needs its own port"
            )

    @property
    def ports(self) -> dict[str, int]:
        return {PREFECT: self.prefect_port, MLFLOW: self.mlflow_port}

    @property
    def prefect_url(self) -> str:
        return base_url(self.host, self.prefect_port)

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return base_url(self.host, self.mlflow_port)


def base_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def stack_dir(workspace: Workspace) -> Path:
    return workspace.root / "stack"


def state_file(workspace: Workspace) -> Path:
    return stack_dir(workspace) / "stack.json"


def check_ports_free(config: StackConfig) -> None:
    """Raise PortInUseError naming every port of `config` that cannot be bound."""
    conflicts = [
        (server, port, problem)
        for server, port in config.ports.items()
        if (problem := port_problem(config.host, port)) is not None
    ]
    if conflicts:
        raise PortInUseError(config.host, conflicts)


# ---------------------------------------------------------------------------------------------------------------------
# The running stack


@dataclass(frozen=True, eq=False)
class RunningStack:
    """The two servers of a started stack; `stop()` (or leaving a `with` block) shuts both down."""

    config: StackConfig
    prefect: Spawned
    mlflow: Spawned
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def workspace(self) -> Workspace:
        return self.config.workspace

    @property
    def prefect_api_url(self) -> str:
        return self.config.prefect_api_url

    @property
    def prefect_ui_url(self) -> str:
        return self.config.prefect_url

    @property
    def mlflow_url(self) -> str:
        return self.config.mlflow_url

    @property
    def servers(self) -> tuple[Spawned, Spawned]:
        return (self.prefect, self.mlflow)

    def is_running(self) -> bool:
        return any(server.is_running() for server in self.servers)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """SIGTERM both servers, SIGKILL whatever is left after `timeout` seconds, forget stack.json.

        Returns whether anything was still running. Safe to call more than once.
        """
        was_running = stop(self.servers, timeout)
        forget(state_file(self.workspace), self.to_json())
        return was_running

    def to_json(self) -> dict[str, Any]:
        urls = {PREFECT: self.prefect_ui_url, MLFLOW: self.mlflow_url}
        return {
            "version": STATE_VERSION,
            "started_at": self.started_at,
            "workspace": str(self.workspace.root),
            "host": self.config.host,
            "prefect_api_url": self.prefect_api_url,
            "prefect_ui_url": self.prefect_ui_url,
            "mlflow_url": self.mlflow_url,
            "servers": {
                name: {**server.to_json(), "port": self.config.ports[name], "url": urls[name]}
                for name, server in zip((PREFECT, MLFLOW), self.servers)
            },
        }

    def __enter__(self) -> RunningStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def running_stack(workspace: Workspace) -> RunningStack | None:
    """The stack recorded in the workspace's stack.json, if any of its servers is still running."""
    stack = _read_state(workspace)
    return stack if stack is not None and stack.is_running() else None


def stop_stack(workspace: Workspace, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
    """`shrinkflow down`: stop the stack recorded in stack.json. Returns whether anything was running.

    Only the recorded processes (and what they started) are signalled, and only while they are the very
    processes recorded; a stale stack.json (servers already gone, e.g. after a reboot) is just removed.
    """
    stack = _read_state(workspace)
    if stack is None:
        return False
    was_running = stack.stop(timeout)
    state_file(workspace).unlink(missing_ok=True)
    return was_running


def start_stack(config: StackConfig, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> RunningStack:
    """Start the Prefect and MLflow servers, wait until both answer, record them in stack.json.

    Raises:
        StackAlreadyRunningError: this workspace's stack is already up.
        PortInUseError: a port is taken; nothing is started.
        ProcessError: a server exited or stayed silent for `startup_timeout` seconds; whatever started is
            stopped again, and the message ends with the tail of that server's log.
    """
    existing = running_stack(config.workspace)
    if existing is not None:
        raise StackAlreadyRunningError(
            f"a stack is already running for workspace {config.workspace.root} (Prefect {existing.prefect_ui_url}, "
            f"MLflow {existing.mlflow_url}); stop it with `shrinkflow down`"
        )
    check_ports_free(config)
    directory = stack_dir(config.workspace)
    directory.mkdir(parents=True, exist_ok=True)
    state_file(config.workspace).unlink(missing_ok=True)  # stale: its servers are gone

    servers: list[Spawned] = []
    try:
        checks: dict[Spawned, Callable[[], str | None]] = {}
        for launch in (_prefect_launch(config), _mlflow_launch(config)):
            server = Spawned.start(
                TITLES[launch.name], launch.argv, directory / f"{launch.name}.log", launch.env, cwd=directory,
                header="shrinkflow up",
            )
            servers.append(server)
            checks[server] = launch.ready
        wait_until_ready(checks, startup_timeout)
        stack = RunningStack(config, prefect=servers[0], mlflow=servers[1])
        write_json_atomically(state_file(config.workspace), stack.to_json())
    except BaseException:
        with contextlib.suppress(UserError):  # the start failure is the error to report
            stop(servers, DEFAULT_STOP_TIMEOUT)
        raise
    return stack


def _read_state(workspace: Workspace) -> RunningStack | None:
    path = state_file(workspace)
    try:
        data = json.loads(path.read_text())
        servers = data["servers"]
        config = StackConfig(
            workspace, str(data["host"]), int(servers[PREFECT]["port"]), int(servers[MLFLOW]["port"])
        )
        return RunningStack(
            config,
            prefect=Spawned.from_json(TITLES[PREFECT], servers[PREFECT]),
            mlflow=Spawned.from_json(TITLES[MLFLOW], servers[MLFLOW]),
            started_at=str(data["started_at"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"{path} is unreadable ({exc!r}); stop any servers it described yourself, then delete it"
        ) from exc


# ---------------------------------------------------------------------------------------------------------------------
# The servers' command lines


class _Launch(NamedTuple):
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], str | None]  # a check for wait_until_ready


def _executable(name: str) -> str:
    """A console script of the running environment (e.g. .venv/bin/prefect)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StackError(f"`{name}` is not installed next to {sys.executable}: run `make setup` to build the venv")
    return str(path)


def _base_env() -> dict[str, str]:
    # Unbuffered, so a server's last words reach its log before the error message quotes it.
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


SERVER_SERVICE_SETTINGS = "PREFECT_SERVER_SERVICES_"


def _prefect_launch(config: StackConfig) -> _Launch:
    # The server gets none of the caller's PREFECT_* settings: a profile or variable pointing at another
    # API, database or home must not leak into the workspace's own server. Settings of its services (such
    # as PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS, how often the scheduler looks) pass through.
    env = {
        key: value for key, value in _base_env().items()
        if not key.startswith("PREFECT_") or key.startswith(SERVER_SERVICE_SETTINGS)
    }
    env.update(
        PREFECT_HOME=str(stack_dir(config.workspace) / "prefect-home"),  # its SQLite database: prefect-home/prefect.db
        PREFECT_API_URL=config.prefect_api_url,
        # What the UI's browser code calls. Left unset it follows PREFECT_API_URL, else the
        # PREFECT_SERVER_API_HOST/PORT *settings*, which `--port` does not change (it would say 4200).
        PREFECT_SERVER_UI_API_URL=config.prefect_api_url,
        PREFECT_SERVER_API_HOST=config.host,
        PREFECT_SERVER_API_PORT=str(config.prefect_port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
    )
    if config.prefect_database:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_database
    argv = [_executable("prefect"), "server", "start", "--host", config.host, "--port", str(config.prefect_port)]
    return _Launch(PREFECT, argv, env, answers(f"{config.prefect_api_url}/health", b"true"))


def _mlflow_launch(config: StackConfig) -> _Launch:
    directory = stack_dir(config.workspace)
    env = _base_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        # The job runner (huey consumers for GenAI judges and prompt optimisation) adds eight processes
        # and ~700 MB; shrinkflow uses none of it.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    argv = [
        _executable("mlflow"), "server",
        "--host", config.host,
        "--port", str(config.mlflow_port),
        "--backend-store-uri", config.mlflow_database or f"sqlite:///{directory / 'mlflow.db'}",
        # Artifact proxying is on by default (--serve-artifacts): new experiments get mlflow-artifacts:/
        # locations and clients upload through the server into this directory.
        "--artifacts-destination", str(directory / "mlartifacts"),
        "--workers", "1",  # default 4 uvicorn workers, ~250 MB each
    ]
    return _Launch(MLFLOW, argv, env, answers(f"{config.mlflow_url}/health", b"OK"))


# ---------------------------------------------------------------------------------------------------------------------
# Watching the Prefect server's scheduler

# The server's scheduler service runs these (as docket tasks); a failure is logged as an ERROR record naming
# the task, followed by the traceback. Without them no scheduled flow run is ever created.
SCHEDULER_TASKS = ("schedule_deployments", "schedule_recent_deployments")
LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| (?P<level>[A-Z]+) *\| (?P<logger>\S+) - (?P<message>.*)$")


class SchedulerWatch:
    """Reads what the Prefect server appends to its log and picks out the scheduler's failures."""

    def __init__(self, log: Path, offset: int = 0) -> None:
        self.log, self.offset = log, offset
        self._pending = ""  # read, but not yet a finished record

    def new_errors(self) -> list[str]:
        """One line per scheduler failure logged since the last call: "<task>: <exception>"."""
        try:
            with open(self.log, "rb") as file:
                file.seek(self.offset)
                chunk = file.read()
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self._pending + chunk.decode("utf-8", errors="replace")).split("\n")
        self._pending = lines.pop()  # a line still being written
        records = _log_records(lines)
        if records and not _finished(records[-1]):  # its traceback is still being written
            self._pending = "\n".join([*records.pop(), self._pending])
        return [error for record in records if (error := _scheduler_error(record))]


def _log_records(lines: list[str]) -> list[list[str]]:
    """The log's records, each its head line ("12:00:00.000 | ERROR | logger - message") and the lines after it."""
    records: list[list[str]] = []
    for line in lines:
        if LOG_RECORD.match(line):
            records.append([line])
        elif records:
            records[-1].append(line)
    return records


def _finished(record: list[str]) -> bool:
    """Whether a record is complete: no traceback, or one that has reached its exception line."""
    body = [line for line in record[1:] if line.strip()]
    if not any(line.startswith("Traceback") for line in body):
        return True
    return not body[-1].startswith((" ", "\t", "Traceback"))


def _scheduler_error(record: list[str]) -> str | None:
    head = LOG_RECORD.match(record[0])
    task = next((name for name in SCHEDULER_TASKS if head and f"{name}(" in head["message"]), None)
    if head is None or task is None or head["level"] not in ("ERROR", "CRITICAL"):
        return None
    exception = next((line.strip() for line in reversed(record[1:]) if line.strip()), head["message"])
    return f"{task}: {exception}"
