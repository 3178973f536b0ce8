"""The deployments against real servers: a `prefect server` and an `mlflow server` on free loopback ports.

Both ways of running them are exercised end to end: deployments/prefect.yaml applied with `prefect deploy`
onto a `process` work pool and executed by a `prefect worker`, and `shrinkflow up`, whose runner
(`shrinkflow serve`) executes the runs itself on the stack it starts. Runs are triggered the way the Prefect UI's Run button does it: the form is the
deployment's stored parameters, edited, and posted back as a new flow run of the deployment.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cronsim import CronSim
from mlflow import MlflowClient
from prefect.exceptions import PrefectHTTPStatusError

from shrinkflow.core.config import PipelineSettings
from shrinkflow.deployments.processes import free_ports, log_tail, port_problem
from shrinkflow.deployments.serving import DEPLOYMENTS, WORK_POOL, runner_file, runner_log
from shrinkflow.tracking.registry import CHAMPION_ALIAS
from shrinkflow.deployments.stack import (
    RunningStack, StackConfig, stack_dir, start_stack, state_file,
)
from shrinkflow.core.workspace import Workspace
from tests.conftest import REPO, stop_prefect_worker
from tests.test_interrupts import background_job
from tests.test_stack import processes_with_argument

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 300.0  # a tiny run takes ~20 s; the margin is for a busy 2-core machine
BIN = Path(sys.executable).parent
# The server's own scheduler looks for runs to create every 60 s by default; every 10 s here, so that a
# test waits less for it (it is still the scheduler, not the test, that creates the runs).
SCHEDULER_LOOP = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10"}
# The run's edits to a preset, as a user makes them in the Run form: small and quick, under a new model name.
QUICK_RUN = {
    ("train", "epochs"): 2,
    ("prune", "enabled"): False,
    ("quantize", "modes"): ["dynamic"],
    ("distill", "students"): [],
    ("cluster", "enabled"): False,
    ("onnx", "enabled"): False,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    workspace = Workspace(tmp_path_factory.mktemp("deployments") / "workspace")
    prefect_port, mlflow_port = free_ports(2)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SCHEDULER_LOOP.items():
            patch.setenv(name, value)
        running = start_stack(StackConfig(workspace, prefect_port=prefect_port, mlflow_port=mlflow_port))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def prefect_yaml_applied(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """deployments/prefect.yaml applied to the stack's Prefect server, as its header says; returns the CLI's env."""
    env = cli_env(stack, tmp_path_factory.mktemp("prefect-home"))
    apply_prefect_yaml(env, "--all")
    return env


def apply_prefect_yaml(env: dict[str, str], *which: str) -> None:
    """The `process` work pool, and the deployments of deployments/prefect.yaml `which` names (`--all`, or
    `--name NAME` ...), on the Prefect server of `env`, as the file's header says."""
    for argv in (
        ["prefect", "work-pool", "create", WORK_POOL, "--type", "process"],
        ["prefect", "--no-prompt", "deploy", *which, "--prefect-file", "deployments/prefect.yaml"],
    ):
        done = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"


def test_prefect_yaml_deploys_one_scheduled_deployment_per_preset_on_the_process_pool(prefect_yaml_applied) -> None:
    with prefect_client(prefect_yaml_applied["PREFECT_API_URL"]) as client:
        assert client.read_work_pool(WORK_POOL).type == "process"
        for spec in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(spec.full_name)
            assert deployment.work_pool_name == WORK_POOL
            assert deployment.entrypoint == spec.entrypoint
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (spec.cron, "UTC", True)
            # The Run form is filled with the preset's values.
            assert deployment.parameters == spec.parameters()


