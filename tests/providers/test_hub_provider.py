"""The hub provider against the test Hub: real HTTP on 127.0.0.1, real httpx.

The test Hub (tests/support/hubserver.py) boots nothing: instances get addresses in
198.18.0.0/15 that are never contacted. The cases every cloud shares are in
test_clouds.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.clouds import run, until_running
from tests.support.hubserver import FakeBackend, HubServer, silent_url

from cloudtask.config import Config
from cloudtask.errors import UsageError
from cloudtask.providers.cloud import (
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
    with_retries,
)
from cloudtask.providers.hub import (
    DEFAULT_SIZE,
    HubCloud,
    error_detail,
    instance_state,
    make_label,
    parse_label,
    to_instance,
)
from cloudtask.providers.launched import sweep
from cloudtask.store import Store

APIKEY = "hub-test-key-5f1c9a"
BOOT = 0.2  # seconds the fake backend takes to "boot"
QUICK = (0.01, 0.01, 0.01)  # retry delays


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(APIKEY, FakeBackend(boot_delay=BOOT)) as server:
        yield server


def hub_config(hub: HubServer, **options: Any) -> Config:
    return Config(provider="hub", hub_apikey=APIKEY, hub_url=hub.url, **options)


def spec(session: int = 7, token: str = "0123456789abcdef", name: str = "hub1") -> LaunchSpec:
    return LaunchSpec(session, token, name, "ssh-ed25519 AAAAsessionkey cloudtask")


# -- launching -----------------------------------------------------------------


def test_launch_sends_the_options_and_a_label_naming_session_and_token(hub: HubServer) -> None:
    config = hub_config(
        hub,
        snapshot_id="snap-42",
        ec2_region="eu-west-1",
        ec2_size="t3.medium",
        ec2_type="s3",
        backup_id="1234",
    )
    cloud = HubCloud.from_config(config)
    assert cloud.size == "t3.medium"

    instance_id = run(cloud, lambda cloud: cloud.launch(spec(session=7, name="hub3")))

    assert hub.launches == [
        {
            "region": "eu-west-1",
            "size": "t3.medium",
            "type": "s3",
            "label": "cloudtask-session=7 cloudtask-token=0123456789abcdef name=hub3",
            "backup_id": "1234",
        }
    ]
    assert hub.records[instance_id]["image"] == "snap-42"
    assert hub.requests["launch"] == 1


def test_launch_defaults_to_core_in_us_east_1(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub))
    assert cloud.size == DEFAULT_SIZE == "t3.small"

    instance_id = run(cloud, lambda cloud: cloud.launch(spec()))

    assert hub.records[instance_id]["image"] == "core"
    (attributes,) = hub.launches
    assert attributes["region"] == "us-east-1"
    assert attributes["type"] == "ebs"
    assert "backup_id" not in attributes


def test_an_ami_is_launched_by_its_id(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub, ami_id="ami-0abc"))
    instance_id = run(cloud, lambda cloud: cloud.launch(spec()))
    assert hub.records[instance_id]["image"] == "ami-0abc"


def test_an_unknown_appliance_is_a_permanent_error(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub, snapshot_id="no-such-appliance"))
    with pytest.raises(ProviderError) as caught:
        run(cloud, lambda cloud: with_retries(lambda: cloud.launch(spec()), "launch", QUICK))
    assert not caught.value.transient
    assert "404" in str(caught.value) and "Appliance.NotFound" in str(caught.value)
    assert hub.requests["launch"] == 1  # not retried


# -- describing ----------------------------------------------------------------


def test_describe_is_pending_then_running_with_address_and_host_keys(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub))

    async def body(cloud: HubCloud) -> tuple[str, list[CloudInstance]]:
        instance_id = await cloud.launch(spec(session=9, token="feedc0de"))
        return instance_id, await until_running(cloud, instance_id)

    instance_id, seen = run(cloud, body)

    assert seen[0].state is InstanceState.PENDING and seen[0].address is None
    running = seen[-1]
    assert running.state is InstanceState.RUNNING
    assert running.id == instance_id
    assert running.address is not None and running.address.startswith("198.18.")
    assert (running.session, running.token) == (9, "feedc0de")
    assert running.host_keys == tuple(hub.records[instance_id]["sshkeys"])
    assert len(running.host_keys) == 1 and running.host_keys[0].startswith("ssh-ed25519 AAAA")
    assert hub.requests["instance"] == len(seen)


def test_a_wrong_url_is_an_error_not_gone(hub: HubServer) -> None:
    # A 404 page that is not the Hub's must not pass for "no such instance":
    # instances would be left running while cloudtask believed them gone.
    wrong = hub.url.replace("/api/", "/nothing-here/")
    cloud = HubCloud.from_config(dataclasses.replace(hub_config(hub), hub_url=wrong))

    async def body(cloud: HubCloud) -> list[ProviderError]:
        errors = []
        for call in (lambda: cloud.describe("i-1"), lambda: cloud.destroy("i-1")):
            with pytest.raises(ProviderError) as caught:
                await call()
            errors.append(caught.value)
        return errors

    for error in run(cloud, body):
        assert "404" in str(error) and not error.transient


# -- listing (the sweep) -------------------------------------------------------


def test_instances_of_a_session_are_found_by_their_label(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub))

    async def body(cloud: HubCloud) -> dict[str, Any]:
        ours = [await cloud.launch(spec(7, f"a{n}", f"hub{n}")) for n in range(2)]
        theirs = await cloud.launch(spec(8, "b0", "hub1"))
        # A launch whose answer is lost, and the listing that would find it
        # fails too: the instance exists, its id never came back.
        hub.fail(503, endpoint="launch", after=True)
        hub.fail(503, endpoint="instances")
        with pytest.raises(ProviderError) as caught:
            await cloud.launch(spec(7, "lost", "hub9"))
        assert caught.value.transient
        # An instance made by hand in the same account, and a terminated one.
        async with httpx.AsyncClient(headers={"apikey": APIKEY}) as client:
            made = await client.post(hub.url + "amazon/launch/core/", data={"label": "my db"})
            made.raise_for_status()
        ended = await cloud.launch(spec(7, "ended", "hub8"))
        await cloud.destroy(ended)
        return {
            "ours": ours,
            "theirs": theirs,
            "session 7": await cloud.instances(7),
            "all": await cloud.instances(),
        }

    found = run(cloud, body)

    lost = next(
        instance_id
        for instance_id, record in hub.records.items()
        if "cloudtask-token=lost" in record["label"]
    )
    session_7 = {instance.id: instance for instance in found["session 7"]}
    assert set(session_7) == {*found["ours"], lost}
    assert session_7[lost].token == "lost"
    assert {instance.token for instance in session_7.values()} == {"a0", "a1", "lost"}
    assert all(instance.session == 7 for instance in session_7.values())
    assert {instance.id for instance in found["all"]} == {*session_7, found["theirs"]}
    assert len(hub.records) == 6  # including the hand-made and the terminated ones


def test_a_launch_refused_for_throttling_is_made_once_retried(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub))
    hub.fail(429, endpoint="launch")

    instance_id = run(
        cloud, lambda cloud: with_retries(lambda: cloud.launch(spec()), "launch", QUICK)
    )

    assert list(hub.records) == [instance_id]
    assert hub.requests["launch"] == 2 and hub.requests["instances"] == 1


# -- destroying ----------------------------------------------------------------


def test_destroying_a_booting_instance_removes_it_once_booted(hub: HubServer) -> None:
    backend = hub.backend
    assert isinstance(backend, FakeBackend)
    cloud = HubCloud.from_config(hub_config(hub))

    async def body(cloud: HubCloud) -> str:
        instance_id = await cloud.launch(spec())
        await cloud.destroy(instance_id)
        return instance_id

    instance_id = run(cloud, body)
    hub.settle()
    assert backend.created == [instance_id] and backend.removed == [instance_id]
    assert hub.status(instance_id) == "terminated"


# -- errors and retries --------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_throttling_and_outages_are_retried(hub: HubServer, status: int) -> None:
    cloud = HubCloud.from_config(hub_config(hub))
    hub.fail(status, count=2, endpoint="launch")
    hub.fail(status, count=2, endpoint="instance")
    retries: list[str] = []

    async def body(cloud: HubCloud) -> CloudInstance:
        instance_id = await with_retries(
            lambda: cloud.launch(spec()), "launch", QUICK, on_retry=retries.append
        )
        return await with_retries(lambda: cloud.describe(instance_id), "describe", QUICK)

    found = run(cloud, body)

    assert found.state is InstanceState.PENDING
    assert hub.requests["launch"] == 3 and hub.requests["instance"] == 3
    assert hub.requests["instances"] == 2  # each failed launch looked for what it made
    assert len(hub.records) == 1
    assert len(retries) == 2 and all(str(status) in message for message in retries)


def test_a_lasting_outage_gives_up_with_a_transient_error(hub: HubServer) -> None:
    cloud = HubCloud.from_config(hub_config(hub))
    hub.fail(503, count=100)
    with pytest.raises(ProviderError) as caught:
        run(cloud, lambda cloud: with_retries(cloud.instances, "list", QUICK))
    assert caught.value.transient
    message = str(caught.value)
    assert message.startswith("list: Hub API GET amazon/instances/: 503")
    assert "Hub.Unavailable" in message and "\n" not in message
    assert hub.requests["instances"] == len(QUICK) + 1


def test_a_bad_key_is_permanent_and_never_shown(hub: HubServer) -> None:
    wrong = "wrong-key-b7e3d1"
    config = dataclasses.replace(hub_config(hub), hub_apikey=wrong)
    cloud = HubCloud.from_config(config)
    assert wrong not in repr(cloud)

    with pytest.raises(ProviderError) as caught:
        run(cloud, lambda cloud: with_retries(lambda: cloud.launch(spec()), "launch", QUICK))

    error = caught.value
    assert not error.transient
    assert "401" in str(error) and "HubAccount.InvalidApiKey" in str(error)
    # The test Hub echoes the key it was given: it must have been scrubbed.
    assert wrong not in str(error) and wrong not in repr(error)
    assert wrong not in repr(error.args)
    assert hub.requests["launch"] == 1
    assert hub.records == {}


def test_a_hub_that_does_not_answer_is_a_transient_error() -> None:
    with silent_url() as url:
        cloud = HubCloud(APIKEY, url=url, timeout=0.2)
        with pytest.raises(ProviderError) as caught:
            run(cloud, lambda cloud: cloud.instances())
    assert caught.value.transient
    assert str(caught.value) == "Hub API GET amazon/instances/: no answer in time"


# -- options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "starts"),
    [
        ({}, "--hub-apikey: a TurnKey Hub API key is required for --provider=hub"),
        ({"hub_apikey": "  "}, "--hub-apikey:"),
        ({"hub_apikey": APIKEY, "hub_url": "ftp://hub.example/api/"}, "--hub-url: not an http"),
        ({"hub_apikey": APIKEY, "hub_url": "hub.turnkeylinux.org"}, "--hub-url: not an http"),
        ({"hub_apikey": APIKEY, "hub_url": "http://hub.example/api/"}, "--hub-url: plain http"),
        ({"hub_apikey": APIKEY, "hub_url": "https://u:p@hub.example/api/"}, "--hub-url: give"),
        ({"hub_apikey": APIKEY, "snapshot_id": "s", "ami_id": "a"}, "--snapshot-id, --ami-id"),
        ({"hub_apikey": APIKEY, "ec2_type": "spot"}, "--ec2-type: with --provider=hub"),
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, str], starts: str) -> None:
    with pytest.raises(UsageError) as caught:
        HubCloud.from_config(Config(**options))
    assert str(caught.value).startswith(starts)
    assert APIKEY not in str(caught.value)


def test_the_url_defaults_to_the_hub_and_gains_its_slash() -> None:
    async def urls() -> list[str]:
        clouds = [
            HubCloud.from_config(Config(hub_apikey=APIKEY)),
            HubCloud.from_config(Config(hub_apikey=APIKEY, hub_url="https://hub.example/x/api")),
            HubCloud.from_config(Config(hub_apikey=APIKEY, hub_url="http://localhost:8080/api")),
        ]
        for cloud in clouds:
            await cloud.close()
        return [cloud.url for cloud in clouds]

    assert asyncio.run(urls()) == [
        "https://hub.turnkeylinux.org/api/",
        "https://hub.example/x/api/",
        "http://localhost:8080/api/",
    ]


# -- records, labels and error answers -----------------------------------------


def test_labels_round_trip_and_foreign_labels_carry_nothing() -> None:
    assert parse_label(make_label(spec(12, "9f8e7d", "hub12"))) == (12, "9f8e7d")
    assert parse_label("") == (None, None)
    assert parse_label("web server for the shop") == (None, None)
    assert parse_label("cloudtask-session=x cloudtask-token=") == (None, None)
    with pytest.raises(ValueError):
        make_label(spec(name="two words"))


@pytest.mark.parametrize(
    ("status", "address", "state"),
    [
        ("running", "198.18.0.1", InstanceState.RUNNING),
        ("running", None, InstanceState.PENDING),
        ("pending", None, InstanceState.PENDING),
        ("booting", None, InstanceState.PENDING),
        ("rebooting", "198.18.0.1", InstanceState.PENDING),
        ("terminating", "198.18.0.1", InstanceState.GONE),
        ("terminated", None, InstanceState.GONE),
        ("stopped", None, InstanceState.GONE),
    ],
)
def test_statuses_map_to_states(status: str, address: str | None, state: InstanceState) -> None:
    assert instance_state(status, address) is state


def test_a_record_in_the_hubs_own_layout_is_read() -> None:
    # The Hub has kept the label as the description of a nested server record.
    record = {
        "instanceid": "i-1",
        "status": "running",
        "ipaddress": "198.18.0.9",
        "server": {"description": "cloudtask-session=3 cloudtask-token=tok name=hub1"},
    }
    assert to_instance(record) == CloudInstance(
        "i-1", InstanceState.RUNNING, "198.18.0.9", session=3, token="tok"
    )
    with pytest.raises(ProviderError):
        to_instance({"status": "running"})


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (
            401,
            '{"name": "HubAccount.InvalidApiKey", "description": "bad"}',
            ("HubAccount.InvalidApiKey", "bad"),
        ),
        (400, "BackupRecord.NotFound: no backup 12", ("BackupRecord.NotFound", "no backup 12")),
        (502, "<html><body>Bad Gateway: try later</body></html>", (None, "Bad Gateway")),
        (503, "", (None, "Service Unavailable")),
    ],
)
def test_error_answers_are_read_as_json_or_text(
    status: int, body: str, detail: tuple[str | None, str]
) -> None:
    assert error_detail(httpx.Response(status, text=body)) == detail


def test_a_sweep_records_the_id_of_an_instance_it_finds_by_token(
    hub: HubServer, tmp_path: Path
) -> None:
    """The controller died during the launch call: its record has a token and no
    id. The sweep finds the instance by its token, destroys it, and records its id
    (found by the chaos run: such records were closed naming no instance)."""
    store = Store.create(tmp_path)
    store.intend_instance("0123456789abcdef", "hub", "hub1", "small", None, time.time())
    cloud = HubCloud.from_config(hub_config(hub))
    made = run(cloud, lambda cloud: cloud.launch(spec(session=7)))  # its answer never recorded

    cloud = HubCloud.from_config(hub_config(hub))
    destroyed = run(cloud, lambda cloud: sweep(cloud, store, 7, print))

    assert destroyed == [made]
    (record,) = store.instances()
    assert record.instance_id == made
    assert record.launched == record.intended  # when it was made is not known


# -- a full disk while launching -----------------------------------------------------


@pytest.mark.parametrize("record", ["instance_launched", "instance_running"])
def test_an_instance_whose_record_cannot_be_written_is_destroyed(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    """The cloud made it, the session's disk is full: it must not be left billing."""
    from cloudtask.errors import SessionWriteError
    from cloudtask.providers.launched import LaunchedWorkers
    from cloudtask.session import SessionDir
    from cloudtask.ssh import HostKeys, SessionKey, SSHOptions

    session = SessionDir.create(tmp_path / "sessions")
    store = Store.create(session.path)

    def full(*args: object) -> None:
        raise SessionWriteError(f"cannot write in {session.path} (store.sqlite): disk full")

    monkeypatch.setattr(store, record, full)
    cloud = HubCloud.from_config(hub_config(hub))
    launched = LaunchedWorkers(
        cloud,
        store,
        session,
        SSHOptions(None, 5.0, HostKeys(session.known_hosts_path)),
        SessionKey(session.id),
        "root",
        None,
        lambda text: None,
    )
    with pytest.raises(SessionWriteError):
        run(cloud, lambda _: launched.launch())
    backend = hub.backend
    assert isinstance(backend, FakeBackend)
    deadline = time.monotonic() + 5  # the test Hub boots and removes in the background
    while not (backend.created and backend.removed == backend.created):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert backend.created, "nothing was launched"
    assert backend.removed == backend.created
