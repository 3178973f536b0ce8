"""`shrinkflow serve`, `up`, `down` and `deployments`: the scheduled deployments and the local server stack."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from shrinkflow.cli.signals import ignore_stop_signals, signals_interrupt
from shrinkflow.core.errors import UserError

if TYPE_CHECKING:
    from shrinkflow.deployments.processes import Spawned
    from shrinkflow.deployments.stack import RunningStack, SchedulerWatch

EXIT_OK, EXIT_FAILURE = 0, 1


def serve(args: argparse.Namespace) -> int:
    from shrinkflow.deployments.serving import DEFAULT_RUN_LIMIT, serve
    from shrinkflow.core.workspace import Workspace

    serve(Workspace.resolve(args.workspace), limit=args.limit or DEFAULT_RUN_LIMIT)
    return EXIT_OK


def up(args: argparse.Namespace) -> int:
    from shrinkflow.deployments import serving as deploy
    from shrinkflow.deployments.stack import (
        DEFAULT_MLFLOW_PORT, DEFAULT_PREFECT_PORT, SchedulerWatch, StackConfig, stack_dir, start_stack,
    )
    from shrinkflow.tracking.runs import mlflow_ui_url
    from shrinkflow.core.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    config = StackConfig(
        workspace,
        prefect_port=DEFAULT_PREFECT_PORT if args.prefect_port is None else args.prefect_port,
        mlflow_port=DEFAULT_MLFLOW_PORT if args.mlflow_port is None else args.mlflow_port,
    )
    with signals_interrupt("the stack was stopped and nothing is left running"):
        leftover = deploy.recorded_runner(workspace)
        if leftover is not None and leftover.is_running():
            raise UserError(
                f"the runner of an earlier `shrinkflow up` is still running for workspace {workspace.root} "
                f"(pid {leftover.pid}); stop it with `shrinkflow down`"
            )
        print(
            f"shrinkflow: starting the Prefect server (port {config.prefect_port}) and the MLflow server "
            f"(port {config.mlflow_port}) in {workspace.root / 'stack'} ...",
            flush=True,
        )
        prefect_log = stack_dir(workspace) / "prefect.log"
        scheduler = SchedulerWatch(prefect_log, offset=prefect_log.stat().st_size if prefect_log.exists() else 0)
        stack = start_stack(config)
        try:
            runner_started = datetime.now(timezone.utc)
            runner = deploy.start_runner(stack)
            try:
                deploy.wait_for_deployments(stack, runner, since=runner_started)
                upcoming = deploy.wait_for_scheduled_runs(stack.prefect_api_url)
                names = ", ".join(spec.full_name for spec in deploy.DEPLOYMENTS)
                banner = (
                    f"\nshrinkflow: the local stack is up (workspace {workspace.root})\n"
                    f"  Prefect UI   {stack.prefect_ui_url}   deployments {names}\n"
                    f"  MLflow UI    {mlflow_ui_url(stack.mlflow_url)}\n"
                    f"  runner log   {runner.log}\n"
                    f"  next runs    {_describe_upcoming(upcoming)}\n"
                    "Scheduled and UI-triggered runs execute here, one at a time. "
                    "Press Ctrl-C to stop the runner and both servers."
                )
                unscheduled = [name for name, when in upcoming.items() if when is None]
                code = _until_stopped(stack, runner, scheduler, prefect_log, banner, unscheduled)
            finally:
                ignore_stop_signals()  # a second Ctrl-C must not leave the servers running
                print("shrinkflow: stopping the runner and the servers ...", flush=True)
                deploy.stop_runner(runner)
        finally:
            ignore_stop_signals()
            stack.stop()
    print("shrinkflow: stopped", flush=True)
    return code


def _describe_upcoming(upcoming: dict[str, datetime | None]) -> str:
    return ", ".join(
        f"{name.split('/')[-1]} {when.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC" if when else f"{name.split('/')[-1]} NONE"
        for name, when in upcoming.items()
    )


def _warn_scheduler(scheduler: SchedulerWatch, prefect_log: Path, unscheduled: Sequence[str] = ()) -> None:
    """Say it loudly when the Prefect server's scheduler fails: the UI would still show the schedules as active."""
    errors = scheduler.new_errors()
    if not errors and not unscheduled:
        return
    lines = ["", "shrinkflow: WARNING: THE PREFECT SERVER'S SCHEDULER IS FAILING: scheduled runs will not happen."]
    if unscheduled:
        lines.append(f"  no upcoming run was created for {', '.join(unscheduled)}")
    lines += [f"  {error}" for error in dict.fromkeys(errors)]
    lines.append(f"  See {prefect_log}. Runs started from the UI or the API still execute.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _until_stopped(
    stack: RunningStack, runner: Spawned, scheduler: SchedulerWatch, prefect_log: Path, banner: str,
    unscheduled: Sequence[str],
) -> int:
    """Say the stack is up, then block until Ctrl-C / SIGTERM (exit 0), or until the runner or a server dies
    (exit 1). Meanwhile, report every failure of the Prefect server's scheduler as it is logged.

    The banner is printed inside the try: a stop sent as soon as it appears is a stop on purpose too.
    """
    try:
        print(banner, flush=True)
        _warn_scheduler(scheduler, prefect_log, unscheduled)
        while True:
            _warn_scheduler(scheduler, prefect_log)
            code = runner.poll()
            if code is not None and (code == 0 or _stopped_by_down(runner)):
                # stopped on purpose, by `shrinkflow down` from another terminal (SIGKILLed if its stop outlasted
                # the grace period, on a busy machine)
                print("shrinkflow: the runner was stopped from elsewhere (`shrinkflow down`?)", flush=True)
                return EXIT_OK
            if code is not None:
                print(
                    f"shrinkflow: error: the {runner.title} exited with code {code}; {runner.log_hint()}",
                    file=sys.stderr, flush=True,
                )
                return EXIT_FAILURE
            for server in stack.servers:
                if not server.is_running():
                    print(f"shrinkflow: error: the {server.title} stopped; {server.log_hint()}", file=sys.stderr, flush=True)
                    return EXIT_FAILURE
            time.sleep(1)
    except KeyboardInterrupt:
        print("", flush=True)
        return EXIT_OK


