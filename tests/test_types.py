"""The DAG's stage calls are checked by the type checker: each stage task takes its own step object, so passing
the wrong one (or a config section, as before the steps existed) fails mypy, which `make test` runs."""

from __future__ import annotations

import pytest

from tests.typecheck import MIRROR, build_mirror, run_mypy

CALL = """
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.names import Quantization
from shrinkflow.core.steps import PruneStep, QuantizeStep
from shrinkflow.core.variants import Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.tasks.stages import prune


def build(step: {step}, source: Variant, dataset: DatasetRef, ws: Workspace) -> Variant:
    return prune(step, source, dataset, ws)
"""


@pytest.mark.parametrize(("step", "passes"), [("PruneStep", True), ("QuantizeStep", False)])
def test_a_stage_call_with_the_wrong_step_fails_the_type_check(step: str, passes: bool) -> None:
    build_mirror()
    snippet = MIRROR / "stage_call.py"
    snippet.write_text(CALL.format(step=step))
    report, status = run_mypy(MIRROR, snippet.name)
    if passes:
        assert status == 0, report
    else:
        assert status == 1 and 'matches argument types "QuantizeStep"' in report and "step: PruneStep" in report, report
