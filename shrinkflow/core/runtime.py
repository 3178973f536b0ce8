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
# Prefect's loggers that log a failed flow or task run with its traceback.
PREFECT_RUN_LOGGERS = (TASK_RUN_LOGGER, "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine", "prefect.engine")


class OneLineErrors(logging.Filter):
    """Drop the traceback from a log record of an error that is reported in one line (a user error, a lost
    environment: shrinkflow.core.environment.reported_in_one_line). The record itself stays, in the terminal and
    in the Prefect UI, as the one line that says why the run failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        from shrinkflow.core.environment import reported_in_one_line

        if record.exc_info and record.exc_info[1] is not None and reported_in_one_line(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


class QuietTaskCompletions(logging.Filter):
    """Drops the "Finished in state Completed()" line of every task run, in the terminal and in the Prefect UI's log
    alike (a filter on the logger, before its handlers); a task that fails, retries or is served from the cache
    still says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Finished in state Completed(")


def configure_libraries() -> None:
    """Set LIBRARY_ENVIRONMENT (where unset), quiet Prefect's per-task completion lines, and keep Prefect from
    printing a traceback for an error that is reported in one line (filters on the loggers, before their
    handlers: they survive Prefect's logging set-up, which replaces the handlers). Call once, early, in an entry
    point: before TensorFlow or MLflow's client is first used."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    task_runs = logging.getLogger(TASK_RUN_LOGGER)
    if not any(isinstance(existing, QuietTaskCompletions) for existing in task_runs.filters):
        task_runs.addFilter(QuietTaskCompletions())
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, OneLineErrors) for existing in logger.filters):
            logger.addFilter(OneLineErrors())
    # TensorFlow's Python warnings (tf.function retracing of the predict function, which evaluation calls on
    # batches of every size) and the TFLite converter's note on int8 statistics say nothing a user can act on.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    # tf2onnx reads TFLite files with TensorFlow's own interpreter, which warns that LiteRT's replaces it (ours do).
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
    # MLflow's notes on what it is doing (validating an input example, ...); its warnings and errors stay.
    logging.getLogger("mlflow").setLevel(logging.WARNING)

