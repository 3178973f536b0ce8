"""The sweep's plain logic: checking a sweep: section before any trial, and the Optuna study (no TensorFlow)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shrinkflow.cli.sweep import time_budget
from shrinkflow.core import sweep
from shrinkflow.core.config import validate_config
from shrinkflow.core.errors import ConfigError
from shrinkflow.core.selection import Quality
from shrinkflow.core.sweep import TrialOutcome
from tests.conftest import REPO, subprocess_env, tiny_digits_config


def sweep_raw(parameters: dict[str, Any], **settings: Any) -> dict[str, Any]:
    raw = tiny_digits_config().model_dump(mode="json")
    raw["sweep"] = {"parameters": parameters, **settings}
    return raw


def check(raw: dict[str, Any]) -> None:
    sweep.check_sweep(raw, validate_config(raw), source="sweep.yaml")


@pytest.mark.parametrize(
    ("parameters", "settings", "expected"),
    [
        ({"model.hidden_unit": {"choice": [[8]]}}, {}, "sweep.parameters.model.hidden_unit: unknown config key"),
        ({"train": {"choice": [1]}}, {}, "sweep.parameters.train: train is a section"),
        ({"train.learning_rate": {"float": [0.01, 0.001]}}, {}, "sweep.parameters.train.learning_rate: Value error, empty range"),
        ({"model.hidden_units": {"choice": []}}, {}, "sweep.parameters.model.hidden_units: Value error, choice is empty"),
        ({"train.learning_rate": {"float": [0, 0.1], "log": True}}, {}, "log scale needs low > 0"),
        ({"prune.target_sparsity": {"choice": [0.5, 1.5]}}, {}, "sweep.parameters.prune.target_sparsity: the config rejects the value 1.5"),
        ({"prune.target_sparsity": {"float": [0.5, 0.9]}}, {"sampler": "grid"}, "parameters.prune.target_sparsity: the grid sampler needs"),
    ],
    ids=["unknown-key", "section", "reversed-range", "empty-choice", "log-at-zero", "rejected-choice", "grid-float"],
)
def test_a_bad_spec_is_a_config_error_naming_the_key(parameters: dict[str, Any], settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check(sweep_raw(parameters, **settings))
    assert expected in str(raw := raised.value), raw


def test_a_choice_that_makes_the_student_too_wide_names_key_and_value() -> None:
    raw = sweep_raw({"model.hidden_units": {"choice": [[16], [2]]}})
    raw["distill"]["students"] = [{"hidden_units": [4]}]
    with pytest.raises(ConfigError, match=r"model.hidden_units: the config rejects the value \[2\].*not smaller"):
        check(raw)


def test_a_valid_spec_passes_and_a_trial_config_applies_its_values() -> None:
    raw = sweep_raw({"model.hidden_units": {"choice": [[8], [16]]}, "train.learning_rate": {"float": [1e-4, 1e-2], "log": True}})
    check(raw)
    config = sweep.trial_config(raw, {"model.hidden_units": [8], "train.learning_rate": 1e-05})
    assert config.model.hidden_units == (8,) and config.train.learning_rate == 1e-05


def test_the_cli_exits_2_on_a_bad_spec_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_raw({"model.nope": {"int": [1, 4]}})))
    done = subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", "sweep", str(path), "--workspace", str(tmp_path / "ws")],
        capture_output=True, text=True, cwd=REPO, env=subprocess_env(), timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "sweep.parameters.model.nope: unknown config key" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_time_budget_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_raw({"model.hidden_units": {"choice": [[8]]}})))
    done = subprocess.run(
        [sys.executable, "-m", "shrinkflow.cli.main", "sweep", str(path), "--workspace", str(tmp_path / "ws"), "--timeout", "0"],
        capture_output=True, text=True, cwd=REPO, env=subprocess_env(), timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"shrinkflow: error: {TIME_BUDGET_PROBLEM % '0'}"]
    assert not (tmp_path / "ws").exists()  # refused before anything started


TIME_BUDGET_PROBLEM = "--timeout %s: expected the time budget in minutes, a number above 0 (e.g. --timeout 30)"


@pytest.mark.parametrize("minutes", ["ten", "-1", "nan", "inf"])
def test_a_time_budget_is_a_finite_number_of_minutes_above_0(minutes: str) -> None:
    with pytest.raises(ConfigError) as raised:
        time_budget(minutes)
    assert str(raised.value) == TIME_BUDGET_PROBLEM % minutes
    assert time_budget("0.5") == 0.5 and time_budget(None) is None


def test_an_unreachable_dask_address_fails_fast_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep_raw({"model.hidden_units": {"choice": [[8]]}})))
        done = subprocess.run(
            [sys.executable, "-m", "shrinkflow.cli.main", "sweep", str(path), "--workspace", str(tmp_path / "ws"), "--dask-address", address],
            capture_output=True, text=True, cwd=REPO, env=subprocess_env(), timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert f"--dask-address {address}: no Dask scheduler answers" in done.stderr
    assert "Traceback" not in done.stderr


ACCURACY = Quality("accuracy")


def test_a_resumed_study_fails_the_cut_off_trial_reruns_its_values_and_keeps_finished_ones(tmp_path: Path) -> None:
    config = validate_config(sweep_raw({"model.hidden_units": {"choice": [[8], [16]]}}, trials=3, sampler="random"))
    storage = sweep.default_storage(tmp_path / "sweeps", "study")
    study = sweep.open_study(config.sweep, storage, "study", ACCURACY)
    base = study.ask()
    assert sweep.sample(base, config.sweep) == {}  # trial 0: the config as written
    sweep.tell(study, base, TrialOutcome(0, {}, quality=0.9, gzip_size_bytes=100, baseline_quality=0.9), config.sweep, None, ACCURACY)
    cut_off = study.ask()
    values = sweep.sample(cut_off, config.sweep)  # left RUNNING, as by a killed sweep

    resumed = sweep.open_study(config.sweep, storage, "study", ACCURACY)
    assert sweep.recover_interrupted(resumed) == [1]
    assert sweep.trials_done(resumed) == 1
    again = resumed.ask()
    assert again.number == 2 and sweep.sample(again, config.sweep) == values
    assert [o.number for o in sweep.finished_outcomes(resumed)] == [0]
    assert resumed.trials[0].values == [100.0]


def test_the_best_trial_is_the_smallest_that_keeps_the_floor() -> None:
    config = validate_config(sweep_raw({"model.hidden_units": {"choice": [[8]]}}))
    outcomes = [
        TrialOutcome(0, {}, quality=0.95, gzip_size_bytes=1000, baseline_quality=0.96),
        TrialOutcome(1, {"k": 1}, quality=0.90, gzip_size_bytes=100),  # too inaccurate
        TrialOutcome(2, {"k": 2}, quality=0.955, gzip_size_bytes=400),
        TrialOutcome(3, {"k": 3}, status="failed", reason="boom"),
    ]
    floor = sweep.quality_floor_for(outcomes, config)
    assert floor == pytest.approx(0.96 - config.select.max_quality_drop)
    best = sweep.best_trial(outcomes, floor, ACCURACY)
    assert best is not None and best.number == 2
    assert sweep.pareto_trials(outcomes, ACCURACY) == {1, 2}


def test_a_regression_sweep_keeps_an_rmse_ceiling() -> None:
    """RMSE is better lower: the floor is the base baseline's RMSE times (1 + max_quality_drop)."""
    raw = sweep_raw({"model.hidden_units": {"choice": [[8]]}})
    raw["data"] = {"source": "sklearn:diabetes", "task": "regression", "scaling": "standard"}
    raw["model"] = {**raw.get("model", {}), "family": "mlp"}
    raw["select"] = {"max_quality_drop": 0.05}
    config = validate_config(raw)
    rmse = Quality(config.select.quality)
    assert rmse.metric == "rmse" and not rmse.higher_is_better
    outcomes = [
        TrialOutcome(0, {}, quality=53.0, metric="rmse", gzip_size_bytes=1000, baseline_quality=50.0),
        TrialOutcome(1, {"k": 1}, quality=60.0, metric="rmse", gzip_size_bytes=100),  # too far above
        TrialOutcome(2, {"k": 2}, quality=52.4, metric="rmse", gzip_size_bytes=400),
    ]
    floor = sweep.quality_floor_for(outcomes, config)
    assert floor == pytest.approx(52.5)
    best = sweep.best_trial(outcomes, floor, rmse)
    assert best is not None and best.number == 2
    assert sweep.pareto_trials(outcomes, rmse) == {1, 2}
