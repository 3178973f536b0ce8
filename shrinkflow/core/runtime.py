"""Process-wide settings of the libraries shrinkflow drives, set explicitly by the entry points: the command
(shrinkflow.cli.main), the deployments' entry module (shrinkflow.deployments.entrypoints) and the test harness.

Importing shrinkflow changes nothing of this; only `TF_USE_LEGACY_KERAS`, which tensorflow-model-optimization
needs before TensorFlow is first imported, is set by the package itself (shrinkflow/__init__.py).
"""

from __future__ import annotations

import logging
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


# Prefect's loggers that log a failed flow or task run with its traceback.
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine", "prefect.engine")


def configure_libraries() -> None:
    """Set LIBRARY_ENVIRONMENT (where unset), and keep Prefect from printing a traceback for an error that is
    reported in one line. Call once, early, in an entry point: before TensorFlow or MLflow's client is first
    used."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, OneLineErrors) for existing in logger.filters):
            logger.addFilter(OneLineErrors())


class OneLineErrors(logging.Filter):
    """Drop the traceback from a log record of an error that is reported in one line (a user error, a lost
    environment: shrinkflow.core.environment.reported_in_one_line). The record itself stays, in the terminal and
    in the Prefect UI, as the one line that says why the run failed. A filter on the logger (not a handler), so
    it survives Prefect's logging set-up, which replaces the handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        from shrinkflow.core.environment import reported_in_one_line

        if record.exc_info and record.exc_info[1] is not None and reported_in_one_line(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True

