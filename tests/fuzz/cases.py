"""A case (the program, its arguments, environment, input, files, template) and the
sessions fixtures it may run against, with the mutations that put them in odd states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st
from tests.fuzz.values import PROGRAMS


@dataclass(frozen=True)
class Template:
    """A task template file: `class Fuzz(Task)` with attributes, then `Fuzz.main()`."""

    name: str = "task.py"
    attrs: tuple[tuple[str, object], ...] = ()
    base_attrs: tuple[tuple[str, object], ...] = ()  # on a base class Fuzz inherits from
    command: str | None = '"true"'  # Python source of COMMAND (None: not set)
    description: str | None = None  # Python source of DESCRIPTION

    def source(self) -> str:
        lines = ["from pathlib import Path", "", "from cloudtask import Task", "", ""]
        base = "Task"
        if self.base_attrs:
            lines.append("class Base(Task):")
            lines += [f"    {attr} = {py_source(value)}" for attr, value in self.base_attrs]
            lines += ["", ""]
            base = "Base"
        body = [f"    {attr} = {py_source(value)}" for attr, value in self.attrs]
        if self.command is not None:
            body.append(f"    COMMAND = {self.command}")
        if self.description is not None:
            body.append(f"    DESCRIPTION = {self.description}")
        lines.append(f"class Fuzz({base}):")
        lines += body or ["    pass"]
        lines += ["", "", "Fuzz.main()", ""]
        return "\n".join(lines)

    def values(self) -> list[tuple[str, object]]:
        return [*self.base_attrs, *self.attrs]


def py_source(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, Path):
        return f"Path({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(py_source(item) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(py_source(item) + ", " for item in value) + ")"
    if isinstance(value, dict):
        items = ", ".join(f"{py_source(k)}: {py_source(v)}" for k, v in value.items())
        return "{" + items + "}"
    return repr(value)


@dataclass(frozen=True)
class Case:
    """One run of a command, with everything it is given."""

    area: str
    program: str  # cloudtask, logalyzer or template
    argv: tuple[bytes, ...]
    env: tuple[tuple[str, bytes], ...] = ()
    stdin: bytes = b""
    files: tuple[tuple[str, bytes], ...] = ()  # more files in the case directory
    template: Template | None = None
    fixtures: bool = False  # the sessions directory starts with the fixture sessions
    mutations: tuple[Mutation, ...] = ()  # applied to fixture sessions first
    locked: tuple[int, ...] = ()  # fixture sessions whose lock another process holds

    @property
    def prog(self) -> str:
        if self.program == "template":
            assert self.template is not None
            return self.template.name
        return PROGRAMS[self.program].name


@dataclass(frozen=True)
class Mutation:
    """A change to fixture session `session`: a named one, or a value set in its store."""

    session: int
    name: str  # a key of NAMED_MUTATIONS, or "set"
    table: str = ""
    column: str = ""
    value: object = None

    def statements(self) -> list[tuple[str, tuple[object, ...]]]:
        """The SQL (and its parameters) of a store change. Raw SQL on purpose:
        these damage a store in ways the store's own writer never would."""
        if self.name != "set":
            return [(sql, ()) for sql in NAMED_MUTATIONS[self.name].split("; ")]
        if self.table == "meta":
            sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
            return [(sql, (self.column, self.value))]
        sql = (
            f"UPDATE {self.table} SET {self.column} = ? "
            f"WHERE rowid = (SELECT min(rowid) FROM {self.table})"
        )
        return [(sql, (self.value,))]


