"""The session's metadata: every key of the `meta` table, with its type and its text.

The table holds one text value per key; this module is the one place that
names the keys and says how each value is written (`encode`) and read back
(`decode`, which raises ValueError on text cloudtask does not write). The
writer and the reader take a `Key`, never a key's name:

    store.write(meta.STATE, "running")
    reader.meta(meta.STARTED)  # float | None

Times are UNIX seconds written with repr (exact); lists and mappings are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Key(Generic[T]):
    """One meta key: its name in the table and how its value is written and read."""

    name: str
    decode: Callable[[str], T]  # ValueError: not what cloudtask writes
    encode: Callable[[T], str]
    json: bool = False  # a JSON value (damaged when it is not what cloudtask writes)
    empty: Callable[[], T] | None = None  # what an absent value reads as (else None)
    doc: str = ""

    def read(self, raw: str | None) -> T | None:
        """The stored text as a value (absent: `empty()` or None); ValueError when damaged."""
        if raw is None:
            return None if self.empty is None else self.empty()
        return self.decode(raw)


def _version(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(raw)
    return int(raw)


def _json(fits: Callable[[Any], bool]) -> Callable[[str], Any]:
    def decode(raw: str) -> Any:
        value = json.loads(raw)  # a JSONDecodeError is a ValueError
        if not fits(value):
            raise ValueError(raw)
        return value

    return decode


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())


def _key_workers(value: Any) -> bool:
    return isinstance(value, dict) and all(_texts(at) for at in value.values())


def _config(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


_text_list: Callable[[str], list[str]] = _json(_texts)

SCHEMA_VERSION: Key[int] = Key(
    "schema_version", _version, str, doc="the schema's version (schema.SCHEMA_VERSION)"
)
COMMAND: Key[str] = Key(
    "command", str, str, doc="the task command; set once every input line was stored"
)
CONFIG: Key[dict[str, Any]] = Key(
    "config", _json(_text_map), _config, json=True, empty=dict, doc="the options, without secrets"
)
STATE: Key[str] = Key(
    "state",
    str,
    str,
    doc="running while a controller drives the session, then how its last run ended: "
    "finished, incomplete, halted or aborted",
)
STARTED: Key[float] = Key("started", float, repr, doc="when the first run began")
ENDED: Key[float] = Key("ended", float, repr, doc="when the last run ended")
RUNS: Key[int] = Key("runs", int, str, doc="how many runs began")
STOP_REASON: Key[str] = Key(
    "stop_reason", str, str, doc="what halted the last run: --halt=SPEC or --budget=$N"
)
BUDGET_FIGURE: Key[float] = Key(
    "budget_figure", float, repr, doc="the dollars --budget stopped the last run on"
)
SESSION_KEYS: Key[list[str]] = Key(
    "session_keys",
    _text_list,
    json.dumps,
    json=True,
    empty=list,
    doc="public key lines of runs that may have left them on workers",
)
SESSION_KEY_WORKERS: Key[dict[str, list[str]]] = Key(
    "session_key_workers",
    _json(_key_workers),
    json.dumps,
    json=True,
    empty=dict,
    doc="per session key, the workers it was sent to and not removed from, once per copy",
)
LOCAL_RUNS: Key[list[str]] = Key(
    "local_runs",
    _text_list,
    json.dumps,
    json=True,
    empty=list,
    doc="run tags of local-provider runs",
)
SWEEP_UNTIL: Key[float] = Key(
    "sweep_until", float, repr, doc="sweeps by the session's tag go on until then"
)

KEYS: tuple[Key[Any], ...] = (
    SCHEMA_VERSION,
    COMMAND,
    CONFIG,
    STATE,
    STARTED,
    ENDED,
    RUNS,
    STOP_REASON,
    BUDGET_FIGURE,
    SESSION_KEYS,
    SESSION_KEY_WORKERS,
    LOCAL_RUNS,
    SWEEP_UNTIL,
)
# Checked when a store is opened for writing: the value must read back.
CHECKED_ON_OPEN: tuple[Key[Any], ...] = (
    CONFIG,
    SESSION_KEYS,
    SESSION_KEY_WORKERS,
    LOCAL_RUNS,
    RUNS,
    STARTED,
    ENDED,
    SWEEP_UNTIL,
    BUDGET_FIGURE,
)
