"""A sweep: Optuna searches the config space for the smallest model that keeps the quality (accuracy; RMSE or
R2 for regression: select.quality).

Plain logic, no Prefect and no MLflow: checking a `sweep:` section against the config it searches, the
Optuna study (sampler, directions, storage, resuming an interrupted sweep), a trial's config, a trial's
outcome from its selection, the choice of the best trial, the trials table and the Pareto plot.

Trial 0 of every study is the base config as written (no sampled values), so the quality budget always
has a reference: the base config's baseline quality within select.max_quality_drop (selection.Quality),
unless sweep.quality_floor sets an absolute floor.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import ValidationError

from shrinkflow.core.config import (
    PipelineConfig, SearchSpace, SweepConfig, _apply_override, _section, format_validation_error,
)
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.selection import Quality, Selection, pareto_front
from shrinkflow.core.tables import markdown_table, text_table
from shrinkflow.core.variants import Variant

if TYPE_CHECKING:
    import optuna

# The trial attributes kept in the study (user attributes), read back when a sweep resumes.
BASE_ATTR = "base"  # trial 0: the config as written
INTERRUPTED_ATTR = "interrupted"  # left RUNNING by a sweep that was killed; its parameters run again
OUTCOME_ATTR = "outcome"  # the TrialOutcome as JSON
SHORTFALL_ATTR = "quality_shortfall"  # how far the trial's quality is on the wrong side of the floor: TPE's constraint
TABLE_COLUMNS = ("trial", "status", "variant", "quality", "gzip_size_bytes", "worker", "seconds", "params", "reason")


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial hands back (never models): which variant its pipeline would ship and how it did.

    Attributes:
        number: the Optuna trial number.
        params: the sampled values by dotted config key (empty for the base trial).
        status: "complete", or "failed" (invalid config, a stage that raised, nothing selected).
        reason: why it failed.
        variant: the shipped variant's name.
        quality, gzip_size_bytes: the shipped variant's test quality (select.quality: accuracy, rmse or r2) and
            gzipped size.
        metric: what the quality is (accuracy, rmse or r2).
        baseline_quality: the trial's own baseline's quality.
        worker: the Dask worker that ran it ("" when it ran in the flow's process).
        seconds: the trial task's wall time; stage_seconds: the part spent inside the pipeline's stages.
    """

    number: int
    params: dict[str, Any]
    status: Literal["complete", "failed"] = "complete"
    reason: str = ""
    variant: str = ""
    quality: float | None = None
    metric: str = "accuracy"  # what `quality` measures (select.quality)
    gzip_size_bytes: int | None = None
    baseline_quality: float | None = None
    worker: str = ""
    seconds: float = 0.0
    stage_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.__dataclass_fields__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialOutcome:
        return cls(**json.loads(text))


def shipped_outcome(selection: Selection, variants: Sequence[Variant], quality: str) -> tuple[str, float, int] | None:
    """The trial's result: the shipped variant's name, quality (the metric select.quality names) and gzipped
    size (None if nothing ships). The one place that says what a trial scores."""
    if selection.selected is None:
        return None
    shipped = next(variant for variant in variants if variant.name == selection.selected)
    return shipped.name, shipped.metrics[quality], int(shipped.metrics["gzip_size_bytes"])


# ---------------------------------------------------------------------------------------------------------------------
# Checking the spec and building a trial's config


def check_sweep(raw: Mapping[str, Any], config: PipelineConfig, source: str) -> None:
    """Reject a `sweep:` section that could not run, before any trial starts.

    Each key must be a config value (as for --set), and each choice and each end of a range must give a
    valid config when applied to the base config.

    Raises:
        ConfigError: naming the key (and the value the config rejects).
    """
    spec = config.sweep
    if not spec.parameters:
        raise ConfigError(
            f"{source}: sweep.parameters is empty; list the config keys to search, e.g.\n"
            "  sweep:\n    parameters:\n      model.hidden_units: {choice: [[16], [32], [64]]}"
        )
    for key, space in spec.parameters.items():
        problem = key_problem(key)
        if problem:
            raise ConfigError(f"{source}: sweep.parameters.{key}: {problem}")
        for value in candidate_values(space):
            try:
                trial_config(raw, {key: value})
            except ConfigError as exc:
                detail = str(exc).split("\n", 1)[-1].strip()
                raise ConfigError(
                    f"{source}: sweep.parameters.{key}: the config rejects the value {value!r}: {detail}"
                ) from None


