"""Scheduled deployments of the pipeline, one per preset config, and the runner process that serves them.

`DEPLOYMENTS` is the one source of truth for the deployments' names, presets and schedules:

- `shrinkflow serve` builds them with `Flow.to_deployment` and hands them to `prefect.serve`: the
  serving process (the *runner*) executes scheduled and UI-triggered runs itself, no work pool needed;
- `shrinkflow deployments --write` renders `deployments/prefect.yaml` from the same list, for
  `prefect deploy` onto a `process` work pool polled by `prefect worker start`. The file is generated,
  never edited by hand: `shrinkflow deployments --check` (and a test) fails while it is stale.

Each deployment's `config` parameter is its preset, validated (`load_config(preset).model_dump(mode="json")`, the
pipeline's without the sweep section), so the Prefect UI's Run form is the pydantic model as a typed form
(PipelineSettings for the pipeline, PipelineConfig for a sweep), filled with the preset's values.

`shrinkflow up` starts the local stack (deployments.stack) and then `shrinkflow serve` as a child
process pointed at it; the child is recorded in `<workspace>/stack/runner.json` so that `shrinkflow
down` can stop it together with the servers when `up` itself is gone.

Prefect is imported only inside the functions that talk to it: importing this module has no side
effects and does not read Prefect's settings (`up` must not, it configures its child's instead).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from shrinkflow.deployments.processes import Spawned, forget, wait_until_ready
from shrinkflow.deployments.stack import RunningStack, stack_dir
from shrinkflow.core.config import PipelineConfig, load_config
from shrinkflow.core.environment import health_problem
from shrinkflow.core.errors import UserError
from shrinkflow.core.files import write_json_atomically
from shrinkflow.core.workspace import WORKSPACE_ENV, Workspace

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
ENTRYPOINT = "deployments/entrypoints.py:pipeline"
FLOW_NAME = "shrinkflow"  # the @flow's name: deployments are addressed as shrinkflow/<deployment>
SWEEP_ENTRYPOINT = "deployments/entrypoints.py:sweep"
SWEEP_FLOW_NAME = "shrinkflow-sweep"  # sweep deployments are shrinkflow-sweep/<deployment>
WORK_POOL = "shrinkflow"  # a `process` work pool, for the prefect.yaml deployments
TIMEZONE = "UTC"
TAGS = ("shrinkflow",)
# TensorFlow uses every core for one training: a second run at the same time only slows both down.
DEFAULT_RUN_LIMIT = 1

RUNNER = "runner (`shrinkflow serve`)"
RUNNER_STARTUP_TIMEOUT = 180.0  # imports TensorFlow and applies four deployments; slow on a busy machine
RUNNER_STOP_TIMEOUT = 30.0  # on SIGTERM it pauses its schedules on the server before it exits
# The server's scheduler looks at new and changed deployments every 5 s (and at all of them every 60 s).
SCHEDULED_RUNS_TIMEOUT = 30.0


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of a flow (the pipeline, or a sweep): a preset config on a cron schedule."""

    name: str  # the deployment's name, <flow name>/<name> in Prefect
    preset: str  # the config file, relative to the repository
    cron: str
    timezone: str = TIMEZONE
    entrypoint: str = ENTRYPOINT
    flow_name: str = FLOW_NAME
    every: str = "night"  # how often the cron runs it, for the description

    @property
    def preset_path(self) -> Path:
        return REPO / self.preset

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    @property
    def description(self) -> str:
        what = "A sweep" if self.entrypoint == SWEEP_ENTRYPOINT else "The pipeline"
        return f"{what} on {self.preset}, every {self.every} ({self.cron}, {self.timezone})."

    def config(self) -> PipelineConfig:
        return load_config(self.preset_path)

    def parameters(self) -> dict[str, Any]:
        """The deployment's parameters: the flow's `config`, as the preset's validated values (the pipeline's
        without the sweep section, which its Run form does not have)."""
        exclude = None if self.entrypoint == SWEEP_ENTRYPOINT else {"sweep"}
        return {"config": self.config().model_dump(mode="json", exclude=exclude)}


