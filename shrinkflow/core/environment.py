"""Checks of the environment a run needs, made before Prefect or TensorFlow start.

Each check raises an EnvironmentProblem (a UserError: exit 2, no traceback) that names the setting, what is
wrong with it and how to fix it, within seconds: an unreachable server is asked once, with a short timeout.
"""

from __future__ import annotations

import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from shrinkflow.core.errors import UserError
from shrinkflow.core.workspace import WORKSPACE_ENV, Workspace

PROBE_TIMEOUT = 3.0  # seconds a server on the network gets to answer its health check
# MLflow's stores by URI scheme (an optional "+driver" after a database's name): its server, SQLite, databases.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9_]+)?://")


class EnvironmentProblem(UserError):
    """A setting of the environment (workspace, tracking URI, Prefect API) that a run cannot work with."""


def check_workspace(workspace: Workspace, explicit: str | None) -> None:
    """The workspace is a folder this process can create files in (creating it if needed)."""
    setting = (
        f"--workspace {explicit}" if explicit
        else f"{WORKSPACE_ENV}={os.environ[WORKSPACE_ENV]}" if os.environ.get(WORKSPACE_ENV)
        else f"the default workspace {workspace.root}"
    )
    fix = f"choose another folder with --workspace DIR (or {WORKSPACE_ENV})"
    if workspace.root.exists() and not workspace.root.is_dir():
        raise EnvironmentProblem(f"{setting}: {workspace.root} is a file, not a folder; {fix}")
    _check_writable(workspace.root, setting, fix)


def check_tracking_uri(uri: str, flag: str | None = None) -> None:
    """MLflow can track to `uri`: a known kind of store, and a server that answers if it is one. `uri` comes from
    MLFLOW_TRACKING_URI, or from the command-line option `flag` when given."""
    if flag is None and "MLFLOW_TRACKING_URI" not in os.environ:
        return  # the workspace's own SQLite file, checked with the workspace
    setting, instead = (f"{flag} {uri}", f"leave out {flag}") if flag else (f"MLFLOW_TRACKING_URI={uri}", "unset MLFLOW_TRACKING_URI")
    match = SCHEME.match(uri)
    if match is None or match["scheme"].lower() not in TRACKING_SCHEMES:
        raise EnvironmentProblem(
            f"{setting}: not a tracking URI MLflow can use; give an MLflow server (http://HOST:PORT), a database "
            f"(sqlite:///path/mlflow.db, postgresql://...), or {instead} to track into the workspace"
        )
    if match["scheme"].lower() == "sqlite":
        _check_writable(Path(uri.removeprefix("sqlite:///")).parent, setting, "give a path in a folder you can write to")
    if match["scheme"].lower() in ("http", "https"):
        problem = health_problem(f"{uri.rstrip('/')}/health", expect=b"OK")
        if problem:
            raise EnvironmentProblem(
                f"{setting}: no MLflow server answers at {uri} ({problem}); start it (`mlflow server --host ... "
                f"--port ...`), or {instead} to track into the workspace's SQLite file"
            )


def check_prefect_api(api_url: str | None) -> None:
    """A configured Prefect API answers (with none configured, `shrinkflow run` starts a temporary server)."""
    if not api_url:
        return
    problem = health_problem(f"{api_url.rstrip('/')}/health", expect=b"true")
    if problem:
        raise EnvironmentProblem(
            f"PREFECT_API_URL={api_url}: no Prefect server answers ({problem}); start it (`prefect server start`), "
            "or unset PREFECT_API_URL (and any Prefect profile setting it) to run with a temporary server"
        )


def health_problem(url: str, expect: bytes) -> str | None:
    """Why `url` does not answer 200 with `expect` in its body within PROBE_TIMEOUT; None when it does."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the servers are ours: no proxies
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT) as response:
            body = response.read(1000)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {url}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{reason}" if str(reason) else type(exc).__name__
    except http.client.HTTPException as exc:  # something that is not an HTTP server listens there
        return f"{url} answered, but not in HTTP ({type(exc).__name__})"
    return None if expect in body else f"{url} answered, but not as that server does"


def _check_writable(folder: Path, setting: str, fix: str) -> None:
    """`folder` exists or can be created, and files can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise EnvironmentProblem(f"{setting}: cannot write to {folder} ({exc.strerror or exc}); {fix}") from None


def check_dask_address(address: str) -> None:
    """A Dask scheduler listens at `address` (tcp://HOST:PORT): one connection attempt, PROBE_TIMEOUT seconds."""
    import socket
    from urllib.parse import urlsplit

    setting = f"--dask-address {address}"
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise EnvironmentProblem(f"{setting}: expected tcp://HOST:PORT, the address `dask scheduler` prints")
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT):
            pass
    except OSError as exc:
        raise EnvironmentProblem(
            f"{setting}: no Dask scheduler answers ({exc.strerror or exc}); start one with `dask scheduler` and workers "
            "with `dask worker tcp://HOST:PORT --nthreads 1`, or drop --dask-address to run on a local cluster"
        ) from None
