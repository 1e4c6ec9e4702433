"""Dataset config: how a history folder maps onto Diamond's customer-history contract.

A history folder may carry a `dataset.yaml`; every key is optional. Users keep their own file
names, column names and date formats; the config says how to read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_FILE = "dataset.yaml"
TABLE_NAMES = ("transactions", "customers", "interactions", "cancellations")
ON_INVALID = ("error", "drop")
DUPLICATES = ("error", "drop", "keep")
CHURN = ("non_contractual", "contractual", "mixed")


class ConfigError(ValueError):
    """A dataset config that cannot be used; the message names the file and the key."""


def read_settings(file: Path, explicit: bool, known: Iterable[str], what: str) -> dict[str, Any] | None:
    """A YAML mapping of settings from `file`, refusing unknown keys; None when the file is absent and was
    not asked for by name (the caller's defaults apply)."""
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: no such {what}")
        return None
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of settings")
    known = set(known)
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{file}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return raw


@dataclass(frozen=True)
class TableConfig:
    """Where one contract table lives and how its columns are named and formatted."""

    file: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # contract name -> name in the file
    timestamp_format: str | None = None  # strptime format, e.g. "%Y%m%d"; None: ISO 8601


@dataclass(frozen=True)
class DatasetConfig:
    """Everything Diamond needs to know about one history folder."""

    name: str = "history"
    description: str = ""
    as_of: datetime | None = None  # events after it are invalid
    on_invalid: Literal["error", "drop"] = "error"
    duplicates: Literal["error", "drop", "keep"] = "error"
    churn: Literal["non_contractual", "contractual", "mixed"] = "non_contractual"
    tables: dict[str, TableConfig] = field(default_factory=dict)

    def table(self, name: str) -> TableConfig:
        return self.tables.get(name, TableConfig())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> DatasetConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
        known = {"name", "description", "as_of", "on_invalid", "duplicates", "churn", "tables"}
        _reject_unknown(raw, known, source, "")
        _check_choice(raw, "on_invalid", ON_INVALID, source)
        _check_choice(raw, "duplicates", DUPLICATES, source)
        _check_choice(raw, "churn", CHURN, source)
        tables_raw = raw.get("tables") or {}
        if not isinstance(tables_raw, dict):
            raise ConfigError(f"{source}: 'tables' must be a mapping of table name to settings")
        tables = {}
        for name, spec in tables_raw.items():
            if name not in TABLE_NAMES:
                raise ConfigError(
                    f"{source}: unknown table 'tables.{name}' (known: {', '.join(TABLE_NAMES)})"
                )
            spec = spec or {}
            if not isinstance(spec, dict):
                raise ConfigError(f"{source}: 'tables.{name}' must be a mapping")
            _reject_unknown(spec, {"file", "columns", "timestamp_format"}, source, f"tables.{name}.")
            columns = spec.get("columns") or {}
            if not isinstance(columns, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
            ):
                raise ConfigError(
                    f"{source}: 'tables.{name}.columns' must map contract column names to file column names"
                )
            tables[name] = TableConfig(
                file=spec.get("file"), columns=dict(columns), timestamp_format=spec.get("timestamp_format")
            )
        return cls(
            name=str(raw.get("name", "history")),
            description=str(raw.get("description", "")),
            as_of=parse_as_of(raw.get("as_of"), f"{source}: 'as_of'"),
            on_invalid=raw.get("on_invalid", "error"),
            duplicates=raw.get("duplicates", "error"),
            churn=raw.get("churn", "non_contractual"),
            tables=tables,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(raw or {}, str(path))

    @classmethod
    def for_folder(cls, folder: str | Path) -> DatasetConfig:
        """The folder's own `dataset.yaml`, or the defaults when it has none."""
        path = Path(folder) / CONFIG_FILE
        return cls.from_yaml(path) if path.is_file() else cls()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.as_of is not None:
            out["as_of"] = self.as_of.isoformat()
        out.update(on_invalid=self.on_invalid, duplicates=self.duplicates, churn=self.churn)
        if self.tables:
            out["tables"] = {
                name: {k: v for k, v in vars(t).items() if v not in (None, {})}
                for name, t in self.tables.items()
            }
        return out


def parse_as_of(value: Any, what: str = "as_of") -> datetime | None:
    """A naive datetime from a YAML/CLI value; a bare date means the end of that day."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _naive_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, 23, 59, 59, 999999)
    text = str(value).strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, 23, 59, 59, 999999)
        return _naive_utc(datetime.fromisoformat(text))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an ISO date or timestamp (e.g. 1998-06-30)") from None


def _naive_utc(value: datetime) -> datetime:
    """Histories hold naive UTC timestamps; an aware value is converted, a naive one kept."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _reject_unknown(raw: dict[str, Any], known: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


def _check_choice(raw: dict[str, Any], key: str, choices: tuple[str, ...], source: str) -> None:
    if key in raw and raw[key] not in choices:
        raise ConfigError(f"{source}: '{key}' is {raw[key]!r}; expected one of {', '.join(choices)}")
