"""Config files: each YAML file is read once, at load, into a frozen pydantic model that refuses unknown keys.

A whole file is a `FileSettings` (pydantic-settings): its values come from the YAML file, and the environment
overrides any of them: `env_prefix` + the key in capitals, nested keys joined by `__` (for serving.yaml,
`DIAMOND_SERVING_PORT=3001`, `DIAMOND_SERVING_DRIFT__PSI_ALERT=0.3`); a list or mapping is given as JSON, and
`null` clears an optional setting. A field may name its own variable instead (`DIAMOND_STORE_URL`). A section
of a file is a `Section`.

Anything wrong becomes one `ConfigError` whose message names the file and the dotted key, and the variable
when the value came from the environment:
`serving.yaml: alerts.rules.0.min_tier: 'platinum' is not one of diamond, gold, silver, bronze`,
`serving.yaml: port: input should be a valid integer ..., got 'abc' (from $DIAMOND_SERVING_PORT)`.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def _numbers_only(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A number setting given `true`/`false` is a mistake, not 1 or 0 (pydantic's lax mode would take it)."""
    if isinstance(value, bool) and info.field_name is not None:
        field = cls.model_fields[info.field_name]
        if _takes_number(field.annotation) and not _takes(field.annotation, bool):
            raise ValueError("input should be a number, not true or false")
    return value


def _arms(tp: Any) -> list[Any]:
    """The types a value may take under Annotated[...] and unions."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        return [t for arm in get_args(tp) for t in _arms(arm)]
    return [tp]


def _takes_number(tp: Any) -> bool:
    return any(t in (int, float) for t in _arms(tp))


def _takes(tp: Any, kind: type) -> bool:
    return any(t is kind or t is Any for t in _arms(tp))


class Section(BaseModel):
    """One section of a config file: typed, immutable, unknown keys refused; numbers are finite and never
    `true`/`false`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _numbers = field_validator("*", mode="before")(classmethod(_numbers_only))


class FileSettings(BaseSettings):
    """One whole config file. Sources, strongest first: the environment, then the values given (the YAML
    file's, through `load` or `parse`), then the defaults. Subclasses set `env_prefix`."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_nested_delimiter="__",
        env_ignore_empty=True,  # an empty variable is unset, as it always was for DIAMOND_STORE_URL & co.
        env_parse_none_str="null",
        validate_by_name=True,  # the YAML file names a setting by its key, the environment by its variable
        loc_by_alias=False,
        allow_inf_nan=False,
    )
    _file: str = PrivateAttr(default="")
    _numbers = field_validator("*", mode="before")(classmethod(_numbers_only))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    @property
    def file(self) -> str:
        """The file these settings were read from, for messages ('' when built in code)."""
        return self._file


def empty_if_none(value: Any) -> Any:
    """A section written as `key:` (null) or left empty means its defaults."""
    return {} if value is None else value


OrEmpty = BeforeValidator(empty_if_none)  # Annotated[SomeSection, OrEmpty]: null is the section's defaults


def read_yaml(file: Path, *, explicit: bool, what: str) -> dict[str, Any] | None:
    """The mapping in a YAML file; None when the file is absent and was not asked for by name (the defaults
    apply)."""
    if not file.is_file():
        if explicit:
            raise ConfigError(f"{file}: no such {what}")
        return None
    return yaml_mapping(file.read_text(encoding="utf-8"), str(file))


def yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """The mapping a YAML document holds (empty for an empty document); `source` names it in messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    return {str(k): v for k, v in raw.items()}


def load(model: type[M], path: str | Path | None, *, default: Path, env: str | None = None, what: str) -> M:
    """`model` from `path`, else the file named by $`env`, else `default`. A file given as `path` must exist;
    otherwise a missing file means the defaults (and the environment)."""
    file = Path(path or (os.environ.get(env) if env else None) or default)
    return parse(model, read_yaml(file, explicit=bool(path), what=what) or {}, str(file))


def parse(model: type[M], raw: Mapping[str, Any], source: str) -> M:
    """`model` from the mapping read from `source` (a file name, for messages); settings take the environment
    on top. Raises ConfigError naming the source, the key and the variable."""
    if issubclass(model, FileSettings) and (private := sorted(str(k) for k in raw if str(k).startswith("_"))):
        # never a setting, and BaseSettings would take `_env_prefix` & co. as its own arguments
        raise ConfigError(f"{source}: {_unknown(private, sorted(model.model_fields))}")
    try:
        if issubclass(model, FileSettings):
            settings = model(**{str(k): v for k, v in raw.items()})
            settings._file = source
            return settings
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, model)) from None
    except SettingsError as exc:  # a variable holding a list or mapping that is not JSON
        raise ConfigError(_settings_error(exc, source, model)) from None


