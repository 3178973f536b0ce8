"""PostgreSQL for a team, end to end: a throw-away PostgreSQL cluster on 127.0.0.1 (Debian's server binaries,
installed by .ci/run), the Prefect server and the MLflow tracking server on it, and a sweep whose study is in it.
On that stack: a 2-trial sweep ships a version; two different configs scheduled at the same time on a worker with
--limit 2 both complete; two runs of one config at once register its model once; losing the MLflow server
mid-run stops the run in one line."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from shrinkflow.core import sweep as sweeps
from shrinkflow.core.config import validate_config
from shrinkflow.core.locks import LockBusy
from shrinkflow.core.workspace import Workspace
from shrinkflow.deployments.processes import free_port, free_ports, log_tail
from shrinkflow.deployments.serving import WORK_POOL
from shrinkflow.deployments.stack import RunningStack, StackConfig, start_stack
from shrinkflow.tracking.registry import CHAMPION_ALIAS
from shrinkflow.tracking.sweeps import STUDY_TAG
from tests.conftest import REPO, stop_prefect_worker, tiny_digits_config
from tests.test_deployments_e2e import apply_prefect_yaml, cli_env, completed_run, prefect_client
from tests.test_sweep_faults_e2e import Command

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TIMEOUT = 300  # a deadline against a hang, not a timing assertion
DATABASES = ("prefect", "mlflow", "optuna")
# The presets' edits that make a run take seconds: a tiny CNN, two epochs, two variants.
TINY = {
    "model.conv_filters": "[8]", "model.hidden_units": "[16]", "train.epochs": "2", "prune.enabled": "false",
    "quantize.modes": "[dynamic]", "distill.students": "[]", "cluster.enabled": "false", "onnx.enabled": "false",
}


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own in a temporary folder, on a free loopback port; yields the URL of its server
    (postgresql://postgres@127.0.0.1:PORT), with a database for each of Prefect, MLflow and the study."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="shrinkflow-postgres-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres user to run PostgreSQL as (initdb refuses root)")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = folder / "data", folder / "postgres.log"

    def pg(*argv: str) -> None:
        done = subprocess.run([*as_owner, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv[0]}: {done.stdout}{done.stderr}{log_tail(log)}"

    pg(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    settings = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    pg(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", settings, "start")
    try:
        import psycopg2

        server = f"postgresql://postgres@127.0.0.1:{port}"
        with contextlib.closing(psycopg2.connect(f"{server}/postgres")) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                for name in DATABASES:
                    cursor.execute(f"CREATE DATABASE {name}")
        yield server
    finally:
        subprocess.run([*as_owner, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The Prefect server and the MLflow tracking server, both on PostgreSQL."""
    prefect_port, mlflow_port = free_ports(2)
    config = StackConfig(
        Workspace(tmp_path_factory.mktemp("postgres-stack") / "workspace"), prefect_port=prefect_port, mlflow_port=mlflow_port,
        prefect_database=f"{postgres.replace('postgresql://', 'postgresql+asyncpg://')}/prefect",
        mlflow_database=f"{postgres}/mlflow",
    )
    with start_stack(config) as running:  # stopped on leaving
        yield running


