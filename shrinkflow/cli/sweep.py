"""`shrinkflow sweep`: search a config's `sweep:` space on Dask, then ship the best trial's config."""

from __future__ import annotations

import argparse
import os

from shrinkflow.cli.run import orchestrated

EXIT_OK = 0


def sweep(args: argparse.Namespace) -> int:
    from shrinkflow.cli.run import show_progress
    from shrinkflow.core.config import PipelineConfig
    from shrinkflow.core.environment import check_dask_address
    from shrinkflow.core.sweep import check_sweep

    def check_search(config: PipelineConfig) -> None:
        # The whole search space is checked before anything starts: every key, choice and end of a range.
        check_sweep(config.model_dump(mode="json"), config, source=args.config)
        if args.dask_address:
            check_dask_address(args.dask_address)

    show_progress(args.verbose)
    stopped = "the sweep stopped; run it again to resume: finished trials are kept"
    with orchestrated(args, stopped, check_search) as (config, workspace, api_url):
        from shrinkflow.flows.sweep import sweep as sweep_flow

        # A local cluster's worker processes start from this environment: they reach the same Prefect server.
        os.environ["PREFECT_API_URL"] = api_url
        result = sweep_flow(
            config, workspace=str(workspace.root), trials=args.trials, workers=args.workers, dask_address=args.dask_address
        )
    print(f"\nshrinkflow: sweep of {config.name} done (study {result.study} in {result.storage})\n")
    print(result.table)
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
