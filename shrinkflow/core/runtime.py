"""Process-wide settings of the libraries shrinkflow drives, set explicitly by the entry points: the command
(shrinkflow.cli.main), the deployments' entry module (shrinkflow.deployments.entrypoints) and the test harness.

Importing shrinkflow changes nothing of this; only `TF_USE_LEGACY_KERAS`, which tensorflow-model-optimization
needs before TensorFlow is first imported, is set by the package itself (shrinkflow/__init__.py).
"""

from __future__ import annotations

import logging
import os
import warnings

# The environment each entry point sets, unless the user has set it already.
LIBRARY_ENVIRONMENT = {
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN): errors only.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # An MLflow server that stops answering fails a run within about a minute, not after MLflow's default seven
    # retries with exponential back-off and two-minute timeouts (over ten minutes).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow's download progress bars (registering a model downloads it once to check its input example).
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


# Prefect's logger of task runs: our tasks' own messages, retries and failures, and one "Finished in state
# Completed()" line per task run (80 of a default run's log).
TASK_RUN_LOGGER = "prefect.task_runs"


class QuietTaskCompletions(logging.Filter):
    """Drops the "Finished in state Completed()" line of every task run, in the terminal and in the Prefect UI's log
    alike (a filter on the logger, before its handlers); a task that fails, retries or is served from the cache
    still says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Finished in state Completed(")


def configure_libraries() -> None:
    """Set LIBRARY_ENVIRONMENT (where unset) and quiet Prefect's per-task completion lines. Call once, early, in an
    entry point: before TensorFlow or MLflow's client is first used."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    task_runs = logging.getLogger(TASK_RUN_LOGGER)
    if not any(isinstance(existing, QuietTaskCompletions) for existing in task_runs.filters):
        task_runs.addFilter(QuietTaskCompletions())
    # TensorFlow's Python warnings (tf.function retracing of the predict function, which evaluation calls on
    # batches of every size) and the TFLite converter's note on int8 statistics say nothing a user can act on.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    # tf2onnx reads TFLite files with TensorFlow's own interpreter, which warns that LiteRT's replaces it (ours do).
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
    # MLflow's notes on what it is doing (validating an input example, ...); its warnings and errors stay.
    logging.getLogger("mlflow").setLevel(logging.WARNING)

