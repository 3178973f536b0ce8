"""The processes shrinkflow starts and stops: the servers of `shrinkflow up`, its runner, `run`'s temporary server,
the benchmark's servers; the ports they listen on; and a watch on what a command depends on.

Each runs in a session (so a process group) of its own, with its output appended to a log: Ctrl-C in the
terminal reaches only the command, which then stops its processes in order, and stopping one reaches
everything it started. A process is named for good by its pid and create_time, so that `shrinkflow down`,
reading a JSON record written by another process, never mistakes a later process given the same pid for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from shrinkflow.core.environment import health_problem
from shrinkflow.core.errors import UserError

LOOPBACK = "127.0.0.1"
KILL_GRACE = 5.0  # seconds SIGKILL gets, after SIGTERM's timeout
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 20
# /proc/stat's boot time, from which create_time is counted, may differ by a second between two reads.
SAME_START = 1.0


class ProcessError(UserError):
    """A process exited or did not get ready in time (the message ends with its log), or outlived SIGKILL."""


@dataclass(frozen=True, eq=False)
class Spawned:
    """A process started by `Spawned.start`, here or in another shrinkflow process.

    `handle` is psutil's view of it: a psutil.Popen in the process that started it (which collects it and
    knows its exit code), a psutil.Process for one read back with `from_json`, None if it was gone by then.
    """

    title: str  # "MLflow server": what messages call it
    pid: int
    create_time: float
    log: Path
    handle: Any = field(default=None, repr=False)  # psutil ships no type hints
    log_offset: int = 0  # where its output begins in `log`

    @classmethod
    def start(
        cls, title: str, argv: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None,
        header: str | None = None,
    ) -> Spawned:
        """Start `argv` in a new session, stdin closed, its output appended to `log` after a `header` line."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            offset = out.tell()
            if header:
                stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
                out.write(f"=== {header} {stamp}: {' '.join(argv)}\n".encode())
                out.flush()
            popen = psutil.Popen(
                list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(title, popen.pid, popen.create_time(), log, popen, offset)

    @classmethod
    def from_json(cls, title: str, data: Mapping[str, Any]) -> Spawned:
        """The process of a record made by `to_json`; raises KeyError, TypeError or ValueError on a bad one."""
        pid, create_time = int(data["pid"]), float(data["create_time"])
        handle: psutil.Process | None
        try:
            handle = psutil.Process(pid)
            if abs(handle.create_time() - create_time) > SAME_START:
                handle = None  # a later process with the same pid
        except psutil.Error:
            handle = None
        return cls(title, pid, create_time, Path(data["log"]), handle)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "log": str(self.log)}

    def poll(self) -> int | None:
        """Its exit code once it has exited; always None for a process that is not our child."""
        return self.handle.poll() if isinstance(self.handle, psutil.Popen) else None

    @property
    def returncode(self) -> int | None:
        """As Popen.returncode."""
        return self.poll()

    def is_running(self) -> bool:
        """Whether it, or anything left in its process group, is still alive (zombies are not)."""
        leader = self._leader()
        return (leader is not None and _alive(leader)) or any(_alive(member) for member in self._members())

    def stop(self, timeout: float) -> bool:
        """See `stop`."""
        return stop([self], timeout)

    def log_hint(self) -> str:
        """Where its log is, and what it wrote there since it started: for error messages."""
        return f"its log is {self.log}, ending:\n{log_tail(self.log, offset=self.log_offset)}"

    def _leader(self) -> Any:
        """psutil's handle of the process itself, while it exists (as a zombie too)."""
        return self.handle if self.handle is not None and self.handle.is_running() else None

    def _members(self) -> list[Any]:
        """The process, everything it started, and anything left in its process group after it exited."""
        leader = self._leader()
        if leader is None and psutil.pid_exists(self.pid):
            return []  # its pid is another process's now, which the kernel allows only once its group is empty
        found: dict[int, Any] = {}
        for pid in psutil.pids():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(pid) == self.pid:
                    found[pid] = psutil.Process(pid)
        if leader is not None:
            with contextlib.suppress(psutil.Error):
                found.update((child.pid, child) for child in leader.children(recursive=True))
            found[leader.pid] = leader  # our own child's psutil.Popen: waiting for it collects it
        return list(found.values())

    def _signal_group(self, signum: int) -> None:
        """Signal its process group, unless its id could now be another process's group."""
        if self._leader() is not None or not psutil.pid_exists(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)


