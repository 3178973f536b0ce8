"""`shrinkflow sweep`: search a config's `sweep:` space on Dask, then ship the best trial's config."""

from __future__ import annotations

import argparse
import os

from cli.run import _configured_prefect_api, _prefect_api, _start_temporary_server, _stopped_if_lost
from cli.signals import signals_interrupt

EXIT_OK = 0


def sweep(args: argparse.Namespace) -> int:
    from shrinkflow.core.config import load_config
    from shrinkflow.core.data import prepare_dataset
    from shrinkflow.core.environment import check_dask_address, check_prefect_api, check_tracking_uri, check_workspace
    from shrinkflow.core.sweep import check_sweep
    from shrinkflow.core.training import check_model_fits_data
    from shrinkflow.core.workspace import Workspace

    config = load_config(args.config, args.overrides)
    # The whole search space is checked before anything starts: every key, choice and end of a range.
    check_sweep(config.model_dump(mode="json"), config, source=args.config)
    workspace = Workspace.resolve(args.workspace)
    check_workspace(workspace, args.workspace)
    check_tracking_uri(workspace.tracking_uri())
    if args.dask_address:
        check_dask_address(args.dask_address)
    api_url = _configured_prefect_api()
    check_prefect_api(api_url)
    with signals_interrupt("the sweep stopped; run it again to resume: finished trials are kept"):
        server = None if api_url else _start_temporary_server(workspace)
        dataset = prepare_dataset(config.data, workspace.datasets)
        check_model_fits_data(config.model, dataset.input_shape)
        from flows.sweep import dask_task_runner
        from flows.sweep import sweep as sweep_flow

        if server is not None:
            server.wait_until_ready()
        watched = server.api_url if server is not None else str(api_url)
        # A local cluster's worker processes start from this environment: they reach the same Prefect server.
        os.environ["PREFECT_API_URL"] = watched
        runner = dask_task_runner(args.workers, args.dask_address)
        with _prefect_api(watched, temporary=server is not None), _stopped_if_lost(watched, server):
            result = sweep_flow.with_options(task_runner=runner)(  # type: ignore[arg-type]
                config, workspace=str(workspace.root), trials=args.trials
            )
    print(f"\nshrinkflow: sweep of {config.name} done (study {result.study} in {result.storage})\n")
    print(result.table)
    if result.best is not None:
        chosen = ", ".join(f"{key}={value}" for key, value in result.best.params.items()) or "the base config"
        print(
            f"\nchosen: trial {result.best.number} ({chosen}): {result.best.variant}, {result.best.metric} {result.best.quality:.4f}, "
            f"{result.best.gzip_size_bytes:,} bytes gzipped (floor {result.floor:.4f})\n{result.shipped}"
        )
    else:
        print(f"\nno trial kept the quality floor ({result.floor}): nothing shipped.")
    return EXIT_OK
