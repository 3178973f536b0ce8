"""A sweep's search space checked against the config it searches, and a trial's config: the base config with
the trial's sampled values applied as typed values, then validated."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from shrinkflow.core.config import PipelineConfig, SearchSpace, format_validation_error, section_at, set_value
from shrinkflow.core.errors import ConfigError


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
    parent = section_at(parts[:-1])
    if parent is None or parts[-1] not in parent.model_fields:
        known = ", ".join(parent.model_fields) if parent is not None else "a section such as model, train, prune"
        return f"unknown config key; expected one of: {known}"
    section = section_at(parts)
    if section is not None:
        return f"{key} is a section; search one of its fields: " + ", ".join(f"{key}.{name}" for name in section.model_fields)
    return None


def candidate_values(space: SearchSpace) -> tuple[Any, ...]:
    """The values a check tries: every choice, or both ends of a range."""
    return space.choice or space.int_range or space.float_range or ()


def trial_config(raw: Mapping[str, Any], values: Mapping[str, Any]) -> PipelineConfig:
    """The base config's raw values with each sampled value set at its dotted key (as typed values, the way
    --set sets a parsed value), validated.

    Raises:
        ConfigError: the combination is invalid (e.g. a student no smaller than its sampled teacher).
    """
    trial_raw = copy.deepcopy(dict(raw))
    for key, value in values.items():
        set_value(trial_raw, key, value, where=f"sweep.parameters.{key}")
    try:
        return PipelineConfig.model_validate(trial_raw)
    except ValidationError as exc:
        shown = ", ".join(f"{key}={value_text(value)}" for key, value in values.items()) or "the base config"
        raise ConfigError(format_validation_error(exc, f"trial config ({shown})")) from None


def value_text(value: Any) -> str:
    """`value` as one line of YAML (flow style), as a --set override would give it."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("...\n").strip()