def stop(processes: Sequence[Spawned], timeout: float) -> bool:
    """SIGTERM the processes and all they started, wait up to `timeout` s, SIGKILL what is left.

    Returns whether anything was running; raises ProcessError if anything outlives SIGKILL.
    """
    members = _live_members(processes)
    if not members:
        return False
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_GRACE)):
        for process in processes:
            process._signal_group(signum)
        for member in members:  # descendants that left the group too
            with contextlib.suppress(psutil.Error):
                member.send_signal(signum)
        left = _wait_gone(members, wait)
        members = list({member.pid: member for member in [*_live_members(processes), *left]}.values())  # new ones too
        if not members:
            return True
    titles = " and ".join(f"the {process.title}" for process in processes)
    pids = ", ".join(str(member.pid) for member in members)
    raise ProcessError(f"could not stop {titles}: pids {pids} outlived SIGKILL")


def _live_members(processes: Sequence[Spawned]) -> list[Any]:
    return [member for process in processes for member in process._members() if _alive(member)]


def _alive(process: Any) -> bool:
    """Whether a psutil process runs. Our own child counts until collected: a zombie leader may have threads left."""
    try:
        if isinstance(process, psutil.Popen):
            return process.poll() is None
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(processes: list[Any], timeout: float) -> list[Any]:
    """Wait up to `timeout` s for the processes to exit (collecting our children); those still alive."""
    deadline = time.monotonic() + timeout
    alive = [process for process in processes if _alive(process)]
    while alive and (left := deadline - time.monotonic()) > 0:
        _, alive = psutil.wait_procs(alive, timeout=min(left, POLL_INTERVAL))
        alive = [process for process in alive if _alive(process)]  # a zombie is gone, its parent collects it
    return alive


def wait_until_ready(checks: Mapping[Spawned, Callable[[], str | None]], timeout: float) -> None:
    """Poll each process's check until every one returns None; until then it says what is missing ("answer URL").

    Raises ProcessError, with the tail of the process's log, when one exits first or after `timeout` seconds.
    """
    pending = dict(checks)
    deadline = time.monotonic() + timeout
    while pending:
        for process, check in list(pending.items()):
            code = process.poll()
            if code is not None:
                raise ProcessError(f"the {process.title} exited with code {code}; {process.log_hint()}")
            missing = check()
            if missing is None:
                del pending[process]
            elif time.monotonic() > deadline:
                raise ProcessError(
                    f"the {process.title} did not {missing} within {timeout:.0f} s; {process.log_hint()}"
                )
        if pending:
            time.sleep(POLL_INTERVAL)


def answers(url: str, expect: bytes) -> Callable[[], str | None]:
    """A check for wait_until_ready: `url` answers 200 with `expect` in its body."""

    def missing() -> str | None:
        problem = health_problem(url, expect)
        return None if problem is None else f"answer {url} ({problem})"

    return missing


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, offset: int = 0) -> str:
    """The last `lines` lines of `path` written after byte `offset` (empty if there are none)."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def forget(path: Path, record: Mapping[str, Any]) -> None:
    """Delete the JSON file `path` if it holds `record`, and not the record of something started since."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()) == record:
            path.unlink()


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free on `host` right now (the OS picks it; someone else may take it later)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free ports: each stays bound until all are chosen, so none is handed out twice."""
    family, socktype, proto, _, sockaddr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(family, socktype, proto))
            sock.bind(sockaddr)
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_problem(host: str, port: int) -> str | None:
    """Why `port` cannot be bound on `host`, or None when it can.

    SO_REUSEADDR, as both servers (uvicorn) set it, so a port whose connections from a stopped server
    linger in TIME_WAIT counts as free, while one with a live listener does not.
    """
    try:
        family, socktype, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc}"
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


@contextlib.contextmanager
def watching(check: Callable[[], str | None], on_lost: Callable[[str], None], interval: float = 2.0) -> Iterator[None]:
    """While the block runs, call `check` every `interval` seconds in a background thread; the first time it
    returns a reason (something the command depends on is gone), call `on_lost(reason)` once and stop watching."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            reason = check()
            if reason is not None:
                on_lost(reason)
                return

    watcher = threading.Thread(target=watch, name="shrinkflow-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
