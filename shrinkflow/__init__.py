"""shrinkflow: train, compress and ship TensorFlow models as a Prefect flow tracked in MLflow."""

import os

# tensorflow-model-optimization works only with Keras 2 (tf_keras): TensorFlow reads this when it is first
# imported, which may be by any module of the package. The one setting the package makes on import; the entry
# points set the rest explicitly (shrinkflow.core.runtime).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
