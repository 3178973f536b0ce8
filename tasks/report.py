"""The variant comparison on the parent run: CSV, markdown and the Pareto chart."""

from collections.abc import Sequence

from prefect import task

from shrinkflow.core.report import write_comparison
from shrinkflow.core.summary import SummaryRow
from shrinkflow.core.workspace import Workspace
from shrinkflow.tasks.options import SHIPPING_TASK
from shrinkflow.tracking import runs
from shrinkflow.tracking.runs import TrackingRef


@task(name="report", **SHIPPING_TASK)
def report_variants(
    rows: Sequence[SummaryRow], reasons: dict[str, str], workspace: Workspace, tracking_ref: TrackingRef
) -> None:
    paths = write_comparison(rows, workspace.run_dir(tracking_ref.parent_run_id, "comparison"))
    runs.log_comparison(tracking_ref, paths, reasons)
