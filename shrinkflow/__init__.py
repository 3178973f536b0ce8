"""shrinkflow: train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."""

import os

# tensorflow-model-optimization needs Keras 2 (tf_keras); this must be set before TensorFlow is
# imported anywhere, and every entry point imports this package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
