"""Serving a registered version with MLflow's scoring server (`POST /invocations`, `GET /ping`, `/health`,
`/version`), run by uvicorn in this process: `mlflow models serve` would start `uvicorn` from PATH, which is not
there unless the venv is activated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from shrinkflow.tracking.store import fluent_mlflow

REQUEST_EXAMPLE = "serving_input_example.json"


def download_version(tracking_uri: str, version: ModelVersion, folder: Path) -> Path:
    """The version's logged model, copied into `folder`."""
    import mlflow

    with fluent_mlflow(tracking_uri):
        return Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(folder)))


def scoring_server(model_dir: Path, host: str, port: int) -> Any:
    """A uvicorn server of MLflow's scoring app for the model in `model_dir` (not started)."""
    import mlflow.pyfunc
    import uvicorn
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(mlflow.pyfunc.load_model(str(model_dir)))
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, workers=1, log_level="info"))


def serve(model_dir: Path, host: str, port: int) -> None:
    """Serve the model in `model_dir` until the process gets SIGINT or SIGTERM (uvicorn then finishes the
    requests under way and raises the signal again)."""
    scoring_server(model_dir, host, port).run()