def describe(exc: ValidationError, source: str, model: type[BaseModel], prefix: Loc = ()) -> str:
    """One message for all of a validation's errors: `source: key: problem; key: problem`. `prefix`: where
    `model` sits in the file (e.g. ("alerts",) for a section validated on its own)."""
    settings = model if issubclass(model, FileSettings) else None
    items: list[str | tuple[str, ...]] = []  # a tuple: where the unknown keys of that section are listed
    unknown: dict[tuple[str, ...], list[str]] = {}
    known: dict[tuple[str, ...], list[str]] = {}
    for err in exc.errors(include_url=False):
        parts, leaf, holder = _walk(model, tuple(err["loc"]))
        key = ".".join([*map(str, prefix), *parts])
        origin = _origin(settings, parts) if settings is not None else ""
        kind, msg, value = err["type"], err["msg"], err.get("input")
        if kind == "extra_forbidden":
            parent = tuple(parts[:-1])
            if parent not in unknown:
                items.append(parent)
            unknown.setdefault(parent, []).append(key + origin)
            known[parent] = sorted(holder.model_fields) if holder is not None else []
            continue
        if kind == "missing":
            text = "missing (required)"
        elif kind == "literal_error":
            choices = get_args(leaf) if get_origin(leaf) is Literal else ()
            expected = ", ".join(map(str, choices)) if choices else err.get("ctx", {}).get("expected", "")
            items.append(f"'{key}' is {value!r}; expected one of {expected}{origin}")
            continue
        elif kind in ("value_error", "assertion_error") or kind.startswith("config_"):
            text = re.sub(r"^(Value|Assertion) error, ", "", msg)
        else:
            text = msg[:1].lower() + msg[1:]
            if isinstance(value, str | int | float | bool) or value is None:
                text += f", got {_short(value)}"
        items.append(f"{key}: {text}{origin}" if key else f"{text}{origin}")
    return f"{source}: " + "; ".join(
        item if isinstance(item, str) else _unknown(unknown[item], known[item]) for item in items
    )


def _unknown(keys: list[str], known: list[str]) -> str:
    listed = f" (known: {', '.join(known)})" if known else ""
    return f"unknown key(s) {', '.join(keys)}{listed}"


def invalid(model: type[BaseModel], problems: Iterable[tuple[Loc, str, Any]]) -> None:
    """Raise a ValidationError of `model` for checks that span several keys, each problem placed at its own
    key: (location inside the model, message, the offending value). Inside a validator, pydantic nests the
    locations under the model's own, so the message names the exact key."""
    details = [
        InitErrorDetails(type=PydanticCustomError("config_rule", message), loc=loc, input=value)
        for loc, message, value in problems
    ]
    if details:
        raise ValidationError.from_exception_data(model.__name__, details)


# --- the key behind a pydantic error location ---------------------------------------------------------------


def _walk(model: type[BaseModel], loc: Loc) -> tuple[list[str], Any, type[BaseModel] | None]:
    """The key parts of an error location (pydantic's union-member tags dropped), the type at the end, and
    the model holding the last key (for the known keys of an unknown one)."""
    tp: Any = model
    parts: list[str] = []
    holder: type[BaseModel] | None = None
    for item in loc:
        tp = _unwrap(tp)
        if _is_union(tp):  # the item names which member of a union failed: not a key
            tp = None
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            holder = tp
            field = tp.model_fields.get(str(item))
            tp = field.annotation if field is not None else None
        elif get_origin(tp) in (dict, Mapping):
            holder, tp = None, get_args(tp)[1] if get_args(tp) else None
            if item == "[key]":
                continue
        elif get_origin(tp) in (tuple, list, Sequence):
            holder, tp = None, get_args(tp)[0] if get_args(tp) else None
        else:
            holder, tp = None, None
        parts.append(str(item))
    return parts, _unwrap(tp), holder


def _unwrap(tp: Any) -> Any:
    """The type under Annotated[...] and `| None`."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp) and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- the environment variable behind a value ----------------------------------------------------------------


def _env_names(settings: type[FileSettings], parts: Sequence[str]) -> list[str]:
    """Every variable that could set the key `parts`, the whole first section first."""
    field = settings.model_fields.get(parts[0]) if parts else None
    if field is None:
        return []
    alias = field.validation_alias
    first = alias if isinstance(alias, str) else f"{settings.model_config.get('env_prefix', '')}{parts[0]}"
    return [first] + [f"{first}__{'__'.join(parts[1:i])}" for i in range(2, len(parts) + 1)]


def _origin(settings: type[FileSettings], parts: Sequence[str]) -> str:
    """' (from $VAR)' when the environment set the value at `parts` (or the section holding it)."""
    names = _env_names(settings, parts)
    if not names:
        return ""
    present = {k.lower(): k for k, v in os.environ.items() if v != ""}
    for name in reversed(names):  # the most specific variable that is set
        if name.lower() in present:
            return f" (from ${present[name.lower()]})"
    nested = sorted(k for k in present if k.startswith(names[-1].lower() + "__"))
    return f" (from ${present[nested[0]]})" if nested else ""


def _settings_error(exc: SettingsError, source: str, model: type[BaseModel]) -> str:
    """pydantic-settings' own error (a variable for a list or mapping that is not JSON), with the key."""
    found = re.search(r'field "([^"]+)"', str(exc))
    key = found.group(1) if found else "?"
    origin = _origin(model, [key]) if issubclass(model, FileSettings) and found else ""
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    return f"{source}: {key}: not valid JSON{cause}{origin}"
