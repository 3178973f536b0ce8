"""Reading a config: YAML, `--set dotted.key=value` overrides, validation, and errors that name the file, the
field and (for an override) the --set that gave the value."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shrinkflow.core.config.pipeline import PipelineConfig
from shrinkflow.core.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `dotted.key=value` overrides, and validate it.

    Raises:
        ConfigError: naming the file (or the --set override), the field and what is expected.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the path of a YAML config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a config needs at least `name: <model name>`")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (name, data, model, ...), got a {type(raw).__name__} "
            f"({shorten(raw)})"
        )
    overridden = dict(apply_override(raw, override) for override in overrides)
    return validate_config(raw, source=str(path), overridden=overridden)


def validate_config(raw: dict[str, Any], source: str = "config", overridden: dict[str, str] | None = None) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overridden or {})) from None


def format_validation_error(exc: ValidationError, source: str, overridden: dict[str, str] | None = None) -> str:
    """One line per problem, naming the field and, where a --set override gave the value, the override."""
    lines = [f"{source}: invalid config"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        culprit = next(
            (text for key, text in (overridden or {}).items() if field == key or field.startswith(f"{key}.")), None
        )
        where = f"{field} (from --set {culprit})" if culprit else field
        if error["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key; {_allowed_keys_hint(error['loc'])}")
        elif error["type"] == "missing":
            lines.append(f"  {where}: required, but missing")
        else:
            lines.append(f"  {where}: {error['msg']} (got {shorten(error['input'])})")
    return "\n".join(lines)


def shorten(value: Any, limit: int = 120) -> str:
    """A repr of `value` of at most about `limit` characters, however large or deeply nested it is
    (a YAML file of aliases expands to gigabytes)."""
    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section (pydantic model) at `loc`, or None where `loc` is not a section."""
    model: type[BaseModel] = PipelineConfig
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _allowed_keys_hint(loc: tuple[Any, ...]) -> str:
    section = section_at(loc[:-1])
    return "remove it" if section is None else "expected one of: " + ", ".join(section.model_fields)


def apply_override(raw: dict[str, Any], override: str) -> tuple[str, str]:
    """Apply one `dotted.key=value` (the value read as YAML) to the raw config; returns (dotted key, the override
    as given)."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected dotted.key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    set_value(raw, key, value, where=f"--set {override}")
    return key, override


def set_value(raw: dict[str, Any], key: str, value: Any, where: str | None = None) -> None:
    """Set the config value at the dotted `key` of the raw config to `value` (as YAML would give it: lists,
    numbers, strings), creating the sections on the way. `where` names the value's origin in errors.

    Raises:
        ConfigError: `key` names a section (not a value), or goes through a value as if it were a section.
    """
    where = where or f"{key}={value!r}"
    parts = key.split(".")
    section = section_at(tuple(parts))
    if section is not None and not isinstance(value, dict):
        fields = ", ".join(f"{key}.{name}" for name in section.model_fields)
        raise ConfigError(f"{where}: {key} is a section, not a value; set one of its fields: {fields}")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        parent = section_at(tuple(parts[:depth]))
        child = node.setdefault(part, {})
        is_value = parent is not None and part in parent.model_fields and section_at(tuple(parts[: depth + 1])) is None
        if not isinstance(child, dict) or is_value:
            raise ConfigError(
                f"{where}: {'.'.join(parts[: depth + 1])} is a value, not a section, so it has no field "
                f"{parts[depth + 1]!r}"
            )
        node = child
    node[parts[-1]] = value
