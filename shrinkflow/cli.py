"""The `shrinkflow` command.

Exit codes: 0 success; 2 a user error (bad config, bad data), reported in one short message with no
traceback; 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.errors import UserError

if TYPE_CHECKING:
    from shrinkflow.stack import RunningStack, SchedulerWatch, ServerProcess

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shrinkflow", description="Train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    workspace_help = "Output folder (default: $SHRINKFLOW_WORKSPACE or ./workspace)."

    run = commands.add_parser("run", help="Run the pipeline once on a YAML config.")
    run.add_argument("config", help="YAML config, e.g. configs/digits_cnn.yaml")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override a config value, e.g. --set train.epochs=2 (repeatable).",
    )
    run.add_argument("--workspace", help=workspace_help)
    run.add_argument(
        "--no-cache", dest="use_cache", action="store_false",
        help="Recompute every stage instead of reusing what an earlier run with the same inputs produced.",
    )

    serve = commands.add_parser(
        "serve",
        help="Serve the scheduled deployments (one per preset) on the configured Prefect server until Ctrl-C.",
    )
    serve.add_argument("--workspace", help=workspace_help)
    serve.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N",
        help="Most flow runs at the same time (default: 1).",
    )

    up = commands.add_parser(
        "up",
        help="Start a local Prefect server and MLflow server and serve the deployments on them, until Ctrl-C.",
    )
    up.add_argument("--workspace", help=workspace_help + " The servers keep their data under <workspace>/stack/.")
    up.add_argument("--prefect-port", type=int, default=None, metavar="PORT", help="Prefect server port (default: 4200).")
    up.add_argument("--mlflow-port", type=int, default=None, metavar="PORT", help="MLflow server port (default: 5000).")

    down = commands.add_parser("down", help="Stop the local stack started by `shrinkflow up` in this workspace.")
    down.add_argument("--workspace", help=workspace_help)

    deployments = commands.add_parser(
        "deployments", help="List the deployments; regenerate or check deployments/prefect.yaml."
    )
    action = deployments.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="Regenerate deployments/prefect.yaml from the presets.")
    action.add_argument(
        "--check", action="store_true", help="Exit 1 if deployments/prefect.yaml does not match the presets."
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"run": _run, "serve": _serve, "up": _up, "down": _down, "deployments": _deployments}
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shrinkflow: interrupted", file=sys.stderr)
        return EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    from shrinkflow.config import load_config
    from shrinkflow.data import prepare_dataset
    from shrinkflow.training import check_model_fits_data
    from shrinkflow.variants import format_table
    from shrinkflow.workspace import Workspace

    config = load_config(args.config, args.overrides)
    workspace = Workspace.resolve(args.workspace)
    # Reject bad data before starting Prefect or TensorFlow: the same content-addressed preparation
    # the flow's first task does, so the flow finds it ready.
    dataset = prepare_dataset(config.data, workspace.datasets)
    check_model_fits_data(config.model, dataset.input_shape)

    # The ephemeral Prefect server's telemetry heartbeat has nowhere to go offline, and on its first
    # start it races the database migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.pipeline import pipeline

    server_start = _start_temporary_prefect_server()
    # The first stage needs TensorFlow, which takes seconds to import: import it while the server starts.
    import tensorflow  # noqa: F401
    import tf_keras  # noqa: F401

    if server_start is not None:
        server_start.join()
    rows = pipeline(config, workspace=str(workspace.root), use_cache=args.use_cache)
    print(f"\nshrinkflow: {config.name} done\n")
    print(format_table(rows))
    shipped = next((row for row in rows if row.selected), None)
    if shipped is not None:
        champion = (
            "it is now the champion" if shipped.promoted
            else "the champion alias stays (see the version's promotion_reason tag)"
        )
        print(
            f"\nshipped {shipped.variant} as version {shipped.version} of {config.name!r}; {champion}.\n"
            f"export: {workspace.exports / config.name / shipped.version}"
        )
    else:
        print("\nno variant passed the selection policy (config section 'select'): nothing registered or exported.")
    return EXIT_OK


def _start_temporary_prefect_server() -> threading.Thread | None:
    """Start, in the background, the temporary Prefect server the flow would otherwise start and wait for.

    With no Prefect API configured, the flow's first call starts Prefect's temporary server and waits
    seconds for it to answer. Started here, that wait overlaps with importing TensorFlow; the flow then
    finds the same server (Prefect keeps one per process) already up. If it fails to start here, the
    flow tries again and reports why.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()

    def start() -> None:
        with contextlib.suppress(Exception):
            server.start()

    thread = threading.Thread(target=start, name="start-temporary-prefect-server", daemon=True)
    thread.start()
    return thread


