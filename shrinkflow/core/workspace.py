"""Where a run's files go: one workspace folder, chosen by flag, environment, or default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "SHRINKFLOW_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    """Paths under the workspace root.

    datasets/  prepared, content-addressed splits
    cache/<stage key>/  a cached stage's files (model, plot), reused by later runs; cache/results/ the stages' results
    runs/<mlflow parent run id>/<variant>/  one run's plots and its lease (never shared between runs)
    exports/<name>/<version>/  deployable artifacts (TF Serving layout)
    mlflow.db, mlartifacts/  the embedded MLflow store, when no tracking server is set
    """

    root: Path

    @classmethod
    def resolve(cls, explicit: str | Path | None = None) -> Workspace:
        """`explicit` (the --workspace flag), else $SHRINKFLOW_WORKSPACE, else ./workspace."""
        chosen = explicit or os.environ.get(WORKSPACE_ENV) or "workspace"
        return cls(Path(chosen).expanduser().resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def stage_results(self) -> Path:
        """Where Prefect keeps the cached stages' results (small references to the files in stage_dir)."""
        return self.root / "cache" / "results"

    def stage_dir(self, cache_key: str) -> Path:
        return self.root / "cache" / cache_key

    def run_dir(self, parent_run_id: str, variant: str) -> Path:
        return self.runs / parent_run_id / variant

    def tracking_uri(self) -> str:
        """$MLFLOW_TRACKING_URI if set, else a SQLite store inside the workspace (no server needed)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow.db'}"
