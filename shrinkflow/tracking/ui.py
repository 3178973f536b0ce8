"""Addresses of the MLflow UI's pages, and the experiment's saved view of its runs table.

The UI is a single-page app: its pages are hash routes (`<server>/#/experiments/<id>/runs/<run id>`), and a
relative `#/...` link in a description (markdown) opens the page on the same server.
"""

from __future__ import annotations

import json
import time

from mlflow import MlflowClient

from shrinkflow.core.summary import DECISIVE_COLUMNS

MLFLOW_UI_WORKFLOW = "workflowType=machine_learning"
# The experiment's saved view of its runs table (the UI's "Views" menu lists the experiment tags named
# mlflow.sharedViewState.<key>; a link with ?viewStateShareKey=<key> opens it): MLflow shows no metric column until
# one is picked, and has no default columns of its own.
RUNS_VIEW_KEY = "shrinkflow-decisive"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
# What every run of the table says about its selection: a variant's outcome, or what its pipeline run shipped.
OUTCOME_TAG = "outcome"
# Column widths in pixels. The run names' column fits the longest variant name, indented as a child run
# (student-1-pruned-clustered-qat-onnx); the creation time's fits "12 minutes ago"; another column fits its header
# (6.5 px a character) or its values, whichever is wider.
RUN_NAME_COLUMN, RUN_NAME_WIDTH = "attributes.`Run Name`", 300
CREATED_COLUMN, CREATED_WIDTH = "runDateAndNestInfo", 130
HEADER_CHARACTER_WIDTH, HEADER_PADDING, NARROWEST_COLUMN = 6.5, 12, 78
OUTCOME_WIDTH = 110


def mlflow_ui_url(server: str, page: str = "experiments") -> str:
    """A page of the MLflow UI in its model-training view. MLflow 3.17's UI opens in its GenAI view unless the
    address says otherwise (a browser remembers the choice only once the user has switched it by hand)."""
    return f"{server.rstrip('/')}/#/{in_training_view(page)}"


def in_training_view(page: str) -> str:
    """A page of the MLflow UI (its hash route), asking for the model-training view."""
    return f"{page}{'&' if '?' in page else '?'}{MLFLOW_UI_WORKFLOW}"


def run_page(experiment_id: str, run_id: str) -> str:
    return f"experiments/{experiment_id}/runs/{run_id}"


def runs_table_page(experiment_id: str) -> str:
    """The experiment's runs table opened in shrinkflow's saved view: the decisive columns first."""
    return f"experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}"


def runs_view_columns(quality: str) -> list[str]:
    """The runs table's columns in the saved view: each run's outcome, then those of the summary's decisive columns
    (shrinkflow.core.summary.DECISIVE_COLUMNS) that a variant's run holds as metrics: the test quality (`quality`,
    select.quality; RMSE and R2 both for a regression), the difference from the baseline on the validation rows
    (what the selection decided on), the gzipped size, how many times smaller than the baseline, the latency, and
    last the quality's 95 % interval: at 1,400 px the table shows about a thousand pixels of columns beside the run
    names, and the interval is what a decision needs least."""
    regression = quality != "accuracy"
    as_metrics = {
        "accuracy": [] if regression else ["accuracy"],
        "rmse": ["rmse"] if regression else [],
        "r2": ["r2"] if regression else [],
        "quality_delta": ["val_quality_delta"],
        "gzip_size_bytes": ["gzip_size_bytes"],
        "compression_ratio": ["compression_ratio"],
        "latency_ms": ["latency_ms"],
        "ci": [f"{quality}_ci_low", f"{quality}_ci_high"],
    }
    in_order = sorted(DECISIVE_COLUMNS, key=lambda column: column == "ci")
    metrics = [name for column in in_order for name in as_metrics.get(column, [])]
    return [f"tags.`{OUTCOME_TAG}`", *(f"metrics.`{name}`" for name in metrics)]


def column_width(column: str) -> int:
    """A column's width in the saved view (see RUN_NAME_WIDTH)."""
    if column == f"tags.`{OUTCOME_TAG}`":
        return OUTCOME_WIDTH
    header = column.partition("`")[2].rstrip("`")
    return max(NARROWEST_COLUMN, round(HEADER_PADDING + HEADER_CHARACTER_WIDTH * len(header)))


def set_runs_view(client: MlflowClient, experiment_id: str, quality: str) -> None:
    """The experiment's saved runs-table view (RUNS_VIEW_TAG): the decisive columns, each wide enough to read, the run
    names whole; written when missing or different (a config that changed its quality metric). Which parent runs
    are expanded is each browser's own: the UI does not take it from a saved view."""
    columns = runs_view_columns(quality)
    state = {
        "selectedColumns": columns,
        # The UI applies the widths only to the columns its order lists.
        "columnOrder": [RUN_NAME_COLUMN, CREATED_COLUMN, *columns],
        "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH, CREATED_COLUMN: CREATED_WIDTH} | {
            column: column_width(column) for column in columns
        },
    }
    experiment = client.get_experiment(experiment_id)
    current = experiment.tags.get(RUNS_VIEW_TAG)
    if current is not None and json.loads(json.loads(current)["state"]) == state:
        return
    now = int(time.time() * 1000)
    view = {"name": "shrinkflow: decisive columns", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, json.dumps(view))
