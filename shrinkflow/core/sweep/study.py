"""The Optuna study of a sweep: its name and storage, the sampler and directions, asking and telling, and
resuming a sweep that was interrupted.

Trial 0 of every study is the base config as written (no sampled values), so the quality budget always has a
reference: the base config's baseline quality within select.max_quality_drop (selection.Quality), unless
sweep.quality_floor sets an absolute floor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shrinkflow.core import locks
from shrinkflow.core.config import PipelineConfig, SweepConfig
from shrinkflow.core.environment import check_database
from shrinkflow.core.selection import Quality
from shrinkflow.core.sweep.outcome import TrialOutcome

if TYPE_CHECKING:
    import optuna

BASE_ATTR = "base"  # trial 0: the config as written
INTERRUPTED_ATTR = "interrupted"  # left RUNNING by a sweep that was killed; its parameters run again
OUTCOME_ATTR = "outcome"  # the TrialOutcome as JSON
SHORTFALL_ATTR = "quality_shortfall"  # how far the trial's quality is on the wrong side of the floor: TPE's constraint


def study_name(config: PipelineConfig) -> str:
    """The study of this base config and search space: a changed config starts a new study, a larger
    `trials` (or --trials) or another time budget goes on with the same one."""
    search = config.sweep.model_dump(mode="json", exclude={"trials", "timeout_minutes"})
    # Each space with all its fields, as names were hashed before the form's list of entries: studies keep their names.
    search["parameters"] = {key: space.model_dump(mode="json") for key, space in config.sweep.parameters.items()}
    digest = hashlib.sha256(json.dumps([config.config_hash(), search], sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.name}-{digest}"


def default_storage(sweeps_dir: Path, name: str) -> str:
    sweeps_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{sweeps_dir / name}.db"


def storage_setting(spec: SweepConfig, storage: str) -> str:
    """How messages name the study's database: the config's sweep.storage, or the default file."""
    return f"sweep.storage {_shown(storage)}" if spec.storage else f"the study database {storage.removeprefix('sqlite:///')}"


def check_storage(spec: SweepConfig, storage: str) -> None:
    """The study's database can be used (its driver installed, reachable, a sound SQLite file we can write).

    Raises:
        EnvironmentProblem: naming sweep.storage (or the default file) and the fix.
    """
    check_database(
        storage, storage_setting(spec, storage),
        "move it aside to start the study afresh (its finished trials are lost), or set sweep.storage to another database",
    )


def lock_study(spec: SweepConfig, storage: str, name: str) -> locks.HeldLock:
    """Hold the study for this sweep alone, until released (or this process ends, however it ends).

    One sweep per study at a time: a second one would fail the first one's running trials as interrupted and
    add trials of its own to the same budget. So a second sweep of the same study is refused at once. While
    the lock is held, a RUNNING trial can only be one a dead sweep left, which recover_interrupted then
    re-runs. A PostgreSQL study is locked in PostgreSQL (an advisory lock, across machines); a SQLite study by
    a lock file beside its database; a study in another database is not locked.

    Raises:
        LockBusy: another sweep of the study is running (named by pid and host).
    """
    from sqlalchemy.engine import make_url

    url = make_url(storage)
    busy = (
        f"{storage_setting(spec, storage)}: study {name} is being swept by another process ({{holder}}); wait for that "
        "sweep to finish (or stop it), then run this command again: it resumes the study"
    )
    if url.get_backend_name() == "postgresql":
        return locks.acquire(storage, f"shrinkflow-sweep:{name}", wait=0, busy=busy)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return locks.acquire(Path(f"{url.database}.{name}.lock"), name, wait=0, busy=busy)
    return locks.HeldLock(lambda: None)


def _shown(storage: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def open_study(spec: SweepConfig, storage: str, name: str, quality: Quality) -> optuna.Study:
    """Create the study, or load it to resume; trial 0 (the base config) is enqueued in a new study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    def samplers(seed: int) -> dict[str, Callable[[], optuna.samplers.BaseSampler]]:
        return {
            "grid": lambda: optuna.samplers.GridSampler(grid_space(spec), seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            # constant_liar: trials asked in one batch, before any is told, do not all land on the same point.
            "tpe": lambda: optuna.samplers.TPESampler(
                seed=seed, constant_liar=True, multivariate=True, constraints_func=quality_shortfall
            ),
        }

    quality_direction: Literal["minimize", "maximize"] = "maximize" if quality.higher_is_better else "minimize"
    directions: list[Literal["minimize", "maximize"]] = ["minimize"] if spec.objective == "size" else [quality_direction, "minimize"]
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=samplers(spec.seed)[spec.sampler](), directions=directions,
        load_if_exists=True,
    )
    earlier = len(study.get_trials(deepcopy=False))
    if not earlier:
        study.enqueue_trial({}, user_attrs={BASE_ATTR: True})
    else:
        # A resumed study goes on from where it stopped: a sampler seeded as the first sweep's would draw that
        # sweep's values again, beside the interrupted trials' own values enqueued for their re-run.
        study.sampler = samplers(spec.seed + earlier)[spec.sampler]()
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
    except KeyError:
        # The grid sampler, telling a trial it did not place on the grid (the base config, a resumed one) while
        # one point is left, looks for the trial's grid point and finds none; the trial is stored all the same.
        return True
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
