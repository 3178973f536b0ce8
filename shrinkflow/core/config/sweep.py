"""The sweep section: which config keys `shrinkflow sweep` searches, how, and what counts as best."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, field_serializer, model_validator

from shrinkflow.core.config.base import Section


class SearchSpace(Section):
    """Where a sweep samples one config key: a list of choices, an integer range or a float range."""

    # `int` and `float` are the keys a user writes; the attributes cannot shadow the builtins.
    model_config = ConfigDict(title="Search space", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    choice: tuple[Any, ...] | None = Field(None, title="Choices", description="The values to try, as the key takes them (e.g. [[16], [32]] for hidden_units).")
    int_range: tuple[int, int] | None = Field(None, alias="int", title="Integer range", description="[low, high], both included.")
    float_range: tuple[float, float] | None = Field(None, alias="float", title="Float range", description="[low, high].")
    step: int | None = Field(None, ge=1, title="Step", description="int only: sample low, low + step, ...")
    log: bool = Field(False, title="Log scale", description="Sample the range on a log scale (low must be above 0).")

    @model_validator(mode="after")
    def _check_space(self) -> SearchSpace:
        given = [name for name, value in (("choice", self.choice), ("int", self.int_range), ("float", self.float_range)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, int or float (got {', '.join(given) or 'none'})")
        if self.choice is not None and not self.choice:
            raise ValueError("choice is empty: list at least one value")
        bounds = self.int_range or self.float_range
        if bounds is not None:
            if bounds[0] > bounds[1]:
                raise ValueError(f"empty range [{bounds[0]}, {bounds[1]}]: low must be at most high")
            if self.log and bounds[0] <= 0:
                raise ValueError(f"log scale needs low > 0 (got {bounds[0]})")
        if self.step is not None and self.int_range is None:
            raise ValueError("step is for int ranges")
        if self.step is not None and self.log:
            raise ValueError("step and log cannot go together (Optuna samples a log range without steps)")
        return self


class SearchEntry(SearchSpace):
    """One searched setting as the Prefect Run form shows it: the config key, then its space. Only the form
    (and the flow run's JSON parameters) write the search space as a list of these; a YAML config writes
    `parameters` as a mapping of key to space, and both read the same."""

    model_config = ConfigDict(title="Searched setting", json_schema_extra=lambda schema: _key_first(schema))

    key: str = Field(
        ..., title="Config key", description="A dotted config key, as for --set: model.hidden_units, prune.target_sparsity, ...",
    )


def _key_first(schema: dict[str, Any]) -> None:
    """The form lists a setting's fields in the schema's order: its key first."""
    schema["properties"] = {"key": schema["properties"]["key"], **schema["properties"]}


def _entries_to_mapping(value: Any) -> Any:
    """The search space as the form sends it (a list of entries, each with its key) as the config's mapping."""
    if not isinstance(value, (list, tuple)):
        return value
    mapping: dict[str, Any] = {}
    for position, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise ValueError(f"entry {position}: each searched setting needs its config key (key: model.hidden_units, ...)")
        if entry["key"] in mapping:
            raise ValueError(f"{entry['key']} is listed twice")
        mapping[entry["key"]] = {name: item for name, item in entry.items() if name != "key"}
    return mapping


class SweepConfig(Section):
    """`shrinkflow sweep`: which config keys to search, how, and what counts as best."""

    model_config = ConfigDict(title="Sweep")

    parameters: Annotated[
        dict[str, SearchSpace], BeforeValidator(_entries_to_mapping, json_schema_input_type=list[SearchEntry])
    ] = Field(
        {}, title="Search space",
        description=(
            "The settings to search, each a dotted config key (as for --set) with its values: a list of choices, "
            "an integer range or a float range."
        ),
    )
    sampler: Literal["grid", "random", "tpe"] = Field(
        "tpe", title="Sampler", description="grid: every combination of choices and int steps; random; tpe: Optuna's TPE."
    )
    objective: Literal["size", "quality_and_size"] = Field(
        "size", title="Objective",
        description="size: the smallest shipped variant that keeps the quality floor; quality_and_size: both, a Pareto front.",
    )
    trials: int = Field(12, ge=1, le=10000, title="Trials", description="Trials to reach, counting those an interrupted sweep finished.")
    timeout_minutes: float | None = Field(
        None, gt=0, allow_inf_nan=False, title="Time budget (minutes)",
        description=(
            "Ask for no new trial once this many minutes have passed since the search started; the trials already "
            "running finish, then the best trial so far that keeps the quality floor ships. Empty: no time limit."
        ),
    )
    seed: int = Field(42, title="Sampler seed", description="Seed of the sampler.")
    storage: str | None = Field(
        None, title="Study storage",
        description="Database URL of the Optuna study (postgresql://... for a team); empty: a SQLite file in the workspace, WORKSPACE/sweeps/STUDY.db (STUDY: the model's name and a hash of the config).",
    )
    quality_floor: float | None = Field(
        None, allow_inf_nan=False, title="Quality floor",
        description=(
            "The worst validation quality (select.quality) a trial's shipped variant may have: the least accuracy "
            "or R2, the most RMSE. Empty: the base config's baseline within select.max_quality_drop."
        ),
    )

    @model_validator(mode="after")
    def _check_grid(self) -> SweepConfig:
        if self.sampler == "grid":
            for key, space in self.parameters.items():
                if space.float_range is not None or space.log:
                    raise ValueError(
                        f"parameters.{key}: the grid sampler needs choices or int ranges; give {key} a choice list "
                        "or use sampler: random or tpe"
                    )
        return self

    @field_serializer("parameters", mode="wrap")
    def _entries_in_json(
        self, parameters: dict[str, SearchSpace], default: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        """As JSON (the Prefect Run form, a flow run's parameters, config.yaml) the search space is the form's list
        of entries, each with only the values it gives (no block of nulls); read back, it is the same mapping."""
        if not info.mode_is_json():
            return default(parameters)
        return [{"key": key, **space.model_dump(mode="json", exclude_defaults=True)} for key, space in parameters.items()]
