"""The MLflow store a run tracks to: a client of it, MLflow's fluent API pointed at it for a block, a new SQLite
store created once (as a copy of an empty one), the leases that tell a run abandoned by its process, and the
lock that lets one run at a time ship a version of a registered model.

<workspace>/runs/<parent run id>/lease is locked (flock) by the process running that pipeline run: the kernel
drops the lock when the process dies, however it dies, so a later run can tell the run was abandoned.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from shrinkflow.core import locks
from shrinkflow.core.files import atomic_path

LEASE_FILE = "lease"
# The runs this process holds a lease on: parent run id -> open file descriptor of the locked lease.
_HELD_LEASES: dict[str, int] = {}


def client_for(tracking_uri: str) -> MlflowClient:
    """A client of the tracking store at `tracking_uri`, which is also the model registry."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def prepare_tracking_store(tracking_uri: str) -> None:
    """Import what MLflow needs for a database store (SQLAlchemy's models: over a second) ahead of time, so
    a caller can do it while it waits anyway. MLflow imports it on first use otherwise."""
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


@contextmanager
def fluent_mlflow(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (log_model, register_model, "models:/" URIs) at `tracking_uri` for
    the block only. `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which would otherwise
    redirect every later run in this process (Workspace.tracking_uri reads it)."""
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None resets it (MLflow's hint says str)
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store across processes (two runs starting at once on a new workspace
    would otherwise both create MLflow's tables, and one would fail), and create a new store as a copy of an
    empty one: MLflow's migrations take over a second and a half, copying the result a few milliseconds."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    with _file_lock(database.with_name(database.name + ".lock")):
        if not database.exists():
            _copy_empty_store(database)
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _copy_empty_store(database: Path) -> None:
    """A new SQLite store: a copy of an empty store this version of MLflow made (and keeps in the user's cache)."""
    import mlflow

    template = _user_cache() / f"mlflow-{mlflow.__version__}-empty.db"
    with _file_lock(template.with_name(template.name + ".lock")):
        if not template.exists():
            with atomic_path(template) as partial:
                client_for(f"sqlite:///{partial}").search_experiments()  # creating the client migrates the store
    with atomic_path(database) as partial:
        shutil.copyfile(template, partial)
        # The Default experiment, which MLflow creates with the store, keeps its artifacts beside the store.
        with contextlib.closing(sqlite3.connect(partial)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                ((database.parent / "mlartifacts" / "0").as_uri(),),
            )


# How long a run waits for another run to finish shipping a version of the same model (registering, exporting,
# gating: seconds to minutes) before it gives up.
MODEL_LOCK_WAIT = 30 * 60.0


def model_lock(tracking_uri: str, name: str, on_wait: Callable[[str], None] | None = None) -> locks.HeldLock:
    """Hold the registered model `name` of the store at `tracking_uri` for one run's shipment (from its look at
    the champion to its gate), so that two runs selecting the same file register it once.

    A SQLite store is locked by a file beside it, a PostgreSQL store in PostgreSQL (across machines); an MLflow
    server by a file in this user's cache, which covers the runs of this machine (MLflow has no lock of its own).
    """
    if tracking_uri.startswith("sqlite:///"):
        where: str | Path = Path(f"{tracking_uri.removeprefix('sqlite:///')}.model-{name}.lock")
    elif tracking_uri.split(":", 1)[0].split("+", 1)[0] == "postgresql":
        where = tracking_uri
    else:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
        where = _user_cache() / "locks" / f"model-{digest}-{name}.lock"
    return locks.acquire(
        where, f"shrinkflow-model:{name}", MODEL_LOCK_WAIT, f"another run ({{holder}}) has been shipping {name} for "
        f"over {MODEL_LOCK_WAIT / 60:.0f} minutes", on_wait,
    )


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shrinkflow"


def take_lease(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    _HELD_LEASES[run_dir.name] = descriptor


def release_lease(run_id: str) -> None:
    descriptor = _HELD_LEASES.pop(run_id, None)
    if descriptor is not None:
        os.close(descriptor)  # closing drops the lock


def lease_is_abandoned(lease: Path) -> bool:
    """Whether `lease` exists and no process holds its lock (flock locks belong to an open file, so this
    tells even a run of this very process apart)."""
    try:
        descriptor = os.open(lease, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True
