"""A sweep: Optuna searches the config space for the smallest model that keeps the quality (accuracy; RMSE or R2
for regression: select.quality).

Plain logic, no Prefect and no MLflow: the search space checked against the config (spec), the Optuna study
(study), what a trial hands back (outcome), and what the sweep found (results).
"""

from shrinkflow.core.sweep.outcome import TrialOutcome, shipped_outcome
from shrinkflow.core.sweep.results import (
    ARTIFACT_COLUMNS, TABLE_COLUMNS, best_trial, format_trials, keeps_quality, pareto_plot, pareto_trials, quality_floor_for,
    table_rows, trials_markdown,
)
from shrinkflow.core.sweep.spec import candidate_values, check_sweep, key_problem, trial_config, value_text
from shrinkflow.core.sweep.study import (
    BASE_ATTR, INTERRUPTED_ATTR, OUTCOME_ATTR, SHORTFALL_ATTR, check_storage, default_storage, finished_outcomes,
    grid_space, lock_study, objective_values, open_study, quality_shortfall, recover_interrupted, sample,
    storage_setting, study_name, tell, trials_done,
)

__all__ = [
    "ARTIFACT_COLUMNS", "BASE_ATTR", "INTERRUPTED_ATTR", "OUTCOME_ATTR", "SHORTFALL_ATTR", "TABLE_COLUMNS", "TrialOutcome", "best_trial",
    "candidate_values", "check_storage", "check_sweep", "default_storage", "lock_study", "storage_setting", "finished_outcomes", "format_trials", "grid_space",
    "keeps_quality", "key_problem", "objective_values", "open_study", "pareto_plot", "pareto_trials",
    "quality_floor_for", "quality_shortfall", "recover_interrupted", "sample", "shipped_outcome", "study_name",
    "table_rows", "tell", "trial_config", "trials_done", "trials_markdown", "value_text",
]