def test_the_stored_run_form_is_the_typed_described_config(prefect_yaml_applied) -> None:
    with prefect_client(prefect_yaml_applied["PREFECT_API_URL"]) as client:
        schema = client.read_deployment_by_name(DEPLOYMENTS[0].full_name).parameter_openapi_schema

    assert schema["required"] == ["config"]
    assert schema["properties"]["config"]["$ref"] == "#/definitions/PipelineSettings"  # no sweep section
    assert schema["properties"]["use_cache"] == {
        "default": True, "description": schema["properties"]["use_cache"]["description"],
        "position": 2, "title": "use_cache", "type": "boolean",
    }
    definitions = schema["definitions"]
    # Nested: one typed sub-form per stage.
    sections = definitions["PipelineSettings"]["properties"]
    assert {name: field.get("$ref") for name, field in sections.items() if name != "name"} == {
        name: f"#/definitions/{type(section).__name__}"
        for name, section in PipelineSettings(name="x") if name != "name"
    }
    # Choices are enums (drop-downs in the form).
    assert definitions["TrainConfig"]["properties"]["optimizer"]["enum"] == ["adam", "sgd", "rmsprop", "adagrad"]
    modes = definitions["QuantizeConfig"]["properties"]["modes"]
    assert modes["type"] == "array" and modes["items"]["enum"] == ["dynamic", "float16", "int8", "qat"]
    assert definitions["SelectConfig"]["properties"]["metric"]["enum"] == [
        "gzip_size_bytes", "size_bytes", "latency_ms", "batch64_latency_ms"
    ]
    assert definitions["SelectConfig"]["properties"]["quality"]["enum"] == ["accuracy", "rmse", "r2"]
    assert definitions["ModelConfig"]["properties"]["family"]["enum"] == ["mlp", "cnn", "rnn", "text"]
    # Typed and bounded: numbers are numbers, with the config's limits.
    sparsity = definitions["PruneConfig"]["properties"]["target_sparsity"]
    assert (sparsity["type"], sparsity["minimum"], sparsity["exclusiveMaximum"]) == ("number", 0, 1)
    assert definitions["TrainConfig"]["properties"]["epochs"]["type"] == "integer"
    # Every field and sub-form has a title and says what it is for; unknown keys are refused.
    for definition_name, definition in definitions.items():
        assert definition["title"] and definition["description"], definition_name
        assert definition["additionalProperties"] is False, definition_name
        for field_name, field in definition["properties"].items():
            if "$ref" in field:  # a section: its sub-form carries the title and description
                assert field["$ref"].removeprefix("#/definitions/") in definitions
            else:
                assert field.get("title") and field.get("description"), f"{definition_name}.{field_name}"


