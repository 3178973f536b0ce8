"""`shrinkflow sweep`: search a config's `sweep:` space on Dask, then ship the best trial's config."""

from __future__ import annotations

import argparse
import os

from shrinkflow.cli.run import orchestrated

EXIT_OK = 0


def sweep(args: argparse.Namespace) -> int:
    from shrinkflow.cli.run import show_progress
    from shrinkflow.core import sweep as sweeps
    from shrinkflow.core.config import PipelineConfig
    from shrinkflow.core.environment import check_dask_address, check_worker_count
    from shrinkflow.core.workspace import Workspace
    from shrinkflow.tasks.sweep import WORKER_WAIT, check_dask_workers

    worker_wait = args.worker_wait or WORKER_WAIT
    # --trials and --timeout are the sweep section's own settings, given on the command line.
    args.overrides = [*args.overrides, *(
        f"sweep.{key}={value}" for key, value in (("trials", args.trials), ("timeout_minutes", time_budget(args.timeout)))
        if value is not None
    )]

    def check_search(config: PipelineConfig, workspace: Workspace) -> None:
        # The whole search space is checked before anything starts: every key, choice and end of a range; then
        # the study's database, that no other sweep holds the study, and the workers.
        sweeps.check_sweep(config.model_dump(mode="json"), config, source=args.config)
        if args.dask_address:
            check_dask_address(args.dask_address)
        elif args.workers:
            check_worker_count(args.workers, "--workers")
        name = sweeps.study_name(config)
        storage = config.sweep.storage or sweeps.default_storage(workspace.root / "sweeps", name)
        sweeps.check_storage(config.sweep, storage)
        sweeps.lock_study(config.sweep, storage, name).release()  # the flow takes it for good
        if args.dask_address:
            check_dask_workers(args.dask_address, worker_wait)

    show_progress(args.verbose)
    stopped = "the sweep stopped; run it again to resume: finished trials are kept"
    with orchestrated(args, stopped, check_search) as (config, workspace, api_url):
        from shrinkflow.flows.sweep import sweep as sweep_flow

        # A local cluster's worker processes start from this environment: they reach the same Prefect server.
        os.environ["PREFECT_API_URL"] = api_url
        result = sweep_flow(
            config, workspace=str(workspace.root), workers=args.workers, dask_address=args.dask_address, worker_wait=worker_wait,
        )
    print(f"\nshrinkflow: sweep of {config.name} done (study {result.study} in {result.storage})\n")
    print(result.table)
    if result.note:
        print(f"\nnote: {result.note}")
    if result.best is not None:
        chosen = ", ".join(f"{key}={value}" for key, value in result.best.params.items()) or "the base config"
        print(
            f"\nchosen: trial {result.best.number} ({chosen}): {result.best.variant}, validation {result.best.metric} "
            f"{result.best.quality:.4f} (test {result.best.test_quality or 0:.4f}), "
            f"{result.best.gzip_size_bytes:,} bytes gzipped (floor {result.floor:.4f})\n{result.shipped}"
        )
    else:
        print(f"\nno trial kept the quality floor ({result.floor}): nothing shipped.")
    return EXIT_OK


def time_budget(text: str | None) -> float | None:
    """--timeout MINUTES as a number the sweep section takes (None when not given).

    Raises:
        ConfigError: in one line, naming the option and what it takes.
    """
    from pydantic import ValidationError

    from shrinkflow.core.config import SweepConfig
    from shrinkflow.core.errors import ConfigError

    if text is None:
        return None
    try:
        return SweepConfig(timeout_minutes=text).timeout_minutes  # validated as the config's field
    except ValidationError:
        raise ConfigError(f"--timeout {text}: expected the time budget in minutes, a number above 0 (e.g. --timeout 30)") from None
