"""The command-line contract: exit codes, messages without tracebacks, the printed summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

DIGITS = str(REPO / "configs" / "digits_cnn.yaml")


def shrinkflow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", *args], capture_output=True, text=True, cwd=cwd,
        env=env or subprocess_env(), timeout=600,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--set", "train.epochz=2"], "train.epochz (from --set train.epochz=2): unknown key"),
        (["--set", "train.epochs=two"], "train.epochs (from --set train.epochs=two): Input should be a valid integer"),
        (["--set", "data.validation_fraction=0.9"], "data.validation_fraction (from --set data.validation_fraction=0.9): Input should be less than 0.5"),
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


def closed_port() -> int:
    """A loopback port nothing listens on."""
    from shrinkflow.deployments.processes import free_port

    return free_port()


def _file_workspace(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "a-file").write_text("not a folder")
    return ["--workspace", str(tmp_path / "a-file")], {}


def _workspace_under_a_file(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "a-file").write_text("not a folder")
    return [], {"SHRINKFLOW_WORKSPACE": str(tmp_path / "a-file" / "ws")}


def _tracking_server_not_running(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    return ["--workspace", str(tmp_path / "ws")], {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}


def _tracking_uri_of_no_known_kind(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    return ["--workspace", str(tmp_path / "ws")], {"MLFLOW_TRACKING_URI": "garbage://x"}


def _prefect_server_not_running(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    return ["--workspace", str(tmp_path / "ws")], {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (_file_workspace, r"--workspace .*a-file: .*a-file is a file, not a folder; choose another folder"),
        (_workspace_under_a_file, r"SHRINKFLOW_WORKSPACE=.*a-file/ws: cannot write to .*ws \(Not a directory\)"),
        (_tracking_server_not_running, r"MLFLOW_TRACKING_URI=http://127.0.0.1:\d+: no MLflow server answers at .*Connection refused.*; start it"),
        (_tracking_uri_of_no_known_kind, r"MLFLOW_TRACKING_URI=garbage://x: not a tracking URI MLflow can use"),
        (_prefect_server_not_running, r"PREFECT_API_URL=http://127.0.0.1:\d+/api: no Prefect server answers \(.*Connection refused.*\); start it"),
    ],
)
def test_a_bad_environment_is_refused_before_prefect_or_tensorflow_start(tmp_path: Path, environment, expected: str) -> None:
    args, settings = environment(tmp_path)
    result = shrinkflow("run", DIGITS, *args, cwd=tmp_path, env={**subprocess_env(), **settings})
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    # Nothing started: no temporary Prefect server, no TensorFlow, no store.
    assert "Beginning flow run" not in result.stderr and "oneDNN" not in result.stderr
    assert not (tmp_path / "ws" / "mlflow.db").exists()


def test_a_workspace_nobody_may_write_to_is_refused(tmp_path: Path) -> None:
    """Before: minutes of retries, then a traceback. `chattr +i` denies writes even to root, as a read-only mount would."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["chattr", "+i", str(workspace)], check=True)
    try:
        result = shrinkflow("run", DIGITS, "--workspace", str(workspace), cwd=tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(workspace)], check=True)
    assert result.returncode == 2
    assert re.search(r"--workspace .*ws: cannot write to .*ws \(Operation not permitted\)", result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("a,b,label\n" + "".join(f"{i},{1e308 if i == 3 else i},{i % 2}\n" for i in range(30)), r"values beyond float32's range .* in column 'b'"),
        ("a,label,label\n" + "".join(f"{i},{i % 2},{i % 2}\n" for i in range(30)), r"column names must be unique, but 'label' \(2 times\)"),
        ("a;b;label\n" + "".join(f"{i};{i};{i % 2}\n" for i in range(30)), r"looks semicolon-separated"),
    ],
)
def test_data_that_cannot_be_trained_on_is_refused_naming_the_column(tmp_path: Path, csv: str, expected: str) -> None:
    table = tmp_path / "table.csv"
    table.write_text(csv)
    result = shrinkflow(
        "run", DIGITS, "--set", f"data.source={table}", "--set", "model.family=mlp", "--set", "data.scaling=minmax",
        "--workspace", str(tmp_path / "ws"), cwd=tmp_path,
    )
    assert result.returncode == 2
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_run_succeeds_and_prints_the_summary(tmp_path: Path) -> None:
    """The real command, with its own ephemeral Prefect server and the default SQLite store."""
    env = subprocess_env()
    env["SHRINKFLOW_WORKSPACE"] = str(tmp_path / "from-env")
    result = shrinkflow(
        "run", DIGITS, "--set", "train.epochs=1", "--set", "model.conv_filters=[4]", "--set", "model.hidden_units=[8]",
        "--set", "prune.enabled=false", "--set", "quantize.modes=[dynamic]", "--set", "distill.students=[]",
        "--set", "cluster.enabled=false", "--set", "onnx.enabled=false", cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "variant" in result.stdout and "compression_ratio" in result.stdout
    assert "baseline-dynamic" in result.stdout
    assert "shipped" in result.stdout and "as version 1" in result.stdout
    assert (tmp_path / "from-env" / "mlflow.db").is_file()
    assert (tmp_path / "from-env" / "exports" / "digits_cnn" / "1" / "manifest.json").is_file()


def test_up_refuses_a_taken_port_with_exit_2(tmp_path: Path) -> None:
    import socket

    from shrinkflow.deployments.processes import free_port

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