def _serve(args: argparse.Namespace) -> int:
    from shrinkflow.deploy import DEFAULT_RUN_LIMIT, serve
    from shrinkflow.workspace import Workspace

    serve(Workspace.resolve(args.workspace), limit=args.limit or DEFAULT_RUN_LIMIT)
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    from shrinkflow import deploy
    from shrinkflow.stack import (
        DEFAULT_MLFLOW_PORT, DEFAULT_PREFECT_PORT, SchedulerWatch, StackConfig, stack_dir, start_stack,
    )
    from shrinkflow.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    config = StackConfig(
        workspace,
        prefect_port=DEFAULT_PREFECT_PORT if args.prefect_port is None else args.prefect_port,
        mlflow_port=DEFAULT_MLFLOW_PORT if args.mlflow_port is None else args.mlflow_port,
    )
    with _stop_signals_interrupt():
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
                print(
                    f"\nshrinkflow: the local stack is up (workspace {workspace.root})\n"
                    f"  Prefect UI   {stack.prefect_ui_url}   deployments {names}\n"
                    f"  MLflow UI    {stack.mlflow_url}\n"
                    f"  runner log   {runner.log}\n"
                    f"  next runs    {_describe_upcoming(upcoming)}\n"
                    "Scheduled and UI-triggered runs execute here, one at a time. "
                    "Press Ctrl-C to stop the runner and both servers.",
                    flush=True,
                )
                unscheduled = [name for name, when in upcoming.items() if when is None]
                _warn_scheduler(scheduler, prefect_log, unscheduled)
                code = _until_stopped(stack, runner, scheduler, prefect_log)
            finally:
                _ignore_stop_signals()  # a second Ctrl-C must not leave the servers running
                print("shrinkflow: stopping the runner and the servers ...", flush=True)
                deploy.stop_runner(runner)
        finally:
            _ignore_stop_signals()
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


def _until_stopped(stack: RunningStack, runner: ServerProcess, scheduler: SchedulerWatch, prefect_log: Path) -> int:
    """Block until Ctrl-C / SIGTERM (exit 0), or until the runner or a server dies (exit 1).

    Meanwhile, report every failure of the Prefect server's scheduler as it is logged.
    """
    from shrinkflow.stack import TITLES, log_tail

    try:
        while True:
            _warn_scheduler(scheduler, prefect_log)
            code = runner.popen.poll() if runner.popen is not None else None
            if code == 0:  # it was stopped on purpose, by `shrinkflow down` from another terminal
                print("shrinkflow: the runner was stopped from elsewhere (`shrinkflow down`?)", flush=True)
                return EXIT_OK
            if code is not None:
                print(
                    f"shrinkflow: error: the runner exited with code {code}; its log is {runner.log}, ending:\n"
                    f"{log_tail(runner.log)}",
                    file=sys.stderr, flush=True,
                )
                return EXIT_FAILURE
            for server in stack.servers:
                if not server.is_running():
                    print(
                        f"shrinkflow: error: the {TITLES[server.name]} stopped; its log is {server.log}, ending:\n"
                        f"{log_tail(server.log)}",
                        file=sys.stderr, flush=True,
                    )
                    return EXIT_FAILURE
            time.sleep(1)
    except KeyboardInterrupt:
        print("", flush=True)
        return EXIT_OK


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (terminal closed) stop `up` like Ctrl-C does: through its clean-up, never around it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _down(args: argparse.Namespace) -> int:
    from shrinkflow import deploy
    from shrinkflow.stack import stop_stack
    from shrinkflow.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    runner = deploy.recorded_runner(workspace)
    stopped_runner = deploy.stop_runner(runner) if runner is not None else False
    stopped_servers = stop_stack(workspace)
    if stopped_runner or stopped_servers:
        print(f"shrinkflow: stopped the local stack of workspace {workspace.root}")
    else:
        print(f"shrinkflow: no stack is running for workspace {workspace.root}")
    return EXIT_OK


def _deployments(args: argparse.Namespace) -> int:
    from shrinkflow import deploy

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
    print(f"{'deployment':<24}{'config':<28}{'schedule':<14}timezone")
    for spec in deploy.DEPLOYMENTS:
        print(f"{spec.full_name:<24}{spec.preset:<28}{spec.cron:<14}{spec.timezone}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