def test_a_run_button_run_executes_on_a_process_worker_and_is_tracked_in_the_mlflow_server(
    stack: RunningStack, prefect_yaml_applied: dict[str, str], tmp_path: Path
) -> None:
    api_url = prefect_yaml_applied["PREFECT_API_URL"]
    with prefect_client(api_url) as client:
        deployment = client.read_deployment_by_name("shrinkflow/tabular_csv")
        parameters = edited_run_form(deployment.parameters, name="wine_from_the_worker")
        # A value the form would not accept is refused by the server too, naming the field; no run starts.
        invalid = copy.deepcopy(parameters)
        invalid["config"]["train"]["optimizer"] = "adamax"
        with pytest.raises(PrefectHTTPStatusError, match=r"config\.train\.optimizer.*'adamax' is not one of"):
            client.create_flow_run_from_deployment(deployment.id, parameters=invalid)
        assert [run for run in client.read_flow_runs() if not run.auto_scheduled] == []  # only the cron's runs
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

    # The worker runs each flow run in a subprocess, from the repository (the prefect.yaml pull step), so the
    # preset's relative data path (examples/wine.csv) resolves; it tracks where MLFLOW_TRACKING_URI says.
    worker_env = {
        **prefect_yaml_applied, "MLFLOW_TRACKING_URI": stack.mlflow_url, "SHRINKFLOW_WORKSPACE": str(tmp_path / "ws"),
    }
    worker = subprocess.run(
        [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--run-once"],
        cwd=tmp_path, env=worker_env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    finished = wait_until_final(api_url, flow_run.id, lambda: worker.stdout[-3000:] + worker.stderr[-3000:])

    assert_tracked(stack_dir(stack.workspace), stack.mlflow_url, finished, "wine_from_the_worker", {"baseline", "baseline-dynamic"})
    assert list((tmp_path / "ws" / "exports" / "wine_from_the_worker").glob("*/manifest.json"))


def test_schedules_fire_on_a_process_worker_with_nobody_triggering_them(
    stack: RunningStack, prefect_yaml_applied: dict[str, str], tmp_path: Path
) -> None:
    api_url = prefect_yaml_applied["PREFECT_API_URL"]
    assert_cron_runs_scheduled(api_url)
    with prefect_client(api_url) as client:
        deployment = client.read_deployment_by_name("shrinkflow/tabular_csv")
        add_interval_schedule(client, deployment, edited_run_form(deployment.parameters, name="wine_on_a_schedule"))
    worker_env = {
        **prefect_yaml_applied, "MLFLOW_TRACKING_URI": stack.mlflow_url, "SHRINKFLOW_WORKSPACE": str(tmp_path / "ws"),
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--limit", "1"],
            cwd=tmp_path, env=worker_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        finished = wait_for_scheduled_run(api_url, deployment.id, "wine_on_a_schedule", lambda: log_tail(log, 60))
    finally:
        stop_prefect_worker(worker)
    assert_tracked(stack_dir(stack.workspace), stack.mlflow_url, finished, "wine_on_a_schedule", {"baseline", "baseline-dynamic"})


def test_serve_refuses_to_take_over_the_work_pool_deployments(prefect_yaml_applied) -> None:
    served = subprocess.run(
        [str(BIN / "shrinkflow"), "serve"], cwd=REPO, env=prefect_yaml_applied, capture_output=True, text=True,
        timeout=120,
    )
    assert served.returncode == 2, served.stdout + served.stderr
    assert "shrinkflow/digits_cnn (work pool shrinkflow)" in served.stderr
    assert "prefect deployment delete shrinkflow/digits_cnn" in served.stderr
    assert "Traceback" not in served.stderr


def test_up_serves_the_deployments_runs_a_run_button_run_and_down_stops_everything(tmp_path: Path) -> None:
    prefect_port, mlflow_port = free_ports(2)
    workspace = Workspace(tmp_path / "workspace")
    env = clean_env(**SCHEDULER_LOOP)
    argv = [
        str(BIN / "shrinkflow"), "up", "--workspace", str(workspace.root),
        "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port),
    ]
    up = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=background_job,  # as `make test &` or CI starts it: SIGINT ignored
    )
    output = Output(up)
    try:
        output.wait_for("Press Ctrl-C to stop", timeout=RUN_TIMEOUT)
        prefect_api_url, mlflow_url = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
        assert f"Prefect UI   http://127.0.0.1:{prefect_port}" in output.text and f"MLflow UI    {mlflow_url}/#/experiments?workflowType=machine_learning" in output.text

        # The banner says when each deployment runs next, as the server's own scheduler planned it.
        for spec in DEPLOYMENTS:
            assert f"{spec.name} {next_cron_time(spec.cron):%Y-%m-%d %H:%M} UTC" in output.text, output.text
        assert_cron_runs_scheduled(prefect_api_url)

        with prefect_client(prefect_api_url) as client:
            deployment = client.read_deployment_by_name("shrinkflow/digits_cnn")
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (DEPLOYMENTS[0].cron, "UTC")
            assert deployment.parameters["workspace"] == str(workspace.root)
            parameters = edited_run_form(
                deployment.parameters, name="digits_from_the_runner",
                model={"conv_filters": [8], "hidden_units": [16]},
            )
            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

            add_interval_schedule(
                client, deployment, edited_run_form(
                    deployment.parameters, name="digits_on_a_schedule", model={"conv_filters": [8], "hidden_units": [16]},
                ),
            )

        finished = wait_until_final(prefect_api_url, flow_run.id, lambda: log_tail(runner_log(workspace)))
        assert_tracked(stack_dir(workspace), mlflow_url, finished, "digits_from_the_runner", {"baseline", "baseline-dynamic"})
        assert list((workspace.exports / "digits_from_the_runner").glob("*/manifest.json"))
        scheduled = wait_for_scheduled_run(
            prefect_api_url, deployment.id, "digits_on_a_schedule", lambda: log_tail(runner_log(workspace), 60)
        )
        assert_tracked(stack_dir(workspace), mlflow_url, scheduled, "digits_on_a_schedule", {"baseline", "baseline-dynamic"})

        # A failing scheduler is reported loudly: the server's log gets what Prefect 3.8.8 logged with SQLAlchemy 2.1.
        assert "SCHEDULER IS FAILING" not in output.text
        with open(stack_dir(workspace) / "prefect.log", "a") as prefect_log:
            prefect_log.write((REPO / "tests" / "data" / "prefect-scheduler-errors.log").read_text())
        output.wait_for("SCHEDULER IS FAILING", timeout=30)
        output.wait_for("schedule_deployments: sqlalchemy.exc.InvalidRequestError: Can't evaluate bulk DML", timeout=5)

        # `shrinkflow down` from another shell (Ctrl-C and SIGTERM, with both cores busy: tests/test_interrupts.py).
        done = subprocess.run([str(BIN / "shrinkflow"), "down", "--workspace", str(workspace.root)], env=env, timeout=90)
        assert done.returncode == 0
        assert up.wait(timeout=90) == 0, output.text
        assert output.text.rstrip().endswith("shrinkflow: stopped")
        for port in (prefect_port, mlflow_port):
            assert processes_with_argument(str(port)) == [] and port_problem("127.0.0.1", port) is None
        assert processes_with_argument(str(workspace.root)) == []  # the runner and its flow runs
        assert not state_file(workspace).exists() and not runner_file(workspace).exists()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        subprocess.run([str(BIN / "shrinkflow"), "down", "--workspace", str(workspace.root)], env=env, check=False)


class Output:
    """A child's output, read as it comes (a thread, so waiting can time out)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert self._thread.is_alive(), f"exited before printing {needle!r}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout:.0f} s:\n{self.text}"
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------------------------


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without the caller's Prefect and MLflow settings, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1", **settings}


def cli_env(stack: RunningStack, prefect_home: Path) -> dict[str, str]:
    """The Prefect CLI's environment: the stack's API, and a home of its own (no profile from ~/.prefect)."""
    return clean_env(
        PREFECT_API_URL=stack.prefect_api_url, PREFECT_HOME=str(prefect_home), PREFECT_CLI_PROMPT="false"
    )


@contextlib.contextmanager
def prefect_client(api_url: str) -> Iterator[Any]:
    """A synchronous Prefect client of the server at `api_url`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def edited_run_form(stored: dict[str, Any], name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """What the Run button posts: every stored parameter, with the user's edits (QUICK_RUN, `sections`, `name`)."""
    parameters = copy.deepcopy(stored)
    config = parameters["config"]
    config["name"] = name
    for (section, field), value in QUICK_RUN.items():
        config[section][field] = value
    for section, fields in sections.items():
        config[section].update(fields)
    return parameters


def next_cron_time(cron: str) -> datetime:
    return next(CronSim(cron, datetime.now(timezone.utc)))


def assert_cron_runs_scheduled(api_url: str) -> None:
    """The server's own scheduler has created each deployment's upcoming runs, at its cron's next times (UTC)."""
    from prefect.client.schemas.filters import DeploymentFilter, FlowRunFilter

    deadline = time.monotonic() + 60
    with prefect_client(api_url) as client:
        for spec in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(spec.full_name)
            while not (runs := client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}),
                flow_run_filter=FlowRunFilter(state={"type": {"any_": ["SCHEDULED"]}}),
            )):
                assert time.monotonic() < deadline, f"the scheduler created no run of {spec.full_name}"
                time.sleep(1)
            cron_runs = sorted(run.expected_start_time for run in runs if run.auto_scheduled)
            # its next time when the scheduler planned it: a cron time passed since then (the test near 05:00) counts
            planned_from = datetime.now(timezone.utc) - timedelta(minutes=10)
            assert cron_runs[0] in (next_cron_time(spec.cron), next(CronSim(spec.cron, planned_from))), spec.full_name
            assert len(cron_runs) >= 3  # the scheduler plans several ahead


