"""shrinkflow: train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."""

import os

# tensorflow-model-optimization needs Keras 2 (tf_keras); this must be set before TensorFlow is
# imported anywhere, and every entry point imports this package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# An MLflow server that stops answering fails a run within about a minute, not after MLflow's default
# seven retries with exponential back-off and two-minute timeouts (over ten minutes).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

__version__ = "0.1.0"
