"""Process-wide settings of the libraries shrinkflow drives, set explicitly by the entry points: the command
(shrinkflow.cli.main), the deployments' entry module (shrinkflow.deployments.entrypoints) and the test harness.

Importing shrinkflow changes nothing of this; only `TF_USE_LEGACY_KERAS`, which tensorflow-model-optimization
needs before TensorFlow is first imported, is set by the package itself (shrinkflow/__init__.py).
"""

from __future__ import annotations

import os

# The environment each entry point sets, unless the user has set it already.
LIBRARY_ENVIRONMENT = {
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN): errors only.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # An MLflow server that stops answering fails a run within about a minute, not after MLflow's default seven
    # retries with exponential back-off and two-minute timeouts (over ten minutes).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def configure_libraries() -> None:
    """Set LIBRARY_ENVIRONMENT (where unset). Call once, early, in an entry point: before TensorFlow or MLflow's
    client is first used."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)

