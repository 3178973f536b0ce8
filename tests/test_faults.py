"""Faults a user meets before any work starts, and the ones a started run reports in one line: a machine too small
for --workers, a study database that cannot be used (no driver, read-only, unreachable), a damaged MLflow store,
a full disk, a second sweep of a study that is being swept, Prefect's traceback for a user error, a grid that
runs out before --trials. The commands are real `shrinkflow` processes; nothing here trains a model."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shrinkflow.core import sweep as sweeps
from shrinkflow.core.config import validate_config
from shrinkflow.core.environment import EnvironmentProblem, check_database, check_tracking_uri, disk_full
from shrinkflow.core.locks import LockBusy
from tests.conftest import REPO, subprocess_env, tiny_digits_config

TIMEOUT = 120  # a deadline against a hang, not a timing assertion


def sweep_file(tmp_path: Path, **sweep: Any) -> Path:
    raw = tiny_digits_config(**{"prune.enabled": "false", "quantize.modes": "[dynamic]"}).model_dump(mode="json")
    raw["name"] = "faults"
    raw["sweep"] = {"sampler": "random", "trials": 2, "parameters": {"model.hidden_units": {"choice": [[8], [16]]}}, **sweep}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def shrinkflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", *args], capture_output=True, text=True, cwd=REPO,
        env=env or subprocess_env(), timeout=TIMEOUT,
    )


def assert_refused(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 and one line on stderr that says it all, no traceback, nothing on stdout."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shrinkflow: error: "), done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small file system of its own at `path` (a tmpfs: needs root; skipped otherwise)."""
    path.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.skip("mounting a small file system needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- finding 3: more workers than the machine has cores ------------------------------------------------------------

def test_more_workers_than_cores_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Before: `--workers 64` on 2 cores started 64 worker processes, finished no trial and ignored SIGTERM."""
    done = shrinkflow("sweep", str(sweep_file(tmp_path)), "--workspace", str(tmp_path / "ws"), "--workers", "64")
    cores = len(os.sched_getaffinity(0))
    assert_refused(done, "--workers 64: this machine has", f"use --workers {cores} or fewer", "--dask-address")
    assert not (tmp_path / "ws" / "sweeps").exists()


# --- finding 6: a study database that cannot be used ---------------------------------------------------------------

def test_a_study_database_without_its_driver_is_refused_naming_sweep_storage(tmp_path: Path) -> None:
    """Before: `No module named 'psycopg2'`, exit 1 and a traceback, after the Prefect server and the Dask cluster
    had started. psycopg2 is in the lock now; a driver that is not installed is named the same way."""
    import psycopg2  # noqa: F401  (the driver of postgresql:// URLs, in the lock)

    config = sweep_file(tmp_path, storage="postgresql+pg8000://shrinkflow@127.0.0.1:1/optuna")
    done = shrinkflow("sweep", str(config), "--workspace", str(tmp_path / "ws"))
    assert_refused(done, "sweep.storage postgresql+pg8000://shrinkflow@127.0.0.1:1/optuna", "driver pg8000 is not installed")


def test_a_study_database_nobody_answers_for_is_refused() -> None:
    url = "postgresql://shrinkflow:secret@127.0.0.1:1/optuna"
    spec = validate_config({"name": "x", "sweep": {"storage": url, "parameters": {"train.epochs": {"choice": [1]}}}}).sweep
    with pytest.raises(EnvironmentProblem, match=r"^sweep.storage postgresql://shrinkflow:\*\*\*@127.0.0.1:1/optuna: cannot connect .*refused"):
        sweeps.check_storage(spec, url)


def test_a_read_only_study_database_is_refused_naming_sweep_storage(tmp_path: Path) -> None:
    """Before: the same traceback as a missing driver, 23 s in. (The command runs this check in its pre-flight,
    as the test above shows for a missing driver.)"""
    folder = tmp_path / "read-only"
    with mounted_tmpfs(folder, "1m"):
        database = folder / "study.db"
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("CREATE TABLE t (x)")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        storage = f"sqlite:///{database}"
        spec = validate_config({"name": "x", "sweep": {"storage": storage, "parameters": {"train.epochs": {"choice": [1]}}}}).sweep
        with pytest.raises(EnvironmentProblem, match=rf"^sweep.storage {storage}: cannot write to {folder} \(Read-only file system\)"):
            sweeps.check_storage(spec, storage)


# --- finding 7: a damaged MLflow store -----------------------------------------------------------------------------

def test_a_corrupt_mlflow_store_is_refused_before_the_run(tmp_path: Path) -> None:
    """Before: exit 1 and a SQLAlchemy traceback after 19 s."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mlflow.db").write_bytes(os.urandom(64 * 1024))
    done = shrinkflow("run", str(REPO / "configs" / "digits_cnn.yaml"), "--workspace", str(workspace))
    assert_refused(done, f"the workspace's MLflow store {workspace / 'mlflow.db'}", "file is not a database", "move it aside")
    assert {path.name for path in workspace.iterdir()} - {"native.log"} == {"mlflow.db"}  # nothing started


