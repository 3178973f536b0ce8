"""The `shrinkflow` command.

Exit codes: 0 success; 2 a user error (bad config, bad data), reported in one short message with no
traceback; 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import shrinkflow  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from shrinkflow.errors import UserError

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shrinkflow", description="Train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="Run the pipeline once on a YAML config.")
    run.add_argument("config", help="YAML config, e.g. configs/digits_cnn.yaml")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Override a config value, e.g. --set train.epochs=2 (repeatable).",
    )
    run.add_argument("--workspace", help="Output folder (default: $SHRINKFLOW_WORKSPACE or ./workspace).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
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

    rows = pipeline(config, workspace=str(workspace.root))
    print(f"\nshrinkflow: {config.name} done\n")
    print(format_table(rows))
    shipped = [row for row in rows if row.get("selected") == "yes"]
    if shipped:
        row = shipped[0]
        champion = "it is now the champion" if row["promoted"] == "yes" else "the champion alias stays (see the version's promotion_reason tag)"
        print(
            f"\nshipped {row['variant']} as version {row['version']} of {config.name!r}; {champion}.\n"
            f"export: {workspace.exports / config.name / row['version']}"
        )
    else:
        print("\nno variant passed the selection policy (config section 'select'): nothing registered or exported.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
