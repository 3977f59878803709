"""Where a session's keys may be left: the plan of removals a run starts with."""

from __future__ import annotations

import io
from pathlib import Path

from cloudtask.addresses import Address
from cloudtask.console import Console
from cloudtask.session_keys import where_left, worker_id
from cloudtask.ssh import Target
from cloudtask.store import Store
from cloudtask.store import meta as keys


def target(host: str, user: str = "root", port: int = 22) -> Target:
    return Target(Address(host), host, port, user, False)


def resolve(address: Address) -> Target:
    return target(address.host, address.user or "root", address.port or 22)


def console() -> Console:
    return Console(io.StringIO(), io.StringIO())


def test_a_key_is_looked_for_where_it_was_sent_not_on_this_runs_workers(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_session_key("key-1")
    store.key_sent("key-1", "root@old:22")
    store.key_sent("key-1", "deploy@other:2222")

    left = where_left(store, [target("new")], resolve, console())

    assert {name: lines for name, (_, lines) in left.items()} == {
        "root@old:22": ["key-1"],
        "deploy@other:2222": ["key-1"],
    }
    assert worker_id(left["deploy@other:2222"][0]) == "deploy@other:2222"


def test_a_key_on_no_worker_is_forgotten_and_one_of_unknown_workers_kept(tmp_path: Path) -> None:
    store = Store.create(tmp_path)
    store.add_session_key("unused")  # its run was killed before it connected anywhere
    store.write(keys.SESSION_KEYS, ["unused", "legacy"])  # "legacy": no worker record

    assert where_left(store, [], resolve, console()) == {}
    assert store.session_keys() == ["legacy"]  # where it went is unknown: kept

    left = where_left(store, [target("a"), target("b")], resolve, console())
    assert {name: lines for name, (_, lines) in left.items()} == {
        "root@a:22": ["legacy"],
        "root@b:22": ["legacy"],
    }
    assert store.key_workers()["legacy"] == ["root@a:22", "root@b:22"]
