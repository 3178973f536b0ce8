"""The `shrinkflow` command.

Exit codes: 0 success; 2 a user error (bad config, data or environment), reported in one short message with
no traceback; 128 + the signal's number when stopped by one (130 Ctrl-C, 143 SIGTERM); 1 anything else.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from collections.abc import Sequence

from shrinkflow.cli import models, run, serve_model, stack, sweep
from shrinkflow.cli.signals import Interrupted, ServerLost
from shrinkflow.core.environment import EnvironmentLost, disk_full
from shrinkflow.core.errors import UserError
from shrinkflow.core.runtime import configure_libraries
from shrinkflow.core.workspace import Workspace

EXIT_FAILURE, EXIT_USER_ERROR = 1, 2


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
    run.add_argument("-v", "--verbose", action="store_true", help="Show Prefect's full log in the terminal, not one line per variant.")
    run.add_argument(
        "--no-cache", dest="use_cache", action="store_false",
        help="Recompute every stage instead of reusing what an earlier run with the same inputs produced.",
    )

    search = commands.add_parser(
        "sweep", help="Search the config's sweep: space on Dask for the smallest model that keeps the quality (accuracy, RMSE or R2); ship it.",
    )
    search.add_argument("config", help="YAML config with a sweep: section, e.g. configs/digits_sweep.yaml")
    search.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override a config value, e.g. --set sweep.sampler=random (repeatable).",
    )
    search.add_argument("--trials", type=_positive_int, default=None, metavar="N",
                        help="Trials to reach, counting those an interrupted sweep finished (default: sweep.trials).")
    search.add_argument("--timeout", default=None, metavar="MINUTES",
                        help="Time budget: ask for no new trial after this many minutes; the running ones finish, then "
                             "the best trial so far ships (default: sweep.timeout_minutes, else none).")
    where = search.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="Worker processes of the local Dask cluster, one trial each (default: one per core).")
    where.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT",
                       help="Run the trials on an existing Dask cluster (its scheduler's address).")
    search.add_argument("--worker-wait", type=_positive_float, default=None, metavar="SECONDS",
                        help="How long to wait for a Dask worker, at the start and whenever the cluster has none left "
                             "(default: 60); then the sweep stops, to be resumed.")
    search.add_argument("--workspace", help=workspace_help + " Shared by every Dask worker.")
    search.add_argument("-v", "--verbose", action="store_true", help="Show Prefect's full log in the terminal, not one line per trial.")

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

    model = commands.add_parser(
        "serve-model",
        help="Serve a registered model version with MLflow's scoring server (POST /invocations), until Ctrl-C.",
    )
    model.add_argument(
        "model", metavar="NAME[@alias|/version]",
        help="The registered model and which version: NAME@champion (NAME alone), NAME@ALIAS or NAME/VERSION.",
    )
    model.add_argument("--port", type=_port, default=serve_model.DEFAULT_PORT, help=f"Port (default: {serve_model.DEFAULT_PORT}).")
    model.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1, this machine only).")
    model.add_argument("--workspace", help=workspace_help + " Its MLflow store holds the model unless MLFLOW_TRACKING_URI is set.")

    add_version_commands(commands, workspace_help)

    deployments = commands.add_parser(
        "deployments", help="List the deployments; regenerate or check deployments/prefect.yaml."
    )
    action = deployments.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="Regenerate deployments/prefect.yaml from the presets.")
    action.add_argument(
        "--check", action="store_true", help="Exit 1 if deployments/prefect.yaml does not match the presets."
    )
    return parser


def add_version_commands(commands: argparse._SubParsersAction, workspace_help: str) -> None:
    """`models`, `promote` and `rollback` (shrinkflow.cli.models): NAME, and the store that holds it."""

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help)
        parser.add_argument("name", metavar="NAME", help="The registered model: the config's name, e.g. digits_cnn.")
        store = parser.add_mutually_exclusive_group()
        store.add_argument("--workspace", help=workspace_help + " Its MLflow store holds the model unless MLFLOW_TRACKING_URI is set.")
        store.add_argument("--tracking-uri", metavar="URI", help="The MLflow store (server or database) that holds the model.")
        return parser

    listing = command("models", "A registered model's versions, its champion and the champion's history.")
    listing.add_argument("--all", action="store_true", help=f"Every version and every recorded move, not the newest {models.SHOWN}.")
    promote = command(
        "promote", "Make a version the champion: the alias `champion` moves, without the gate (your decision, recorded with its reason).",
    )
    promote.add_argument("version", type=_positive_int, metavar="VERSION", help="The version to make the champion.")
    promote.add_argument("--reason", required=True, help="Why, recorded in the champion history.")
    rollback = command("rollback", "Move the alias `champion` back to the champion before the current one.")
    rollback.add_argument("--reason", default="rollback", help="Why, recorded in the champion history (default: rollback).")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0, got {text}")
    return value


def _port(text: str) -> int:
    port = _positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    configure_libraries()
    args = build_parser().parse_args(argv)
    commands = {
        "run": run.run, "sweep": sweep.sweep, "serve": stack.serve, "up": stack.up, "down": stack.down, "deployments": stack.deployments,
        "serve-model": serve_model.serve_model, **models.COMMANDS,
    }
    if args.command in ("run", "sweep"):
        _exit_without_teardown()
    try:
        _exit_status[0] = commands[args.command](args)
        return _exit_status[0]
    except UserError as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr)
        _exit_status[0] = EXIT_USER_ERROR
        return EXIT_USER_ERROR
    except EnvironmentLost as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr)
        _exit_status[0] = EXIT_FAILURE
        return EXIT_FAILURE
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        where = Workspace.resolve(getattr(args, "workspace", None)).root
        print(
            f"shrinkflow: error: {full}; free some space on the disk holding {where} (or wherever the message says), or "
            "choose another workspace with --workspace DIR, and run the command again", file=sys.stderr,
        )
        _exit_status[0] = EXIT_FAILURE
        return EXIT_FAILURE
    except ServerLost as exc:
        print(f"shrinkflow: error: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Prefect would spend minutes trying to send its last events to the server that is gone.
        os._exit(EXIT_FAILURE)
    except Interrupted as exc:
        print(f"shrinkflow: {exc}", file=sys.stderr)
        _exit_status[0] = 128 + exc.signum
        return _exit_status[0]
    except KeyboardInterrupt:
        print("shrinkflow: interrupted", file=sys.stderr)
        _exit_status[0] = 128 + signal.SIGINT
        return _exit_status[0]


# What the process exits with when it skips the interpreter's teardown: main's return value, else failure.
_exit_status = [EXIT_FAILURE]


def _exit_without_teardown() -> None:
    """Registered first, so it runs last at exit: after Prefect has sent its last logs and events (its services
    drain before the atexit handlers) and the temporary server has stopped, end the process at once. The
    interpreter's own teardown (TensorFlow's, mostly) takes two to three seconds and has nothing left to save."""

    def exit_now() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])

    atexit.register(exit_now)



if __name__ == "__main__":
    sys.exit(main())
