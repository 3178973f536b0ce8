"""`shrinkflow serve-model NAME[@alias|/version]`: a registered version behind MLflow's scoring server, on
127.0.0.1 unless told otherwise, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from shrinkflow.core.errors import UserError

EXIT_OK = 0
DEFAULT_PORT = 5001  # MLflow's own default, 5000, is the tracking server's in `shrinkflow up`


def serve_model(args: argparse.Namespace) -> int:
    from shrinkflow.cli.models import tracking_store
    from shrinkflow.deployments.processes import port_problem
    from shrinkflow.tracking import registry, scoring, versions

    uri = tracking_store(args.workspace)
    problem = port_problem(args.host, args.port)
    if problem:
        raise UserError(f"--port {args.port}: {args.host}:{args.port} is {problem}; choose another port with --port")
    with tempfile.TemporaryDirectory(prefix="shrinkflow-serve-") as scratch:
        with versions.store_errors(uri):
            version = registry.resolve_version(uri, args.model)
            model_dir = scoring.download_version(uri, version, Path(scratch))
        url = f"http://{args.host}:{args.port}"
        print(
            f"shrinkflow: serving version {version.version} of {version.name!r} ({version.tags.get('variant', 'variant unknown')}) "
            f"at {url}/invocations; Ctrl-C stops it\n"
            f"  a request to try: curl -s {url}/invocations -H 'Content-Type: application/json' "
            f"-d @{model_dir / scoring.REQUEST_EXAMPLE}",
            flush=True,
        )
        scoring.serve(model_dir, args.host, args.port)
    return EXIT_OK