def key_problem(key: str) -> str | None:
    """Why `key` is not a config value a sweep can search, or None."""
    parts = tuple(key.split("."))
    if any(not part for part in parts):
        return "expected a dotted config key such as model.hidden_units"
    if parts[0] in ("name", "sweep"):
        return f"{parts[0]} cannot be searched: a sweep keeps the model's name and its own settings"
    parent = _section(parts[:-1])
    if parent is None or parts[-1] not in parent.model_fields:
        known = ", ".join(parent.model_fields) if parent is not None else "a section such as model, train, prune"
        return f"unknown config key; expected one of: {known}"
    section = _section(parts)
    if section is not None:
        return f"{key} is a section; search one of its fields: " + ", ".join(f"{key}.{name}" for name in section.model_fields)
    return None


def candidate_values(space: SearchSpace) -> tuple[Any, ...]:
    """The values a check tries: every choice, or both ends of a range."""
    return space.choice or space.int_range or space.float_range or ()


def trial_config(raw: Mapping[str, Any], values: Mapping[str, Any]) -> PipelineConfig:
    """The base config's raw YAML with `values` applied by the same override mechanism as --set, validated.

    Raises:
        ConfigError: the combination is invalid (e.g. a student no smaller than its sampled teacher).
    """
    trial_raw = copy.deepcopy(dict(raw))
    for key, value in values.items():
        _apply_override(trial_raw, f"{key}={_yaml_text(value)}")
    try:
        return PipelineConfig.model_validate(trial_raw)
    except ValidationError as exc:
        shown = ", ".join(f"{key}={_yaml_text(value)}" for key, value in values.items()) or "the base config"
        raise ConfigError(format_validation_error(exc, f"trial config ({shown})")) from None


def _yaml_text(value: Any) -> str:
    """`value` as the text of a --set override (YAML flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("...\n").strip()


# ---------------------------------------------------------------------------------------------------------------------
# The Optuna study


def study_name(config: PipelineConfig) -> str:
    """The study of this base config and search space: a changed config starts a new study, a larger
    `trials` (or --trials) goes on with the same one."""
    search = config.sweep.model_dump(mode="json", exclude={"trials"})
    digest = hashlib.sha256(json.dumps([config.config_hash(), search], sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.name}-{digest}"


def default_storage(sweeps_dir: Path, name: str) -> str:
    sweeps_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{sweeps_dir / name}.db"


def open_study(spec: SweepConfig, storage: str, name: str, quality: Quality) -> optuna.Study:
    """Create the study, or load it to resume; trial 0 (the base config) is enqueued in a new study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {
        "grid": lambda: optuna.samplers.GridSampler(grid_space(spec), seed=spec.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=spec.seed),
        # constant_liar: trials asked in one batch, before any is told, do not all land on the same point.
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=spec.seed, constant_liar=True, multivariate=True, constraints_func=quality_shortfall
        ),
    }
    quality_direction: Literal["minimize", "maximize"] = "maximize" if quality.higher_is_better else "minimize"
    directions: list[Literal["minimize", "maximize"]] = ["minimize"] if spec.objective == "size" else [quality_direction, "minimize"]
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=samplers[spec.sampler](), directions=directions, load_if_exists=True
    )
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial({}, user_attrs={BASE_ATTR: True})
    return study


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Trials a killed sweep left RUNNING: marked FAIL (and `interrupted`), their parameters enqueued again.

    Finished trials are kept as they are and never run again. Returns the numbers of the recovered trials.
    """
    from optuna.trial import TrialState

    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=TrialState.FAIL)
        attrs = {key: value for key, value in trial.user_attrs.items() if key == BASE_ATTR}
        study.enqueue_trial(trial.params, user_attrs=attrs)
        recovered.append(trial.number)
    return recovered


def trials_done(study: optuna.Study) -> int:
    """Finished trials that count towards `trials`: complete or failed, not the interrupted ones."""
    from optuna.trial import TrialState

    return sum(
        1 for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if not trial.user_attrs.get(INTERRUPTED_ATTR)
    )


def grid_space(spec: SweepConfig) -> dict[str, list[Any]]:
    """The grid sampler's points per key (validated: choices and int ranges only)."""
    grid: dict[str, list[Any]] = {}
    for key, space in spec.parameters.items():
        if space.choice is not None:
            grid[key] = [_encode(value) for value in space.choice]
        elif space.int_range is not None:
            grid[key] = list(range(space.int_range[0], space.int_range[1] + 1, space.step or 1))
    return grid


