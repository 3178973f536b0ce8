"""Shared fixtures: one Prefect test harness for the whole session, a fresh workspace per test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.runtime import configure_libraries

configure_libraries()  # the test harness is an entry point, as the command is

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO.parent / "shared" / "data" / "mnist-t10k"


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server and database for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    # The server's telemetry heartbeat has nowhere to go offline and races its own migrations.
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

    # A fresh server runs its database migrations first: give it time on a busy 2-core machine.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their own tracking store and workspace; nothing leaks in from the shell."""
    for name in ("MLFLOW_TRACKING_URI", "SHRINKFLOW_WORKSPACE", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


# Turn off the stages the digits preset adds to pruning and quantization, for tests about something else.
ONLY_PRUNE_AND_QUANTIZE = {"distill.students": "[]", "cluster.enabled": "false", "onnx.enabled": "false"}


def tiny_digits_config(**overrides: object) -> PipelineConfig:
    """The default preset shrunk to seconds: a small CNN, two epochs, no students, clusters or ONNX variants
    unless asked for (tests/test_smaller_still.py runs those stages)."""
    sets = {
        "model.conv_filters": "[8]",
        "model.hidden_units": "[16]",
        "train.epochs": "2",
        # The split, sparsity and budget the tests' expectations were written for (the preset tunes them for a
        # full-size run).
        "data.validation_fraction": "0.1",
        "prune.target_sparsity": "0.8",
        "prune.epochs": "4",
        "select.max_quality_drop": "0.01",
        **ONLY_PRUNE_AND_QUANTIZE,
        **{k: str(v) for k, v in overrides.items()},
    }
    return load_config(REPO / "configs" / "digits_cnn.yaml", [f"{k}={v}" for k, v in sets.items()])


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SHRINKFLOW_WORKSPACE", None)
    return env


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (psutil: a thread that exits while /proc is read is not an error)."""
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def pids_alive(pids: list[int]) -> list[int]:
    """Those of `pids` that are alive (zombies are not)."""
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                alive.append(pid)
    return alive


def stop_prefect_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM a `prefect worker` a test started (its own process group), SIGKILL it if its shutdown outlasts a
    minute: Prefect's worker, not shrinkflow, is stopped here, and on a loaded machine it can take that long."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