_NO_STORE = (
    "for n in ('store.sqlite', 'store.sqlite-wal', 'store.sqlite-shm'): (s / n).unlink(True)"
)
# File changes: Python run with s, the session directory (a Path), and shutil.
FILE_MUTATIONS = {
    "no-store": _NO_STORE,
    "empty-store": _NO_STORE + "\n(s / 'store.sqlite').write_bytes(b'')",
    "garbage-store": _NO_STORE + "\n(s / 'store.sqlite').write_bytes(b'not a database' * 100)",
    "garbage-wal": "(s / 'store.sqlite-wal').write_bytes(b'\\xff' * 4096)",
    "lock-is-dir": "(s / 'lock').unlink(True)\n(s / 'lock').mkdir()",
    "log-is-dir": "(s / 'log').unlink(True)\n(s / 'log').mkdir()",
    "workers-is-file": "shutil.rmtree(s / 'workers')\n(s / 'workers').write_bytes(b'')",
    "session-is-file": "shutil.rmtree(s)\ns.write_bytes(b'')",
}
# Store changes: SQL statements separated by "; ". SQL here, outside the store,
# because each damages a store the way no cloudtask code may (that is the test).
NAMED_MUTATIONS: dict[str, str] = {
    **FILE_MUTATIONS,
    "no-command": "DELETE FROM meta WHERE key = 'command'",
    "no-config": "DELETE FROM meta WHERE key = 'config'",
    "schema-99": "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    "schema-1": "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
    "schema-abc": "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
    "job-running": "UPDATE jobs SET state = 'running' WHERE id = 1; "
    "INSERT INTO attempts (job, worker, started) VALUES (1, 'local1', 1.0)",
    "job-lost": "UPDATE jobs SET state = 'lost' WHERE id = 1",
    "job-bogus": "UPDATE jobs SET state = 'bogus' WHERE id = 1",
    "no-jobs": "DELETE FROM jobs",
    "drop-jobs": "DROP TABLE jobs",
    "drop-meta": "DROP TABLE meta",
    "drop-attempts": "DROP TABLE attempts",
    "drop-instances": "DROP TABLE instances",
    "state-running": "UPDATE meta SET value = 'running' WHERE key = 'state'",
    "open-instance": "INSERT INTO instances (token, provider, name, intended) "
    "VALUES ('fuzz-open', 'hub', 'hub9', 1.0)",
    "open-instance-unknown-provider": "INSERT INTO instances (token, provider, name, intended) "
    "VALUES ('fuzz-odd', 'nosuchprovider', 'x1', 1.0)",
}
# Values a mutation may put where cloudtask reads commands, options or process tags:
# only harmless ones (a stored command is run on resume).
GUARDED_META = {
    "command": ["true", "", "exit 3", "'"],
    "config": [
        "{", "[1, 2]", "null", '""', "{}", '{"split": "x"}', '{"timeout": "-1"}',
        '{"provider": "bogus"}', '{"nope": 1}', '{"sessions": "/dev/null"}',
        '{"workers": "nohost.invalid"}', '{"pre": "exit 3"}', '{"split": 99999999999999999999}',
        '{"force": "maybe"}', '{"force": true}', '{"report": "py: 1/0"}', '{"halt": "fail=1"}',
        '{"joblog": "/dev/full"}', '{"split": null}', '{"timeout": 1e999}', '{"user": 5}',
    ],
    "local_runs": ["x", "{", "[5]", "[null]", '["", "fuzz-tag-nowhere"]', "[[]]", '"s"', "{}"],
    "session_keys": ["x", "{", "[5]", '["not a key"]', "[]", '"s"'],
    "session_key_workers": ["x", "[]", '{"k": 5}', '{"k": [5]}', "{}", '{"k": ["bad@@address"]}'],
}  # fmt: skip
FREE_META = ["started", "ended", "state", "runs", "schema_version", "sweep_until"]
FREE_COLUMNS = {
    "jobs": ["line", "state", "attempts"],
    "attempts": ["job", "worker", "started", "ended", "outcome", "exit_status", "signal", "tail"],
    "instances": [
        "provider", "name", "size", "hourly_price", "instance_id", "address", "intended",
        "launched", "running", "destroyed", "note",
    ],
}  # fmt: skip
sql_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.none(),
    st.sampled_from(
        ["pending", "running", "ok", "failed", "timeout", "lost", "bogus", "", "1e999", "-1"]
    ),
)
FIXTURE_IDS = (1, 2, 3, 4, 5)
session_ids = st.sampled_from(FIXTURE_IDS)
mutations = st.one_of(
    st.builds(Mutation, session_ids, st.sampled_from(sorted(NAMED_MUTATIONS))),
    st.builds(
        lambda session, key, value: Mutation(session, "set", "meta", key, value),
        session_ids,
        st.sampled_from(FREE_META),
        sql_values,
    ),
    st.sampled_from(sorted(GUARDED_META)).flatmap(
        lambda key: st.builds(
            lambda session, value: Mutation(session, "set", "meta", key, value),
            session_ids,
            st.sampled_from(GUARDED_META[key]),
        )
    ),
    st.sampled_from(sorted(FREE_COLUMNS)).flatmap(
        lambda table: st.builds(
            lambda session, column, value: Mutation(session, "set", table, column, value),
            session_ids,
            st.sampled_from(FREE_COLUMNS[table]),
            sql_values,
        )
    ),
)

# Sessions made once per process and copied into each case that wants them:
# (argv, stdin) of the cloudtask run that makes each; the fifth is the third
# with a launched instance left open on the hub.
FIXTURE_RUNS: tuple[tuple[list[str], bytes], ...] = (
    (["test"], b"1 = 1\n2 = 2\n"),  # 1: finished, every job ok
    (["--retries=1", "test"], b"1 = 1\n1 = 2\n"),  # 2: one job failed
    (["--halt=fail=1", "test"], b"1 = 2\n1 = 1\n1 = 1\n"),  # 3: halted, two pending
    (["--timeout=0.3", "sleep"], b"0\n5\n"),  # 4: one job timed out
)
CLOUD_FIXTURE_SQL = (
    "INSERT INTO instances (token, provider, name, size, hourly_price, intended) "
    "VALUES ('fuzz-token', 'hub', 'hub1', 'small', 0.1, 1.0); "
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('config', "
    '\'{"halt": "fail=1", "hub_url": "http://127.0.0.1:<PORT>/api/", "provider": "hub", '
    '"sessions": "sessions"}\')'
)

SAFE_PROGRAMS = {"true", "-", "--split=2"}  # the first word of a command cases may run