# Nightly, staggered by half an hour so the runs (limited to one at a time) do not queue up at once.
# Change a schedule here, then run `shrinkflow deployments --write` to regenerate deployments/prefect.yaml.
DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec("digits_cnn", "configs/digits_cnn.yaml", cron="0 2 * * *"),
    DeploymentSpec("mnist_mlp", "configs/mnist_mlp.yaml", cron="30 2 * * *"),
    DeploymentSpec("mnist_cnn", "configs/mnist_cnn.yaml", cron="0 3 * * *"),
    DeploymentSpec("tabular_csv", "configs/tabular_csv.yaml", cron="30 3 * * *"),
    DeploymentSpec("diabetes_regression", "configs/diabetes_regression.yaml", cron="0 4 * * *"),
    DeploymentSpec("mnist_lstm", "configs/mnist_lstm.yaml", cron="30 4 * * *"),
    DeploymentSpec("text_debian", "configs/text_debian.yaml", cron="0 5 * * *"),
    # A sweep trains a dozen pipelines: weekly, on Sunday after the nightly runs.
    DeploymentSpec(
        "digits_sweep", "configs/digits_sweep.yaml", cron="0 6 * * 0", entrypoint=SWEEP_ENTRYPOINT,
        flow_name=SWEEP_FLOW_NAME, every="week",
    ),
)


# ---------------------------------------------------------------------------------------------------------------------
# deployments/prefect.yaml

PREFECT_FILE_HEADER = """\
# Generated by `shrinkflow deployments --write` from configs/*.yaml and deployments/serving.py: do not edit.
# Change a preset or a schedule there and regenerate; `shrinkflow deployments --check` tells when this is stale.
#
# From the repository root, against a running Prefect server (PREFECT_API_URL):
#   .venv/bin/prefect work-pool create {pool} --type process
#   .venv/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
#   .venv/bin/prefect worker start --pool {pool} --limit 1
"""


