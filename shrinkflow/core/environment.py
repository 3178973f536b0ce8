"""Checks of the environment a run needs, made before Prefect or TensorFlow start.

Each check raises an EnvironmentProblem (a UserError: exit 2, no traceback) that names the setting, what is
wrong with it and how to fix it, within seconds: an unreachable server is asked once, with a short timeout.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from shrinkflow.core.errors import UserError
from shrinkflow.core.workspace import WORKSPACE_ENV, Workspace

PROBE_TIMEOUT = 3.0  # seconds a server on the network gets to answer its health check
# Less free space than this on the workspace's disk and a run cannot even write its models, stores and exports.
MIN_FREE_BYTES = 200 * 2**20
# A local trial process: TensorFlow, the dataset and a few models in memory.
WORKER_MEMORY_BYTES = 2**30
# MLflow's stores by URI scheme (an optional "+driver" after a database's name): its server, SQLite, databases.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9_]+)?://")


class EnvironmentProblem(UserError):
    """A setting of the environment (workspace, tracking URI, Prefect API) that a run cannot work with."""


class EnvironmentLost(Exception):
    """Something a started run depends on went away (its Dask workers, the space on its disk): the run stops,
    and says why in one line (exit 1), without a traceback."""


def reported_in_one_line(exc: BaseException) -> bool:
    """Whether `exc` is reported as one line, never with a traceback: a user error, or a lost environment."""
    return isinstance(exc, (UserError, EnvironmentLost)) or disk_full(exc) is not None


def disk_full(exc: BaseException) -> str | None:
    """What filled up, when `exc` (or an exception it was raised from) is a write that found its disk full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return f"no space left on the device writing {current.filename}" if current.filename else "no space left on the device"
        if "database or disk is full" in str(current):  # SQLite's word for it (MLflow's store, the study)
            return "the disk holding a SQLite database is full"
        current = current.__cause__ or current.__context__
    return None


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
    check_free_space(workspace.root, setting, fix)


def check_free_space(folder: Path, setting: str, fix: str) -> None:
    """The disk holding `folder` has MIN_FREE_BYTES free (a full disk fails a run halfway, in a library's words)."""
    import shutil

    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise EnvironmentProblem(
            f"{setting}: only {free / 2**20:.1f} MB free on the disk holding {folder} (a run needs at least "
            f"{MIN_FREE_BYTES // 2**20} MB); free some space there, or {fix}"
        )


def check_worker_count(workers: int, setting: str) -> None:
    """A local Dask cluster of `workers` processes fits this machine: a core and WORKER_MEMORY_BYTES each."""
    import psutil

    limit = local_worker_limit()
    if workers > limit:
        cores = len(os.sched_getaffinity(0))
        available = psutil.virtual_memory().available / 2**30
        raise EnvironmentProblem(
            f"{setting} {workers}: this machine has {cores} cores and {available:.1f} GiB of memory available, room "
            f"for {limit} trial processes (each takes a core and about {WORKER_MEMORY_BYTES // 2**30} GiB); use "
            f"{setting} {limit} or fewer, or run the trials on a larger Dask cluster with --dask-address"
        )


def local_worker_limit() -> int:
    """How many trial processes this machine runs at once: one per core, as far as memory allows."""
    import psutil

    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, int(psutil.virtual_memory().available // WORKER_MEMORY_BYTES)))


def check_tracking_uri(uri: str, flag: str | None = None) -> None:
    """MLflow can track to `uri`: a known kind of store, a database it can open and write (its driver
    installed), and a server that answers if it is one. `uri` comes from MLFLOW_TRACKING_URI, or from the
    command-line option `flag` when given."""
    if flag is None and "MLFLOW_TRACKING_URI" not in os.environ:  # the workspace's own SQLite file
        check_database(uri, f"the workspace's MLflow store {uri.removeprefix('sqlite:///')}", MOVE_ASIDE)
        return
    setting, instead = (f"{flag} {uri}", f"leave out {flag}") if flag else (f"MLFLOW_TRACKING_URI={uri}", "unset MLFLOW_TRACKING_URI")
    match = SCHEME.match(uri)
    if match is None or match["scheme"].lower() not in TRACKING_SCHEMES:
        raise EnvironmentProblem(
            f"{setting}: not a tracking URI MLflow can use; give an MLflow server (http://HOST:PORT), a database "
            f"(sqlite:///path/mlflow.db, postgresql://...), or {instead} to track into the workspace"
        )
    if match["scheme"].lower() not in ("http", "https", "databricks"):
        check_database(uri, setting, "give a database you can write to")
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


MOVE_ASIDE = "move it aside to start a new one (its runs are lost), or restore it from a backup"


def check_database(url: str, setting: str, fix: str) -> None:
    """A database (an SQLAlchemy URL: an MLflow store, an Optuna study) can be used: its driver is installed;
    a SQLite file is a sound database this process can write (or can be created); a server answers.

    `fix` says what to do about a SQLite file that cannot be used.
    """
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise EnvironmentProblem(f"{setting}: not a database URL; e.g. sqlite:///path/file.db or postgresql://USER:PASSWORD@HOST/DB") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except sa.exc.NoSuchModuleError:
        raise EnvironmentProblem(f"{setting}: {parsed.drivername} is not a database SQLAlchemy knows") from None
    except ImportError as exc:
        raise EnvironmentProblem(
            f"{setting}: the {parsed.get_backend_name()} driver {dialect.driver} is not installed ({exc}); use "
            f"{parsed.get_backend_name()}:// (psycopg2, in the lock for PostgreSQL) or install it in the environment"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return
        path = Path(parsed.database)
        _check_writable(path.parent, setting, "give a path in a folder you can write to")
        problem = sqlite_problem(path)
        if problem:
            raise EnvironmentProblem(f"{setting}: {path} cannot be used as a database ({problem}); {fix}")
        return
    connect_args = {"connect_timeout": int(PROBE_TIMEOUT)} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise EnvironmentProblem(f"{setting}: cannot connect to {shown} ({reason}); check the URL and that the server is up") from None
    finally:
        engine.dispose()


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file at `path` cannot be read and written (None if it can, or does not exist yet)."""
    if not path.exists():
        return None
    if not path.is_file():
        return "not a file"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PROBE_TIMEOUT)) as database:
            verdict = database.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                return f"damaged: {verdict}"
            # A write that is rolled back: the file, its folder (the journal) and the mount must all be writable.
            database.execute("BEGIN IMMEDIATE")
            database.execute("CREATE TABLE shrinkflow_write_check (x)")
            database.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return None if "locked" in str(exc) else str(exc)  # locked: in use by a live writer, so it works
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return str(exc)
    return None


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