def _stopped_by_down(runner: Spawned, wait: float = 3.0) -> bool:
    """Whether `shrinkflow down` stopped the runner: it forgets runner.json once the runner is gone (within `wait` s
    of its exit)."""
    from shrinkflow.deployments import serving as deploy

    deadline = time.monotonic() + wait
    while deploy.recorded_runner(deploy.runner_workspace(runner)) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def down(args: argparse.Namespace) -> int:
    from shrinkflow.deployments import serving as deploy
    from shrinkflow.deployments.stack import stop_stack
    from shrinkflow.core.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    runner = deploy.recorded_runner(workspace)
    stopped_runner = deploy.stop_runner(runner) if runner is not None else False
    stopped_servers = stop_stack(workspace)
    if stopped_runner or stopped_servers:
        print(f"shrinkflow: stopped the local stack of workspace {workspace.root}")
    else:
        print(f"shrinkflow: no stack is running for workspace {workspace.root}")
    return EXIT_OK


def deployments(args: argparse.Namespace) -> int:
    from shrinkflow.deployments import serving as deploy

    relative = deploy.PREFECT_FILE.relative_to(deploy.REPO)
    if args.write:
        changed = deploy.write_prefect_yaml()
        print(f"shrinkflow: {relative} {'written' if changed else 'is already up to date'}")
        return EXIT_OK
    if args.check:
        if deploy.prefect_yaml_is_current():
            print(f"shrinkflow: {relative} is up to date")
            return EXIT_OK
        print(
            f"shrinkflow: {relative} does not match the presets and schedules: run `shrinkflow deployments --write`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    from shrinkflow.core.tables import text_table

    print(text_table(
        ["deployment", "config", "schedule", "timezone"],
        [[spec.full_name, spec.preset, spec.cron, spec.timezone] for spec in deploy.DEPLOYMENTS],
    ))
    return EXIT_OK
