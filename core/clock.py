"""The one time convention of Diamond: naive datetimes in UTC, in histories, features and every store table
(SQLite keeps no time zone). Aware values are converted at the edges with `utc_naive`."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd


def utc_naive(value: datetime | pd.Timestamp | str) -> datetime:
    """A time as a naive UTC datetime, how the tables store it; an aware value is converted to UTC."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def utc_now() -> datetime:
    """Now, as a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)
