"""Dataset config: how a history folder maps onto Diamond's customer-history contract.

A history folder may carry a `dataset.yaml`; every key is optional. Users keep their own file
names, column names and date formats; the config says how to read them. It is read into frozen pydantic
models that refuse unknown keys (core.config); unlike the project's own config files it takes no environment
overrides: the file travels with its history.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from core.config import ConfigError, OrEmpty, Section, parse, read_yaml

CONFIG_FILE = "dataset.yaml"


def parse_as_of(value: object, what: str = "as_of") -> datetime | None:
    """A naive datetime from a YAML/CLI value; a bare date means the end of that day. A bad value raises
    ConfigError naming `what` (e.g. the option)."""
    try:
        return _as_of(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _as_of(value: object) -> datetime | None:
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
        raise ValueError(f"{value!r} is not an ISO date or timestamp (e.g. 1998-06-30)") from None


def _naive_utc(value: datetime) -> datetime:
    """Histories hold naive UTC timestamps; an aware value is converted, a naive one kept."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


class TableConfig(Section):
    """Where one contract table lives and how its columns are named and formatted."""

    file: str | None = None
    columns: Annotated[dict[str, str], OrEmpty] = Field(default_factory=dict)  # contract name -> file's
    timestamp_format: str | None = None  # strptime format, e.g. "%Y%m%d"; None: ISO 8601


Table = Annotated[TableConfig, OrEmpty]


class TablesConfig(Section):
    """`tables:` one entry per contract table, each optional."""

    transactions: Table = TableConfig()
    customers: Table = TableConfig()
    interactions: Table = TableConfig()
    cancellations: Table = TableConfig()


TABLE_NAMES: tuple[str, ...] = tuple(TablesConfig.model_fields)  # the contract's tables, in that order


class DatasetConfig(Section):
    """Everything Diamond needs to know about one history folder."""

    model_config = ConfigDict(coerce_numbers_to_str=True)  # `name: 2024` is the name "2024"

    name: str = "history"
    description: str = ""
    as_of: Annotated[datetime | None, BeforeValidator(_as_of)] = None  # events after it are invalid
    on_invalid: Literal["error", "drop"] = "error"
    duplicates: Literal["error", "drop", "keep"] = "error"
    churn: Literal["non_contractual", "contractual", "mixed"] = "non_contractual"
    # timestamps in other years are misreads (a two-digit year read as 0097, a placeholder 0001-01-01)
    plausible_years: tuple[int, int] = (1900, 2100)
    # events more than this many days after the bulk (99 %) of a table's events are refused, and so is a run
    # as of more than this after the last event; null: no such check
    max_gap_days: Annotated[int, Field(gt=0)] | None = 365
    tables: Annotated[TablesConfig, OrEmpty] = TablesConfig()

    @model_validator(mode="after")
    def _years_in_order(self) -> DatasetConfig:
        low, high = self.plausible_years
        if low > high:
            raise ValueError(f"plausible_years: {low} is after {high}; give [first year, last year]")
        return self

    def table(self, name: str) -> TableConfig:
        """The settings of one of TABLE_NAMES."""
        table: TableConfig = getattr(self.tables, name)
        return table

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetConfig:
        """The dataset config in `path` (which must exist)."""
        return parse(cls, read_yaml(Path(path), explicit=True, what="dataset config") or {}, str(path))

    @classmethod
    def for_folder(cls, folder: str | Path) -> DatasetConfig:
        """The folder's own `dataset.yaml`, or the defaults when it has none."""
        path = Path(folder) / CONFIG_FILE
        return cls.from_yaml(path) if path.is_file() else cls()
