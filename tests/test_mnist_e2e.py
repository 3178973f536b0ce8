"""End to end on real data: the CNN preset on the real MNIST test set, through the real flow."""

import pytest

from shrinkflow.core.config import load_config
from tests.conftest import MNIST_T10K, REPO

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason="the shared MNIST test set is not beside the repository")
def test_mnist_cnn_preset_reaches_98_percent(prefect_harness, workspace) -> None:
    from shrinkflow.flows.pipeline import pipeline

    # The baseline alone: the compression stages on MNIST are measured by `make bench-compression`.
    config = load_config(
        REPO / "configs" / "mnist_cnn.yaml",
        [f"data.source=idx:{MNIST_T10K}", "prune.enabled=false", "quantize.modes=[]", "distill.students=[]",
         "cluster.enabled=false", "onnx.enabled=false"],
    )
    [baseline] = pipeline(config, workspace=str(workspace))
    assert baseline.variant == "baseline" and baseline.selected
    assert baseline.accuracy >= 0.98