def prefect_yaml_data() -> dict[str, Any]:
    """The prefect.yaml project: build, pull and one deployment per entry of DEPLOYMENTS."""
    from importlib.metadata import version

    return {
        "name": "shrinkflow",
        "prefect-version": version("prefect"),
        # `prefect deploy` runs from the repository root (it loads the entrypoint relative to the current
        # directory); this build step records that directory, so runs work wherever the clone lives.
        "build": [
            {
                "prefect.deployments.steps.run_shell_script": {
                    "id": "repository", "script": "pwd", "stream_output": False,
                }
            }
        ],
        "push": None,
        # A process worker starts each flow run in a temporary directory: move to the repository, where the
        # entrypoint and the presets' relative paths (examples/wine.csv, ./workspace) resolve.
        "pull": [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ repository.stdout }}"}}
        ],
        "deployments": [
            {
                "name": spec.name,
                "description": spec.description,
                "entrypoint": spec.entrypoint,
                "tags": list(TAGS),
                "parameters": spec.parameters(),
                "work_pool": {"name": WORK_POOL, "work_queue_name": None, "job_variables": {}},
                "schedules": [{"cron": spec.cron, "timezone": spec.timezone, "active": True}],
            }
            for spec in DEPLOYMENTS
        ],
    }


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars (`[16, 32]`); cron strings quoted."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, (list, dict)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if "*" in data else None)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def render_prefect_yaml() -> str:
    body = yaml.dump(prefect_yaml_data(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return PREFECT_FILE_HEADER.format(pool=WORK_POOL) + "\n" + body


def prefect_yaml_is_current(path: Path = PREFECT_FILE) -> bool:
    try:
        return path.read_text() == render_prefect_yaml()
    except FileNotFoundError:
        return False


def write_prefect_yaml(path: Path = PREFECT_FILE) -> bool:
    """(Re)generate prefect.yaml; returns whether its content changed."""
    if prefect_yaml_is_current(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_prefect_yaml())
    return True


# ---------------------------------------------------------------------------------------------------------------------
# `shrinkflow serve`


def runner_deployments(workspace: Workspace) -> list[RunnerDeployment]:
    """The deployments of DEPLOYMENTS for `prefect.serve`, writing to `workspace`.

    Served runs get the workspace as a parameter (an absolute path), so the Run form shows where a run
    writes and a custom run can change it; the prefect.yaml deployments leave it to the worker's
    $SHRINKFLOW_WORKSPACE instead, since a path in a committed file would not fit every clone.
    """
    from prefect.schedules import Cron

    from shrinkflow.deployments.entrypoints import pipeline, sweep

    flows: dict[str, Any] = {ENTRYPOINT: pipeline, SWEEP_ENTRYPOINT: sweep}
    deployments = []
    for spec in DEPLOYMENTS:
        # Called outside an event loop, to_deployment returns the deployment itself (its hint also allows a coroutine).
        deployment = cast("RunnerDeployment", flows[spec.entrypoint].to_deployment(
            name=spec.name,
            description=spec.description,
            tags=list(TAGS),
            parameters={**spec.parameters(), "workspace": str(workspace.root)},
            schedules=[Cron(spec.cron, timezone=spec.timezone)],
        ))
        deployment.entrypoint = spec.entrypoint  # the entry module, as in prefect.yaml, not the flow's own file
        deployments.append(deployment)
    return deployments


def serve(workspace: Workspace, limit: int = DEFAULT_RUN_LIMIT) -> None:
    """Serve every deployment from this process until interrupted (Ctrl-C or SIGTERM).

    Raises:
        UserError: no Prefect API is configured, or it does not answer.
    """
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        raise UserError(
            "serving needs a Prefect server, and none is configured: start the local stack with `shrinkflow up` "
            "(it serves the deployments itself), or start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    api_url = api_url.rstrip("/")
    problem = health_problem(f"{api_url}/health", b"true")
    if problem:
        raise UserError(
            f"the Prefect API at {api_url} does not answer ({problem}; PREFECT_API_URL): is the server running?"
        )
    # Serving re-applies the deployments by name; one applied with `prefect deploy` would keep its work pool
    # and pull steps, and its runs would crash in the runner.
    on_pools = {
        spec.full_name: found["work_pool_name"]
        for spec in DEPLOYMENTS
        if (found := _api(f"{api_url}/deployments/name/{spec.full_name}")) and found.get("work_pool_name")
    }
    if on_pools:
        names = ", ".join(f"{name} (work pool {pool})" for name, pool in on_pools.items())
        raise UserError(
            f"{names} on {api_url} were applied with `prefect deploy` and run on a worker; serving them here "
            "would take them over: serve on another Prefect server (`shrinkflow up` starts its own), or delete "
            f"them first with `prefect deployment delete {next(iter(on_pools))}` and so on"
        )

    from prefect import serve as prefect_serve

    # Runs execute in subprocesses started in this directory: the repository, as for the prefect.yaml
    # deployments (relative paths in the presets, such as examples/wine.csv, resolve against it).
    os.chdir(REPO)
    print(f"shrinkflow: serving {len(DEPLOYMENTS)} deployments on {api_url}; runs write to {workspace.root}")
    threading.Thread(target=_warn_unless_scheduled, args=(api_url,), name="check-schedules", daemon=True).start()
    prefect_serve(*runner_deployments(workspace), limit=limit)


def _warn_unless_scheduled(api_url: str) -> None:
    """Once serving has applied the deployments, check that the server's scheduler plans their runs."""
    time.sleep(SCHEDULED_RUNS_TIMEOUT / 2)  # serve applies the deployments first
    unscheduled = [name for name, when in wait_for_scheduled_runs(api_url).items() if when is None]
    if unscheduled:
        print(
            f"shrinkflow: WARNING: the Prefect server at {api_url} has created no upcoming run for "
            f"{', '.join(unscheduled)}: is its scheduler failing? Scheduled runs will not happen; see the server's log.",
            file=sys.stderr, flush=True,
        )


# ---------------------------------------------------------------------------------------------------------------------
# The runner child of `shrinkflow up`, and stopping it from `shrinkflow down`


def runner_file(workspace: Workspace) -> Path:
    return stack_dir(workspace) / "runner.json"


def runner_log(workspace: Workspace) -> Path:
    return stack_dir(workspace) / "runner.log"


def runner_env(stack: RunningStack) -> dict[str, str]:
    """The environment of `shrinkflow serve` under `up`: the stack's Prefect API and MLflow server.

    Set before the child starts, so Prefect reads them when it loads its settings; every run the runner
    starts inherits them, so runs are tracked in the stack's MLflow server and write to its workspace.
    """
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_KEY", "PREFECT_PROFILE")}
    env.update(
        PREFECT_API_URL=stack.prefect_api_url,
        MLFLOW_TRACKING_URI=stack.mlflow_url,
        PYTHONUNBUFFERED="1",
        **{WORKSPACE_ENV: str(stack.workspace.root)},
    )
    env.pop("MLFLOW_REGISTRY_URI", None)  # the registry is the tracking server's
    return env


def start_runner(stack: RunningStack, limit: int = DEFAULT_RUN_LIMIT) -> Spawned:
    """Start `shrinkflow serve` against `stack`, recorded in runner.json; its output goes to runner.log.

    In a session of its own: Ctrl-C in the terminal reaches `up` only, which then stops the runner (and the runs
    it started) before the servers, so the runner can still pause its schedules on the server.
    """
    workspace = stack.workspace
    argv = [sys.executable, "-m", "shrinkflow.cli.main", "serve", "--workspace", str(workspace.root), "--limit", str(limit)]
    runner = Spawned.start(RUNNER, argv, runner_log(workspace), runner_env(stack), cwd=REPO, header="shrinkflow up")
    write_json_atomically(runner_file(workspace), runner.to_json())
    return runner


def wait_for_deployments(
    stack: RunningStack, runner: Spawned, since: datetime, timeout: float = RUNNER_STARTUP_TIMEOUT
) -> None:
    """Wait until the runner serves every deployment: each applied and polled by it after `since`.

    Existence alone does not tell: the deployments of an earlier `up` (or of `prefect deploy`) are already
    in the server's database, so a deployment counts once its `last_polled` is later than `since`, the
    moment just before the runner was started.

    Raises:
        ProcessError: the runner exited, or did not serve every deployment within `timeout` seconds; the
            message ends with the tail of runner.log.
    """
    pending = [spec.full_name for spec in DEPLOYMENTS]

    def unserved() -> str | None:
        pending[:] = [name for name in pending if not _polled_since(stack, name, since)]
        return f"serve {', '.join(pending)}" if pending else None

    wait_until_ready({runner: unserved}, timeout)


def _polled_since(stack: RunningStack, deployment: str, since: datetime) -> bool:
    """Whether `deployment` exists and a runner or worker asked for its runs after `since`."""
    polled = (_api(f"{stack.prefect_api_url}/deployments/name/{deployment}") or {}).get("last_polled")
    return polled is not None and datetime.fromisoformat(polled) > since


def stop_runner(runner: Spawned, timeout: float = RUNNER_STOP_TIMEOUT) -> bool:
    """SIGTERM the runner and its runs (it pauses its schedules and exits), SIGKILL what is left.

    Returns whether it was still running. Forgets runner.json if it describes this runner.
    """
    was_running = runner.stop(timeout)
    forget(runner_file(runner_workspace(runner)), runner.to_json())
    return was_running


def recorded_runner(workspace: Workspace) -> Spawned | None:
    """The runner recorded in runner.json (left by an `up` that did not stop it), if any."""
    path = runner_file(workspace)
    try:
        return Spawned.from_json(RUNNER, json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is unreadable ({exc!r}); stop the runner it described yourself, then delete it"
        ) from exc


def runner_workspace(runner: Spawned) -> Workspace:
    return Workspace(runner.log.parent.parent)  # <workspace>/stack/runner.log


def wait_for_scheduled_runs(api_url: str, timeout: float = SCHEDULED_RUNS_TIMEOUT) -> dict[str, datetime | None]:
    """The next scheduled run of each deployment, once the server's scheduler has created them all.

    The scheduler looks at new and changed deployments every few seconds; a deployment still without a
    scheduled run after `timeout` seconds maps to None (its scheduler is failing, or its schedule is paused).
    """
    deadline = time.monotonic() + timeout
    while True:
        upcoming = {spec.full_name: next_scheduled_run(api_url, spec.full_name) for spec in DEPLOYMENTS}
        if all(upcoming.values()) or time.monotonic() > deadline:
            return upcoming
        time.sleep(1)


def next_scheduled_run(api_url: str, deployment: str) -> datetime | None:
    """When the earliest scheduled flow run of `deployment` is due, if the server has one."""
    found = _api(f"{api_url}/deployments/name/{deployment}")
    if not found:
        return None
    runs = _api(
        f"{api_url}/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [found["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 1,
        },
    )
    return datetime.fromisoformat(runs[0]["expected_start_time"]) if runs else None


def _api(url: str, payload: dict[str, Any] | None = None) -> Any:
    """The JSON a GET of `url` (with `payload`, a JSON POST) answers with 200; None on any failure.

    No proxies: the servers are on loopback.
    """
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return None
