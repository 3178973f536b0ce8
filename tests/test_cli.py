"""The command-line contract: exit codes, messages without tracebacks, the printed summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

DIGITS = str(REPO / "configs" / "digits_cnn.yaml")


def shrinkflow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli", *args], capture_output=True, text=True, cwd=cwd,
        env=env or subprocess_env(), timeout=600,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--set", "train.epochz=2"], "train.epochz: unknown key"),
        (["--set", "train.epochs=two"], "train.epochs: Input should be a valid integer"),
        (["--set", "data.validation_fraction=0.9"], "data.validation_fraction: Input should be less than 0.5"),
    ],
)
def test_invalid_config_exits_2_with_a_message_and_no_traceback(tmp_path: Path, overrides: list[str], expected: str) -> None:
    result = shrinkflow("run", DIGITS, *overrides, "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "digits_cnn.yaml" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "ws" / "mlflow.db").exists()


def test_bad_data_exits_2_before_training(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n1,x,0\n2,y,1\n")
    result = shrinkflow(
        "run", DIGITS, "--set", f"data.source={table}", "--set", "model.family=mlp",
        "--workspace", str(tmp_path / "ws"), cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "table.csv" in result.stderr and "'b'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "ws" / "mlflow.db").exists()


def test_cnn_on_a_flat_table_is_a_config_error(tmp_path: Path) -> None:
    result = shrinkflow(
        "run", DIGITS, "--set", f"data.source={REPO / 'examples' / 'wine.csv'}", "--set", "data.label_column=cultivar",
        "--workspace", str(tmp_path / "ws"), cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "model.family: cnn needs image data" in result.stderr


def test_run_succeeds_and_prints_the_summary(tmp_path: Path) -> None:
    """The real command, with its own ephemeral Prefect server and the default SQLite store."""
    env = subprocess_env()
    env["SHRINKFLOW_WORKSPACE"] = str(tmp_path / "from-env")
    result = shrinkflow(
        "run", DIGITS, "--set", "train.epochs=1", "--set", "model.conv_filters=[4]", "--set", "model.hidden_units=[8]",
        "--set", "prune.enabled=false", "--set", "quantize.modes=[dynamic]", cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "variant" in result.stdout and "compression_ratio" in result.stdout
    assert "baseline-dynamic" in result.stdout
    assert "shipped" in result.stdout and "as version 1" in result.stdout
    assert (tmp_path / "from-env" / "mlflow.db").is_file()
    assert (tmp_path / "from-env" / "exports" / "digits_cnn" / "1" / "manifest.json").is_file()


def test_up_refuses_a_taken_port_with_exit_2(tmp_path: Path) -> None:
    import socket

    from shrinkflow.stack import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        result = shrinkflow(
            "up", "--workspace", str(tmp_path / "ws"), "--prefect-port", str(port), "--mlflow-port", str(free_port()),
            cwd=tmp_path,
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is not available for the Prefect server" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ws" / "stack" / "stack.json").exists()


def test_prefect_yaml_matches_the_presets(tmp_path: Path) -> None:
    result = shrinkflow("deployments", "--check", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