def sample(trial: optuna.Trial, spec: SweepConfig) -> dict[str, Any]:
    """The trial's values by key: none for the base trial, else one sampled value per key."""
    if trial.user_attrs.get(BASE_ATTR):
        return {}
    values: dict[str, Any] = {}
    for key, space in spec.parameters.items():
        if space.choice is not None:
            decoded = {_encode(value): value for value in space.choice}
            values[key] = decoded[trial.suggest_categorical(key, list(decoded))]
        elif space.int_range is not None:
            low, high = space.int_range
            values[key] = trial.suggest_int(key, low, high, step=space.step or 1, log=space.log)
        elif space.float_range is not None:
            low_f, high_f = space.float_range
            values[key] = trial.suggest_float(key, low_f, high_f, log=space.log)
    return values


def _encode(value: Any) -> Any:
    """A choice as Optuna stores it: lists and mappings (layer sizes, students) as JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value


def tell(
    study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, spec: SweepConfig, floor: float | None, quality: Quality
) -> bool:
    """Tell Optuna how the trial went, keeping its outcome in the study (a resumed sweep reads it back).

    A complete trial on the wrong side of the quality floor is told its values all the same, with a positive
    constraint (the quality it lacks) that TPE reads as infeasible, so it is not drawn towards small, poor models.

    Returns:
        False once the sampler has nothing left to try (the grid sampler after the grid's last point).
    """
    from optuna.trial import TrialState

    trial.set_user_attr(OUTCOME_ATTR, outcome.to_json())
    if not outcome.ok:
        trial.set_user_attr("reason", outcome.reason[:2000])
    else:
        shortfall = 0.0 if floor is None or outcome.quality is None else quality.shortfall(outcome.quality, floor)
        trial.set_user_attr(SHORTFALL_ATTR, shortfall)
    try:
        if outcome.ok:
            study.tell(trial, objective_values(outcome, spec))
        else:
            study.tell(trial, state=TrialState.FAIL)
    except RuntimeError:
        # The grid sampler calls study.stop() once its last point is told, which raises outside study.optimize;
        # the trial is stored by then.
        return False
    return True


def quality_shortfall(trial: optuna.trial.FrozenTrial) -> list[float]:
    """TPE's constraint: how far the trial's shipped variant is on the wrong side of the quality floor (<= 0: feasible)."""
    return [float(trial.user_attrs.get(SHORTFALL_ATTR, 0.0))]


def finished_outcomes(study: optuna.Study) -> list[TrialOutcome]:
    """The outcomes of the study's finished trials (not the interrupted ones), in trial order."""
    from optuna.trial import TrialState

    return [
        TrialOutcome.from_json(trial.user_attrs[OUTCOME_ATTR])
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if OUTCOME_ATTR in trial.user_attrs and not trial.user_attrs.get(INTERRUPTED_ATTR)
    ]


def objective_values(outcome: TrialOutcome, spec: SweepConfig) -> list[float]:
    """What Optuna is told for a complete trial: its gzipped size; or its quality and its size."""
    assert outcome.quality is not None and outcome.gzip_size_bytes is not None
    size = float(outcome.gzip_size_bytes)
    return [size] if spec.objective == "size" else [outcome.quality, size]


# ---------------------------------------------------------------------------------------------------------------------
# The best trial, the table, the plot


def quality_floor_for(outcomes: Sequence[TrialOutcome], config: PipelineConfig) -> float | None:
    """The worst quality a trial's shipped variant may have: sweep.quality_floor, else the base trial's baseline
    quality within select.max_quality_drop (None while the base trial has not completed)."""
    if config.sweep.quality_floor is not None:
        return config.sweep.quality_floor
    base = next((o for o in outcomes if not o.params and o.ok and o.baseline_quality is not None), None)
    if base is None or base.baseline_quality is None:
        return None
    return Quality(config.select.quality).worst_allowed(base.baseline_quality, config.select.max_quality_drop)


def keeps_quality(outcome: TrialOutcome, floor: float | None, quality: Quality) -> bool:
    return outcome.ok and floor is not None and outcome.quality is not None and quality.meets(outcome.quality, floor)


def pareto_trials(outcomes: Sequence[TrialOutcome], quality: Quality) -> set[int]:
    """Complete trials not dominated on (gzip size, quality)."""
    points = {
        str(o.number): (float(o.gzip_size_bytes), -quality.better_first(o.quality)) for o in outcomes
        if o.ok and o.gzip_size_bytes is not None and o.quality is not None
    }
    return {int(number) for number in pareto_front(points)}


def best_trial(outcomes: Sequence[TrialOutcome], floor: float | None, quality: Quality) -> TrialOutcome | None:
    """The smallest shipped variant among the trials that keep the quality floor (ties: the better, then the
    earlier trial). With two objectives it is the same point: the smallest member of the Pareto front that
    keeps the floor, the one that ships."""
    eligible = [o for o in outcomes if keeps_quality(o, floor, quality)]
    if not eligible:
        return None
    return min(eligible, key=lambda o: (o.gzip_size_bytes or 0, quality.better_first(o.quality or 0.0), o.number))


def table_rows(
    outcomes: Sequence[TrialOutcome], floor: float | None, best: TrialOutcome | None, quality: Quality
) -> list[dict[str, Any]]:
    """One row per trial, in trial order: what it sampled, what it would ship, where it ran."""
    front = pareto_trials(outcomes, quality)
    rows = []
    for o in sorted(outcomes, key=lambda o: o.number):
        marks = [mark for mark, on in (("best", best is not None and o.number == best.number),
                                       ("pareto", o.number in front),
                                       ("below floor", o.ok and not keeps_quality(o, floor, quality))) if on]
        rows.append({
            "trial": o.number,
            "status": o.status + (f" ({', '.join(marks)})" if marks else ""),
            "variant": o.variant,
            "quality": None if o.quality is None else round(o.quality, 4),
            "gzip_size_bytes": o.gzip_size_bytes,
            "worker": o.worker,
            "seconds": round(o.seconds, 1),
            "params": "base config" if not o.params else ", ".join(f"{k}={_shown(v)}" for k, v in o.params.items()),
            "reason": o.reason[:120],
        })
    return rows


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _yaml_text(value)


def format_trials(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    cells = [[row[column] for column in TABLE_COLUMNS] for row in rows]
    return markdown_table(TABLE_COLUMNS, cells) if markdown else text_table(TABLE_COLUMNS, cells)


def pareto_plot(
    outcomes: Sequence[TrialOutcome], floor: float | None, best: TrialOutcome | None, path: Path, quality: Quality
) -> Path:
    """Gzipped size against quality, one point per complete trial; the Pareto front joined and marked, the
    quality floor drawn, the best trial circled. Written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (size, quality, trial number) of every complete trial
    points = [(float(o.gzip_size_bytes), o.quality, o.number) for o in outcomes
              if o.ok and o.gzip_size_bytes is not None and o.quality is not None]
    front = pareto_trials(outcomes, quality)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    others = [p for p in points if p[2] not in front]
    axes.scatter([p[0] for p in others], [p[1] for p in others], color="0.6", label="trial")
    on_front = sorted(p for p in points if p[2] in front)
    axes.plot([p[0] for p in on_front], [p[1] for p in on_front], "o-", color="tab:blue", label="Pareto front")
    for size, value, number in points:
        axes.annotate(str(number), (size, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if floor is not None:
        axes.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"{quality.metric} floor {floor:.4f}")
    chosen = [p for p in points if best is not None and p[2] == best.number]
    if chosen:
        axes.scatter([chosen[0][0]], [chosen[0][1]], s=200, facecolors="none", edgecolors="tab:green",
                     linewidths=2, label=f"chosen: trial {chosen[0][2]}")
    if points and max(p[0] for p in points) > 10 * min(p[0] for p in points):
        axes.set_xscale("log")
    axes.set_xlabel("gzipped size of the shipped variant (bytes)")
    axes.set_ylabel(f"test {quality.metric}")
    axes.set_title(f"Sweep: size against {quality.metric}, one point per trial")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