def add_interval_schedule(client: Any, deployment: Any, parameters: dict[str, Any], first_in: float = 10.0) -> None:
    """A one-minute schedule on `deployment`, first due in `first_in` seconds, that runs with `parameters`
    (as a schedule made in the UI or with `prefect deployment schedule create` can)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    every = timedelta(minutes=1)
    anchor = datetime.now(timezone.utc) + timedelta(seconds=first_in) - every
    client.create_deployment_schedules(
        deployment.id,
        [DeploymentScheduleCreate(
            schedule=IntervalSchedule(interval=every, anchor_date=anchor), active=True, parameters=parameters,
            max_scheduled_runs=1,
        )],
    )


def wait_for_scheduled_run(api_url: str, deployment_id: Any, model_name: str, log: Callable[[], str]) -> tuple[Any, str]:
    """Wait for the scheduler's run of `deployment_id` that trains `model_name` to end, then stop the schedule."""
    from prefect.client.schemas.filters import DeploymentFilter

    deadline = time.monotonic() + RUN_TIMEOUT
    with prefect_client(api_url) as client:
        while True:
            runs = [
                run for run in client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment_id]}))
                if run.parameters.get("config", {}).get("name") == model_name
            ]
            if any(run.state and not run.state.is_scheduled() for run in runs):
                break
            assert time.monotonic() < deadline, f"no run of the schedule started within {RUN_TIMEOUT:.0f} s:\n{log()}"
            time.sleep(1)
        [run] = [run for run in runs if run.state and not run.state.is_scheduled()]
        assert run.auto_scheduled  # created by the server's scheduler, not by anyone's click
        for schedule in client.read_deployment(deployment_id).schedules:
            if schedule.parameters.get("config", {}).get("name") == model_name:
                client.delete_deployment_schedule(deployment_id, schedule.id)  # one run is enough
    return wait_until_final(api_url, run.id, log)


