"""The watchdog gives up within a bounded time when the cloud's API never answers,
and logs why (issue 19, item 3). Run in-process: its real sweep against an API
URL nobody listens on, with a short limit instead of ten minutes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from tests.support.hubserver import unreachable_url

from cloudtask import watchdog
from cloudtask.session import SessionDir
from cloudtask.store import Store


def test_a_watchdog_whose_cloud_never_answers_gives_up_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = SessionDir.create(tmp_path)
    store = Store.create(session.path)
    store.intend_instance("t0ken", "hub", "hub1", "t3.small", None, time.time())
    store.instance_launched("t0ken", "i-0123", time.time())
    store.close()
    setup = {
        "sessions": str(tmp_path),
        "session": session.id,
        "options": {"provider": "hub", "hub-apikey": "k", "hub-url": unreachable_url()},
    }

    started = time.monotonic()
    status = watchdog.watch(io.StringIO(json.dumps(setup) + "\n"), give_up_after=4)
    took = time.monotonic() - started

    assert status == 1
    assert took < 30, f"the watchdog went on for {took:.0f} s"
    said = capsys.readouterr().out
    assert "sweep failed" in said
    assert "giving up (no sweep settled it within 4 s)" in said
    assert f"cloudtask-destroy-workers --session={session.id}" in said
    still_open = Store.open(session.path).instances(open_only=True)
    assert [record.name for record in still_open] == ["hub1"]
