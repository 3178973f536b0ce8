"""End to end on real data: the CNN preset on the real MNIST test set, through the real flow."""

import pytest

from shrinkflow.config import load_config
from tests.conftest import MNIST_T10K, REPO

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason="the shared MNIST test set is not beside the repository")
def test_mnist_cnn_preset_reaches_98_percent(prefect_harness, workspace) -> None:
    from flows.pipeline import pipeline

    config = load_config(REPO / "configs" / "mnist_cnn.yaml", [f"data.source=idx:{MNIST_T10K}"])
    rows = {row["variant"]: row for row in pipeline(config, workspace=str(workspace))}
    assert rows["baseline"]["accuracy"] >= 0.98
    [shipped] = [row for row in rows.values() if row.get("selected") == "yes"]
    assert shipped["accuracy"] >= rows["baseline"]["accuracy"] - config.select.max_accuracy_drop