def wait_until_final(api_url: str, flow_run_id: Any, log: Callable[[], str]) -> tuple[Any, str]:
    """Poll the flow run until it ends; fail with the executor's log unless it completed.

    Returns the flow run and the markdown of its "mlflow-run" artifact (links to the MLflow UI).
    """
    flow_run = completed_run(api_url, flow_run_id, log)
    with prefect_client(api_url) as client:
        links = [a.data for a in client.read_artifacts() if a.key == "mlflow-run" and a.flow_run_id == flow_run.id]
    assert len(links) == 1, links
    return flow_run, links[0]


def completed_run(api_url: str, flow_run_id: Any, log: Callable[[], str]) -> Any:
    """The flow run once it has ended; it must have completed (else the executor's log says why)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with prefect_client(api_url) as client:
        while (flow_run := client.read_flow_run(flow_run_id)).state is None or not flow_run.state.is_final():
            assert time.monotonic() < deadline, f"flow run still {flow_run.state_name} after {RUN_TIMEOUT:.0f} s:\n{log()}"
            time.sleep(1)
    assert flow_run.state.is_completed(), f"flow run ended {flow_run.state_name}: {flow_run.state.message}\n{log()}"
    return flow_run


def assert_tracked(stack_root: Path, mlflow_url: str, finished: tuple[Any, str], model_name: str, variants: set[str]) -> None:
    """The run's parent and child runs, and its registered champion, read back from the MLflow server."""
    flow_run, mlflow_link = finished
    client = MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name(model_name)
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    [parent] = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run.id}'"
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == "2" and parent.data.params["prune.enabled"] == "False"
    # Each UI leads to the other: the Prefect run links to the MLflow run, which is tagged with the flow run id.
    assert f"({mlflow_url}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning)" in mlflow_link
    assert f"({mlflow_url}/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=shrinkflow-decisive&workflowType=machine_learning)" in mlflow_link
    # ...and the MLflow run's description links back to the flow run's page in the stack's Prefect UI.
    assert f"/runs/flow-run/{flow_run.id})" in parent.data.tags["mlflow.note.content"]

    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {child.data.tags["variant"] for child in children} == variants
    assert all(child.info.status == "FINISHED" for child in children)

    champion = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    assert str(champion.version) == "1" and champion.status == "READY"
    assert champion.run_id in {child.info.run_id for child in children}
    assert champion.tags["variant"] in variants
    # Artifacts went through the server into the stack's workspace.
    assert list((stack_root / "mlartifacts").rglob(f"*{parent.info.run_id}*"))
