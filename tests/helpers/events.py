"""The oracle of the store's recent events (serving.store.packed_event_batches): each customer's latest
events as one row per event, by a plain window function over the whole history. Slow and obviously
right; the store packs the same events in parts of customers (tests/unit/test_dashboard.py), which
`stored_events` reads back as one row per event."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from features.history import History
from serving import store
from serving.store import RECENT_EVENTS


def last_events(history: History, n: int = RECENT_EVENTS) -> pd.DataFrame:
    """Each customer's `n` latest events (purchases, interactions, cancellations), newest first; events at
    the same time by kind, then in the order of their table: customer_id, timestamp, kind, amount
    (purchases and valued interactions), detail."""
    parts, con = [], duckdb.connect()
    raw = ("category", "channel", "order_id", "quantity", "type")  # what details are made of, as text
    try:
        for name, kind, amount, shown in (
            ("transactions", "purchase", "amount", raw[:4]),
            ("interactions", "interaction", "value", raw[4:]),
            ("cancellations", "cancellation", None, ()),
        ):
            table = getattr(history, name)
            if table is None:
                continue
            con.register(name, table.append_column("seq", pa.array(np.arange(table.num_rows))))
            value = f"CAST({amount} AS DOUBLE)" if amount and amount in table.column_names else "NULL"
            extra = [
                f"CAST({c} AS VARCHAR) AS {c}" if c in shown and c in table.column_names else f"NULL AS {c}"
                for c in raw
            ]
            parts.append(
                f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, timestamp, '{kind}' AS kind, seq, "
                f"{value} AS amount, {', '.join(extra)} FROM {name}"
            )
        quantity = "'quantity ' || regexp_replace(quantity, '\\.0+$', '')"
        detail = f"concat_ws(', ', category, channel, 'order ' || order_id, {quantity}, type)"
        events = con.sql(
            f"SELECT customer_id, timestamp, kind, amount, {detail} AS detail FROM "
            f"({' UNION ALL '.join(parts)}) QUALIFY row_number() OVER "
            f"(PARTITION BY customer_id ORDER BY timestamp DESC, kind, seq) <= {int(n)} "
            "ORDER BY customer_id, timestamp DESC, kind, seq"
        ).to_arrow_table()
    finally:
        con.close()
    text = {
        c: pd.Series(events.column(c).to_pylist(), dtype=object) for c in ("customer_id", "kind", "detail")
    }
    return pd.DataFrame(
        {
            "customer_id": text["customer_id"],
            "timestamp": pd.Series(events.column("timestamp").to_numpy(zero_copy_only=False)),
            "kind": text["kind"],
            "amount": pd.Series(events.column("amount").to_numpy(zero_copy_only=False), dtype=np.float64),
            "detail": text["detail"],
        }
    )


def stored_events(parts: pd.DataFrame) -> pd.DataFrame:
    """The store's recent events (`store.packed_event_batches`' parts, in any order) as one row per event:
    customer_id and store.EVENT_COLUMNS, in part order."""
    held = [store.unpack_event_part(b) for b in parts.sort_values("part")["batch"]]
    columns = ["customer_id", *store.EVENT_COLUMNS]
    if not held:
        return pd.DataFrame(columns=columns)
    return pd.concat(held, ignore_index=True)[columns]
