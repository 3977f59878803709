"""The session store: one SQLite file per session (`SESSIONS/ID/store.sqlite`).

- `schema.py`: the tables, the schema version and the migrations run on open;
- `meta.py`: every key of the meta table, with its type;
- `writer.py`: `Store`, the only code that writes state (under the session lock);
- `reader.py`: `StoreReader`, read-only, never the lock (reports, tests, benchmarks);
- `records.py`: the rows as frozen dataclasses.

No SQL is written outside this package.
"""

from __future__ import annotations

from .queries import PENDING_CHUNK
from .reader import ReadError, StoreReader
from .records import AttemptEnd, AttemptRecord, InstanceRecord, JobRecord
from .schema import SCHEMA_VERSION, STORE_NAME
from .writer import INGEST_BATCH, Store

__all__ = [
    "INGEST_BATCH",
    "PENDING_CHUNK",
    "SCHEMA_VERSION",
    "STORE_NAME",
    "AttemptEnd",
    "AttemptRecord",
    "InstanceRecord",
    "JobRecord",
    "ReadError",
    "Store",
    "StoreReader",
]
