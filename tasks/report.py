"""The variant comparison on the parent run: CSV, markdown and the Pareto chart."""

from collections.abc import Sequence

from prefect import task

from shrinkflow.core.report import write_comparison
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import SummaryRow
from shrinkflow.core.workspace import Workspace
from tasks.options import SHIPPING_TASK


@task(name="report", **SHIPPING_TASK)
def report_variants(
    rows: Sequence[SummaryRow], reasons: dict[str, str], workspace: Workspace, tracking_ref: TrackingRef
) -> None:
    client = tracking_ref.client()
    out_dir = workspace.run_dir(tracking_ref.parent_run_id, "comparison")
    for path in write_comparison(rows, out_dir):
        client.log_artifact(tracking_ref.parent_run_id, str(path), "comparison")
    client.log_dict(tracking_ref.parent_run_id, reasons, "comparison/selection.json")
