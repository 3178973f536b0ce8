"""The temporary Prefect server of `shrinkflow run`, when no Prefect API is configured.

Prefect would start one itself, but in the terminal's process group: Ctrl-C then reaches the server too,
which dies while the flow still needs it, and SIGTERM to the run leaves it orphaned. This one runs in a
session of its own, is stopped by whoever started it (also when that process is interrupted or
terminated), and starts in the background, so that importing TensorFlow meanwhile hides its start-up.

It is the same server Prefect's temporary one is (the API app under uvicorn, without the UI), on the same
database (PREFECT_HOME's), so runs made with it are kept as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shrinkflow.deployments.processes import ProcessError, Spawned, answers, free_port, wait_until_ready

# Run in the server's process before it becomes the server: Linux sends it SIGTERM when the process that
# started it dies, however it dies (SIGKILL included), so a killed `shrinkflow run` leaves no server behind.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
try:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
except (OSError, AttributeError):
    pass  # not Linux: the parent's clean-up stops it
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the parent died before the line above
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
STARTUP_TIMEOUT = 180.0  # a first start creates the database and runs every migration; slow on a busy machine
STOP_TIMEOUT = 10.0


class TemporaryPrefectServer:
    """A Prefect API server on a free loopback port, for the lifetime of one command."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        env = {
            **os.environ,
            # What Prefect sets for its own temporary server: no UI, and mark it as temporary.
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # its heartbeat has nowhere to go offline
        }
        env.pop("PREFECT_API_URL", None)
        server = [
            "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
        ]
        # A session of its own: Ctrl-C in the terminal is for `shrinkflow run`, which stops it last.
        self.process = Spawned.start(
            "temporary Prefect server", [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *server], log, env
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Raises ProcessError (a UserError, with the tail of its log) if it exits or does not answer in time."""
        try:
            wait_until_ready({self.process: answers(f"{self.api_url}/health", b"true")}, timeout)
        except ProcessError:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM it (and anything it started), SIGKILL whatever is left after STOP_TIMEOUT seconds."""
        self.process.stop(STOP_TIMEOUT)