def test_a_truncated_mlflow_store_is_refused(tmp_path: Path) -> None:
    from shrinkflow.tracking.store import store_creation_lock

    database = tmp_path / "mlflow.db"
    with store_creation_lock(f"sqlite:///{database}"):  # a real store, with MLflow's tables (a copy of an empty one)
        pass
    with open(database, "r+b") as store:
        store.truncate(database.stat().st_size // 2)
    with pytest.raises(EnvironmentProblem, match="malformed"):
        check_tracking_uri(f"sqlite:///{database}")


# --- finding 9: a full disk ----------------------------------------------------------------------------------------

def test_a_workspace_on_a_full_disk_is_refused_and_nothing_is_left_behind(tmp_path: Path) -> None:
    """Before: exit 1 and a traceback (`No space left on device` copying the empty MLflow store), with
    datasets/*.npz and half a result under cache/results/ left behind."""
    with mounted_tmpfs(tmp_path / "small", "4m") as disk:
        done = shrinkflow("run", str(REPO / "configs" / "digits_cnn.yaml"), "--workspace", str(disk / "ws"))
        left = sorted(str(path.relative_to(disk)) for path in disk.rglob("*"))
    assert_refused(done, f"--workspace {disk / 'ws'}: only", f"free on the disk holding {disk / 'ws'}", "free some space")
    assert left == ["ws"]


def test_a_write_to_a_full_disk_is_recognised_whoever_makes_it(tmp_path: Path) -> None:
    """What a run reports in one line when its disk fills up halfway: a file written, or SQLite's database."""
    with mounted_tmpfs(tmp_path / "full", "64k") as disk:
        with pytest.raises(OSError) as written:
            (disk / "big").write_bytes(b"x" * 2**20)
        (disk / "big").unlink()
        with pytest.raises(sqlite3.OperationalError) as stored, contextlib.closing(sqlite3.connect(disk / "s.db")) as db:
            db.execute("CREATE TABLE t (x)")
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 2**20,))
            db.commit()
    assert disk_full(RuntimeError("wrapped")) is None
    try:
        raise RuntimeError("an MLflow error") from stored.value
    except RuntimeError as wrapped:
        assert disk_full(wrapped) == "the disk holding a SQLite database is full"
    assert disk_full(written.value) and "no space left on the device" in str(disk_full(written.value))


# --- finding 1: one sweep per study --------------------------------------------------------------------------------

def test_a_second_sweep_of_a_study_being_swept_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """The lock the sweep holds while it runs (tests/test_sweep_faults_e2e.py takes it with a real sweep)."""
    spec = validate_config({"name": "x", "sweep": {"parameters": {"train.epochs": {"choice": [1]}}}}).sweep
    storage = sweeps.default_storage(tmp_path, "study")
    held = sweeps.lock_study(spec, storage, "study")
    try:
        with pytest.raises(LockBusy, match=rf"study study is being swept by another process.*\(pid {os.getpid()} on "):
            sweeps.lock_study(spec, storage, "study")
        sweeps.lock_study(spec, storage, "another-study").release()  # other studies in the same database are free
    finally:
        held.release()
    sweeps.lock_study(spec, storage, "study").release()


def test_check_database_names_the_setting_and_a_sound_sqlite_file_passes(tmp_path: Path) -> None:
    check_database(f"sqlite:///{tmp_path / 'new.db'}", "setting", "fix")  # created on first use
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(EnvironmentProblem, match=r"^setting: .*junk.db cannot be used as a database \(file is not a database\); fix$"):
        check_database(f"sqlite:///{tmp_path / 'junk.db'}", "setting", "fix")


# --- finding 8: Prefect's traceback for a user error; finding 13: a grid smaller than --trials -----------------------

@pytest.fixture(scope="module")
def scheduler_without_workers() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_a_user_error_inside_a_flow_is_logged_in_one_line_without_a_traceback(
    prefect_harness: None, scheduler_without_workers: str, tmp_path: Path
) -> None:
    """Before: the right exit 2, but Prefect printed the whole traceback first (its "Encountered exception").
    What reaches a handler of Prefect's flow-run logger is what its console and API handlers get."""
    import logging

    from shrinkflow.flows.sweep import sweep as sweep_flow

    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    config = validate_config(yaml.safe_load(sweep_file(tmp_path).read_text()))
    try:
        with pytest.raises(EnvironmentProblem, match="has no worker after 1 s"):
            sweep_flow(config, workspace=str(tmp_path / "ws"), dask_address=scheduler_without_workers, worker_wait=1)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    [failure] = [line for line in logged if "Encountered exception during execution" in line]
    assert "EnvironmentProblem" in failure and "has no worker after 1 s" in failure
    assert "Traceback" not in "\n".join(logged)


def test_a_grid_smaller_than_the_trials_asked_for_says_it_ran_out(prefect_harness: None, tmp_path: Path) -> None:
    """Before: the sweep stopped after the grid without a word. Every trial fails at once here (12 samples cannot
    be split into train, validation and test sets of 10 classes): the sweep itself is under test, not training."""
    from distributed import LocalCluster

    from shrinkflow.flows.sweep import sweep as sweep_flow

    raw = yaml.safe_load(sweep_file(tmp_path, sampler="grid", trials=4).read_text())
    raw["data"]["max_samples"] = 12
    raw["sweep"]["parameters"] = {"model.hidden_units": {"choice": [[8]]}}  # one point, and the base config
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = sweep_flow(validate_config(raw), workspace=str(tmp_path / "ws"), dask_address=cluster.scheduler_address)
    assert [outcome.number for outcome in result.outcomes] == [0, 1]
    assert all("max_samples=12" in outcome.reason for outcome in result.outcomes)
    assert result.note.startswith("the grid has no point left to try: the sweep stopped after 2 of the 4 trials asked for")
