"""The Prefect Run forms: the parameter schemas Prefect generates from the flows' signatures (what its UI renders
and its API validates a run's parameters against), checked without a server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from shrinkflow.core.config import PipelineConfig, validate_config
from shrinkflow.deployments.serving import DEPLOYMENTS, SWEEP_ENTRYPOINT
from shrinkflow.flows.pipeline import pipeline
from shrinkflow.flows.sweep import sweep

[SWEEP_SPEC] = [spec for spec in DEPLOYMENTS if spec.entrypoint == SWEEP_ENTRYPOINT]


def form(flow: Any) -> dict[str, Any]:
    """The flow's parameter schema as a deployment stores it (`parameter_openapi_schema`)."""
    return parameter_schema(flow.fn).model_dump_for_openapi()


def fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, field) for every field of the form: the flow's parameters and every field of every sub-form."""
    yield from ((f"parameter {name}", field) for name, field in schema["properties"].items())
    for definition_name, definition in schema["definitions"].items():
        yield from ((f"{definition_name}.{name}", field) for name, field in definition.get("properties", {}).items())


@pytest.mark.parametrize("flow", [pipeline, sweep], ids=["pipeline", "sweep"])
def test_no_label_or_description_holds_text_in_angle_brackets(flow: Any) -> None:
    """Prefect's UI drops `<workspace>` as an unknown HTML tag (its first UI) or shows it raw (its second)."""
    schema = form(flow)
    texts = [(where, field.get(key, "")) for where, field in fields(schema) for key in ("title", "description")]
    texts += [(name, definition.get(key, "")) for name, definition in schema["definitions"].items() for key in ("title", "description")]
    assert [(where, text) for where, text in texts if re.search(r"<[A-Za-z/!]", text)] == []  # "->" is no tag


def test_the_pipeline_form_has_no_sweep_section() -> None:
    schema = form(pipeline)
    config = schema["definitions"][schema["properties"]["config"]["$ref"].removeprefix("#/definitions/")]
    assert "sweep" not in config["properties"] and "SweepConfig" not in schema["definitions"]
    assert config["additionalProperties"] is False  # a sweep section posted to it is refused


def test_the_sweep_form_has_one_trials_field_a_time_budget_and_the_search_space_as_typed_entries() -> None:
    schema = form(sweep)
    trials = [where for where, field in fields(schema) if "trials" in where.lower() or "trials" in field.get("title", "").lower()]
    assert trials == ["SweepConfig.trials"]
    sweep_section = schema["definitions"]["SweepConfig"]["properties"]
    budget = sweep_section["timeout_minutes"]
    assert budget["title"] == "Time budget (minutes)" and {"type": "number", "exclusiveMinimum": 0} in budget["anyOf"]
    assert sweep_section["quality_floor"]["title"] == "Quality floor"
    # One sub-form per searched setting (Prefect's list of cards), its config key first, then typed ranges.
    space = sweep_section["parameters"]
    assert space["type"] == "array" and space["items"] == {"$ref": "#/definitions/SearchEntry"}
    entry = schema["definitions"]["SearchEntry"]
    assert list(entry["properties"])[:2] == ["key", "choice"] and entry["required"] == ["key"]
    assert {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "maxItems": 2, "minItems": 2} in entry["properties"]["int"]["anyOf"]


def test_the_sweep_deployments_values_fit_its_form_and_read_back_as_the_preset() -> None:
    schema = form(sweep)
    parameters = SWEEP_SPEC.parameters()
    validate(parameters, schema, raise_on_error=True)  # what Prefect's API does before it creates a run
    entries = parameters["config"]["sweep"]["parameters"]
    assert entries[2] == {"key": "train.learning_rate", "float": [0.001, 0.01], "log": True}  # no block of nulls
    assert PipelineConfig.model_validate(parameters["config"]) == SWEEP_SPEC.config()


@pytest.mark.parametrize(
    ("edit", "refused_by"),
    [
        ({"timeout_minutes": 0}, "api"),
        ({"trials": 0}, "api"),
        ({"parameters": [{"key": "model.hidden_units", "int": [1, "two"]}]}, "api"),
        ({"parameters": [{"choice": [[8]]}]}, "api"),  # no key
        ({"parameters": [{"key": "train.epochs", "int": [1, 3]}, {"key": "train.epochs", "choice": [2]}]}, "flow"),
        ({"parameters": [{"key": "train.learning_rate", "float": [0.1, 0.01]}]}, "flow"),
    ],
    ids=["zero-budget", "zero-trials", "range-of-text", "no-key", "key-twice", "reversed-range"],
)
def test_a_bad_value_in_the_sweep_form_is_refused_before_a_run_starts(edit: dict[str, Any], refused_by: str) -> None:
    """Types and bounds are refused by Prefect's API (the schema); what only the config's checks see is refused by
    the flow's parameter validation, before the flow's first line runs."""
    parameters = SWEEP_SPEC.parameters()
    parameters["config"]["sweep"] |= edit
    if refused_by == "api":
        with pytest.raises(ValidationError):
            validate(parameters, form(sweep), raise_on_error=True)
    else:
        validate(parameters, form(sweep), raise_on_error=True)
        with pytest.raises(Exception, match="sweep.parameters"):
            sweep.validate_parameters(parameters)
    with pytest.raises(Exception, match="sweep"):
        validate_config(parameters["config"])