@pytest.fixture(scope="module")
def run_env(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A command's environment on the stack: its Prefect API and MLflow server."""
    return {
        **cli_env(stack, tmp_path_factory.mktemp("prefect-home")), "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def tiny_config(tmp_path: Path, name: str, **edits: str) -> Path:
    raw = tiny_digits_config(**{**TINY, **edits}).model_dump(mode="json")
    raw["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def shrinkflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=TIMEOUT,
    )


def assert_consistent(client: MlflowClient, name: str, versions: int = 1) -> None:
    """The model's registry and runs are whole: `versions` versions, the champion among them, no run left open."""
    registered = client.search_model_versions(f"name='{name}'")
    assert len(registered) == versions, [(v.version, v.tags.get("file_sha256")) for v in registered]
    champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert champion.status == "READY" and champion.version in {v.version for v in registered}
    experiment = client.get_experiment_by_name(name)
    assert {run.info.status for run in client.search_runs([experiment.experiment_id])} == {"FINISHED"}


def test_a_sweep_and_a_run_of_another_config_scheduled_at_once_both_complete_on_a_worker_with_limit_2(
    postgres: str, stack: RunningStack, run_env: dict[str, str], tmp_path: Path
) -> None:
    """The deployments as a team runs them, everything on PostgreSQL: the sweep deployment (its study in
    PostgreSQL, two trials) and the pipeline deployment on another config, due at the same moment, executed side
    by side by one process worker; each ships, and each model's registry and runs are whole."""
    apply_prefect_yaml(run_env, "--name", "digits_cnn", "--name", "digits_sweep")
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.states import Scheduled

    # Only this test's two runs: the preset's cron would start a run of its own when the test runs near its hour.
    with prefect_client(stack.prefect_api_url) as client:
        for name in ("shrinkflow/digits_cnn", "shrinkflow-sweep/digits_sweep"):
            deployment = client.read_deployment_by_name(name)
            for schedule in deployment.schedules:
                client.delete_deployment_schedule(deployment.id, schedule.id)
            for run in client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment.id]})):
                client.delete_flow_run(run.id)

    storage = f"{postgres}/optuna"
    searched = yaml.safe_load(tiny_config(tmp_path, "pg_sweep").read_text())
    searched["sweep"] = {"sampler": "random", "trials": 2, "seed": 5, "storage": storage,
                         "parameters": [{"key": "model.hidden_units", "choice": [[8], [12]]}]}  # as the Run form sends it
    other = yaml.safe_load(tiny_config(tmp_path, "pg_run", **{"model.hidden_units": "[12]", "quantize.modes": "[float16]"}).read_text())
    other.pop("sweep", None)  # the pipeline's form has no sweep section
    due = Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(seconds=3))
    with prefect_client(stack.prefect_api_url) as client:
        flow_runs = [
            client.create_flow_run_from_deployment(client.read_deployment_by_name(name).id, parameters=parameters, state=due)
            for name, parameters in (
                ("shrinkflow-sweep/digits_sweep", {"config": searched, "workers": 1}), ("shrinkflow/digits_cnn", {"config": other}),
            )
        ]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--limit", "2"],
            cwd=tmp_path, env={**run_env, "SHRINKFLOW_WORKSPACE": str(tmp_path / "ws")}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        finished = [completed_run(stack.prefect_api_url, run.id, lambda: log_tail(log, 80)) for run in flow_runs]
    finally:
        stop_prefect_worker(worker)
    assert max(run.start_time for run in finished) < min(run.end_time for run in finished), "they did not run side by side"

    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    client = MlflowClient(tracking_uri=stack.mlflow_url)
    [parent] = client.search_runs(
        [client.get_experiment_by_name("pg_sweep").experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{summary.study_name}'"
    )
    assert parent.info.status == "FINISHED" and parent.data.tags["chosen_trial"] != "none"
    for name in ("pg_sweep", "pg_run"):
        assert_consistent(client, name)

    # The study lock is PostgreSQL's (an advisory lock): a second holder is refused, naming the first.
    spec = validate_config(searched).sweep
    held = sweeps.lock_study(spec, storage, summary.study_name)
    try:
        with pytest.raises(LockBusy, match=rf"is being swept by another process \(shrinkflow pid {os.getpid()} on "):
            sweeps.lock_study(spec, storage, summary.study_name)
    finally:
        held.release()
    sweeps.lock_study(spec, storage, summary.study_name).release()


def test_two_runs_of_one_config_at_once_register_its_model_once_and_losing_mlflow_stops_a_third_in_one_line(
    stack: RunningStack, run_env: dict[str, str], tmp_path: Path
) -> None:
    """Before: the identical model was registered twice and both runs said it was now the champion; a run whose
    MLflow server was killed failed after 34 s with a traceback of retries. Last in this module: it stops the
    MLflow server. The third run trains for long (300 epochs), so that it is mid-run when the server goes."""
    config, workspace = tiny_config(tmp_path, "twin"), tmp_path / "ws"
    long_run = tiny_config(tmp_path, "orphan", **{"train.epochs": "300", "train.early_stopping_patience": "null"})
    orphan = Command(["run", str(long_run), "--workspace", str(tmp_path / "other"), "--verbose"], run_env)
    twins = [Command(["run", str(config), "--workspace", str(workspace)], run_env) for _ in range(2)]
    try:
        codes = [twin.finish() for twin in twins]
        orphan.wait_for("epoch 2/300")
        stack.mlflow.stop(timeout=10)
        orphan_code = orphan.finish()
    finally:
        for command in (*twins, orphan):
            command.kill()
    outputs = [twin.text for twin in twins]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    said = sorted(next(line for line in output.splitlines() if line.startswith("twin: shipped ")) for output in outputs)
    assert [line.split(" (", 1)[1].split(")", 1)[0] for line in said] == ["already the champion", "now the champion"], said

    assert orphan_code == 1, orphan.text[-4000:]
    last = orphan.text.rstrip().splitlines()[-1]
    assert last.startswith(f"shrinkflow: error: the MLflow server at {stack.mlflow_url} stopped answering"), last
    assert "nothing from it was shipped" in last
    assert "Traceback" not in orphan.text
    assert not (tmp_path / "other" / "exports").exists()

    # Read back from MLflow's PostgreSQL database, with the server gone: one version of the twins' model.
    store = MlflowClient(tracking_uri=f"{stack.config.mlflow_database}")
    assert_consistent(store, "twin")
