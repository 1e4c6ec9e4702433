"""The contract tables as Diamond's generators write them: one home for their Arrow schemas and helpers.

Two generators write history folders: the synthetic history (`features.datasets.synthetic`, ``diamond data
synthetic``) and the retention world (`features.datasets.world`, ``diamond simulate``). Both take their
table schemas from here, and every column here is derived from the history contract itself
(`features.history.CONTRACT`: its column kinds give the Arrow types), so a generator can drift neither from
the contract nor from the other generator. What the contract leaves open is stated once below: integer
quantities, and the customers' attributes the generators draw (the contract keeps any attribute column).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from features.history import CONTRACT

__all__ = [
    "ATTRIBUTES",
    "CANCELLATIONS_SCHEMA",
    "INTERACTIONS_SCHEMA",
    "TIMESTAMP",
    "TRANSACTIONS_SCHEMA",
    "contract_schema",
    "fixed_width_ids",
    "fresh_sibling",
    "replace_dir",
    "timestamps",
]

TIMESTAMP = pa.timestamp("us")
"""Every generated time: naive UTC, microseconds."""
_KIND_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "timestamp": TIMESTAMP,
    "number": pa.float64(),
    "text": pa.string(),
}
_INTEGERS = {("transactions", "quantity")}  # numbers the generators write as whole numbers
ATTRIBUTES: dict[str, pa.DataType] = {
    "segment": pa.string(),
    "region": pa.string(),
    "acquisition_channel": pa.string(),
    "plan": pa.string(),
    "age": pa.int64(),
    "is_subscriber": pa.bool_(),
    "email_opt_in": pa.bool_(),
}
"""The customers' static attributes the generators write (the contract keeps any such column): their types."""


def contract_schema(table: str, columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of contract table `table` with these columns, in this order: each column's type
    comes from its kind in `CONTRACT` (or from `ATTRIBUTES` for a customers attribute). ValueError names an
    unknown table, a column the contract does not have, or a required column left out."""
    if table not in CONTRACT:
        raise ValueError(f"{table!r} is not a contract table (one of {', '.join(CONTRACT)})")
    spec = CONTRACT[table]
    kinds = {**spec.required, **spec.optional}
    fields = []
    for col in columns:
        if col in kinds:
            kind_type = pa.int64() if (table, col) in _INTEGERS else _KIND_TYPES[kinds[col]]
            fields.append((col, kind_type))
        elif spec.keeps_attributes and col in ATTRIBUTES:
            fields.append((col, ATTRIBUTES[col]))
        else:
            raise ValueError(f"{table}: column {col!r} is not in the history contract")
    missing = [col for col in spec.required if col not in columns]
    if missing:
        raise ValueError(f"{table}: the contract requires {', '.join(missing)}")
    return pa.schema(fields)


TRANSACTIONS_SCHEMA = contract_schema(
    "transactions",
    ("customer_id", "timestamp", "amount", "quantity", "category", "channel", "order_id", "margin"),
)
INTERACTIONS_SCHEMA = contract_schema("interactions", ("customer_id", "timestamp", "type", "value"))
CANCELLATIONS_SCHEMA = contract_schema("cancellations", ("customer_id", "timestamp"))


def timestamps(seconds: np.ndarray, start: datetime) -> pa.Array:
    """Whole seconds since `start` (naive UTC) -> an Arrow timestamp[us] array (naive, UTC)."""
    epoch = int(start.replace(tzinfo=UTC).timestamp())
    us = (np.asarray(seconds, dtype=np.int64) + epoch) * 1_000_000
    return pa.array(us.view("datetime64[us]"), type=TIMESTAMP)


def fixed_width_ids(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> pa.StringArray:
    """Format integers as ``prefix + zero-padded number + suffix`` straight into an arrow string buffer."""
    n = len(numbers)
    head, tail = prefix.encode(), suffix.encode()
    row = len(head) + width + len(tail)
    buf = np.empty((n, row), dtype=np.uint8)
    if head:
        buf[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    if tail:
        buf[:, len(head) + width :] = np.frombuffer(tail, dtype=np.uint8)
    x = np.asarray(numbers, dtype=np.int64).copy()
    for j in range(width - 1, -1, -1):
        buf[:, len(head) + j] = 48 + x % 10
        x //= 10
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(row)  # chunks stay far below 2**31 bytes
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def fresh_sibling(out: Path, tag: str) -> Path:
    """Create a new hidden folder next to ``out`` (same file system, so renames are atomic; honours umask)."""
    while True:
        path = out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path


def replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` folder to ``out``, replacing an existing ``out`` only if allowed."""
    if out.is_dir():
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
            old = fresh_sibling(out, "old")
            os.rename(out, old / out.name)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
            return
        out.rmdir()
    os.rename(tmp, out)
