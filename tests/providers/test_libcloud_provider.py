"""The libcloud provider with a real libcloud driver whose cloud is the test Hub.

tests/support/libcloud_driver.py makes libcloud calls over libcloud's own HTTP
connection to the test Hub on 127.0.0.1, so driver resolution, construction
from options, create_node/list_nodes/destroy_node and libcloud's exceptions
are the real ones. Instances get 198.18.0.0/15 addresses, never contacted.
The cases every cloud shares are in test_clouds.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import NodeImage, NodeSize
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.types import NodeState
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import InvalidURL, ReadTimeout
from tests.support.clouds import run, until_running
from tests.support.hubserver import FakeBackend, HubServer, silent_url
from tests.support.libcloud_driver import CloudtaskTestDriver

from cloudtask.config import Config
from cloudtask.errors import UsageError
from cloudtask.providers.cloud import (
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
    with_retries,
)
from cloudtask.providers.libcloud import (
    NAME_LIMIT,
    LibcloudCloud,
    instance_state,
    node_name,
    node_tags,
    parse_node_name,
    translate,
)

APIKEY = "libcloud-test-key-3d9e"
DRIVER = "tests.support.libcloud_driver:CloudtaskTestDriver"
NAME_ONLY = "tests.support.libcloud_driver:NameOnlyTestDriver"
BOOT = 0.2
QUICK = (0.01, 0.01, 0.01)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(APIKEY, FakeBackend(boot_delay=BOOT)) as server:
        yield server


def libcloud_config(hub_url: str, **options: Any) -> Config:
    values: dict[str, Any] = {
        "provider": "libcloud",
        "libcloud_driver": DRIVER,
        "libcloud_key": APIKEY,
        "libcloud_options": f"url={hub_url}",
        "libcloud_image": "core",
        "libcloud_size": "t3.small",
    }
    return Config(**(values | options))


def spec(session: int = 7, token: str = "0123456789abcdef", name: str = "libcloud1") -> LaunchSpec:
    return LaunchSpec(session, token, name, "ssh-ed25519 AAAAsessionkey cloudtask")


# -- launching and describing --------------------------------------------------


def test_launch_names_the_node_and_tags_it(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(
        libcloud_config(hub.url, libcloud_location="eu-west-1", libcloud_size="t3.micro")
    )
    assert isinstance(cloud.driver, CloudtaskTestDriver)
    assert cloud.size == "t3.micro"

    instance_id = run(cloud, lambda cloud: cloud.launch(spec(session=7, name="libcloud3")))

    (attributes,) = hub.launches
    label = "ct7-0123456789abcdef-libcloud3 cloudtask-session=7 cloudtask-token=0123456789abcdef"
    assert attributes == {
        "size": "t3.micro",
        "region": "eu-west-1",
        "type": "ebs",
        "label": label,
        # The driver declares the ssh_key feature: the session key is passed.
        "sshkey": "ssh-ed25519 AAAAsessionkey cloudtask",
    }
    assert hub.records[instance_id]["image"] == "core"


def test_describe_is_pending_then_running_with_an_address(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))

    async def body(cloud: LibcloudCloud) -> tuple[str, list[CloudInstance]]:
        instance_id = await cloud.launch(spec(session=9, token="feedc0de"))
        return instance_id, await until_running(cloud, instance_id)

    instance_id, seen = run(cloud, body)

    assert seen[0].state is InstanceState.PENDING and seen[0].address is None
    running = seen[-1]
    assert running.state is InstanceState.RUNNING and running.id == instance_id
    assert running.address is not None and running.address.startswith("198.18.")
    assert (running.session, running.token) == (9, "feedc0de")
    assert running.host_keys == ()  # libcloud has no way to tell them


def test_a_node_launched_here_and_not_listed_yet_is_not_gone(hub: HubServer) -> None:
    # As on an eventually consistent cloud: the new node is missing from listings.
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))
    hidden: set[str] = set()
    list_nodes = cloud.driver.list_nodes
    cloud.driver.list_nodes = lambda: [node for node in list_nodes() if node.id not in hidden]

    async def body(cloud: LibcloudCloud) -> dict[str, Any]:
        instance_id = await cloud.launch(spec())
        hidden.add(instance_id)
        results: dict[str, Any] = {"unlisted": await cloud.describe(instance_id)}
        with pytest.raises(ProviderError) as caught:
            await cloud.destroy(instance_id)
        results["destroy"] = caught.value
        hidden.clear()
        results["listed"] = await cloud.describe(instance_id)
        hidden.add(instance_id)  # listed once: missing now means gone
        results["missing"] = await cloud.describe(instance_id)
        return results

    results = run(cloud, body)

    assert results["unlisted"].state is InstanceState.PENDING
    assert results["destroy"].transient and "not listed yet" in str(results["destroy"])
    assert results["listed"].state is not InstanceState.GONE
    assert results["missing"].state is InstanceState.GONE
    assert hub.requests["terminate"] == 0


def test_a_node_not_listed_after_the_grace_is_gone(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))
    cloud.listing_grace = 0.0
    cloud.driver.list_nodes = lambda: []

    async def body(cloud: LibcloudCloud) -> CloudInstance:
        instance_id = await cloud.launch(spec())
        await cloud.destroy(instance_id)  # nothing to destroy, as far as it can tell
        return await cloud.describe(instance_id)

    assert run(cloud, body).state is InstanceState.GONE


# -- listing (the sweep) -------------------------------------------------------


@pytest.mark.parametrize("driver", [DRIVER, NAME_ONLY])
def test_instances_of_a_session_are_found_by_name_or_tags(hub: HubServer, driver: str) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url, libcloud_driver=driver))

    async def body(cloud: LibcloudCloud) -> dict[str, Any]:
        ours = [await cloud.launch(spec(7, f"a{n}", f"libcloud{n}")) for n in range(2)]
        theirs = await cloud.launch(spec(8, "b0"))
        # Made, but the answer is lost, and so is the listing that would find it.
        hub.fail(503, endpoint="launch", after=True)
        hub.fail(503, endpoint="instances")
        with pytest.raises(ProviderError) as caught:
            await cloud.launch(spec(7, "lost"))
        assert caught.value.transient
        ended = await cloud.launch(spec(7, "ended"))
        await cloud.destroy(ended)
        # A node made by someone else in the same account.
        own = cloud.driver
        size, image = NodeSize("s", "s", 0, 0, None, 0.0, own), NodeImage("i", "i", own)
        await asyncio.to_thread(own.create_node, "web-1", size, image)
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
        if record["label"].startswith("ct7-lost-")
    )
    session_7 = {instance.id: instance for instance in found["session 7"]}
    assert set(session_7) == {*found["ours"], lost}
    assert {instance.token for instance in session_7.values()} == {"a0", "a1", "lost"}
    assert {instance.id for instance in found["all"]} == {*session_7, found["theirs"]}
    tagged = driver == DRIVER
    assert all(("cloudtask-session=7" in hub.records[i]["label"]) is tagged for i in session_7)
    assert len(hub.records) == 6


def test_a_launch_refused_for_throttling_is_made_once_retried(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))
    hub.fail(429, endpoint="launch")

    instance_id = run(
        cloud, lambda cloud: with_retries(lambda: cloud.launch(spec()), "launch", QUICK)
    )

    assert list(hub.records) == [instance_id]
    assert hub.requests["launch"] == 2 and hub.requests["instances"] == 1


# -- destroying ----------------------------------------------------------------


def test_a_node_gone_between_listing_and_destroy_is_fine(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))

    async def body(cloud: LibcloudCloud) -> None:
        instance_id = await cloud.launch(spec())
        hub.fail(404, endpoint="terminate")
        await cloud.destroy(instance_id)

    run(cloud, body)
    assert hub.requests["terminate"] == 1


# -- errors and retries --------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_throttling_and_outages_are_retried(hub: HubServer, status: int) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))
    hub.fail(status, count=2, endpoint="launch")
    retries: list[str] = []

    async def body(cloud: LibcloudCloud) -> CloudInstance:
        instance_id = await with_retries(
            lambda: cloud.launch(spec()), "launch", QUICK, on_retry=retries.append
        )
        # Each failed launch looked for the node it may have made.
        assert hub.requests["launch"] == 3 and hub.requests["instances"] == 2
        hub.fail(status, count=2, endpoint="instances")
        return await with_retries(lambda: cloud.describe(instance_id), "describe", QUICK)

    found = run(cloud, body)

    assert found.state is InstanceState.PENDING
    assert hub.requests["instances"] == 2 + 3
    assert len(hub.records) == 1
    assert len(retries) == 2 and all(str(status) in message for message in retries)


def test_a_lasting_outage_gives_up_with_a_transient_error(hub: HubServer) -> None:
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url))
    hub.fail(503, count=100)
    with pytest.raises(ProviderError) as caught:
        run(cloud, lambda cloud: with_retries(cloud.instances, "list", QUICK))
    assert caught.value.transient
    assert str(caught.value).startswith("list: libcloud list_nodes: 503")
    assert hub.requests["instances"] == len(QUICK) + 1


def test_a_bad_key_is_permanent_and_never_shown(hub: HubServer) -> None:
    wrong = "wrong-key-61f0aa"
    cloud = LibcloudCloud.from_config(libcloud_config(hub.url, libcloud_key=wrong))
    assert wrong not in repr(cloud)

    with pytest.raises(ProviderError) as caught:
        run(cloud, lambda cloud: with_retries(lambda: cloud.launch(spec()), "launch", QUICK))

    error = caught.value
    assert not error.transient
    assert "refused" in str(error) and "HubAccount.InvalidApiKey" in str(error)
    # The test Hub echoes the key it was given: it must have been scrubbed.
    assert wrong not in str(error) and wrong not in repr(error)
    assert error.__cause__ is None
    assert hub.requests["launch"] == 1
    assert hub.records == {}


def test_a_cloud_that_does_not_answer_is_a_transient_error() -> None:
    with silent_url() as url:
        config = libcloud_config(url, libcloud_options=f"url={url},timeout=0.2")
        cloud = LibcloudCloud.from_config(config)
        with pytest.raises(ProviderError) as caught:
            run(cloud, lambda cloud: cloud.describe("i-1"))
    assert caught.value.transient
    assert str(caught.value).startswith("libcloud list_nodes: ReadTimeout: ")


@pytest.mark.parametrize(
    ("raised", "transient"),
    [
        (BaseHTTPError(503, "Service Unavailable"), True),
        (BaseHTTPError(500, "oops"), True),
        (RateLimitReachedError(), True),
        (BaseHTTPError(400, "bad size"), False),
        (BaseHTTPError(404, "no such image"), False),
        (InvalidCredsError("no"), False),
        (LibcloudError("quota exceeded"), False),
        (RequestsConnectionError("refused"), True),
        (ReadTimeout("slow"), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError(), True),
        (InvalidURL("no host"), False),
        (KeyError("id"), False),
        (NotImplementedError("list_nodes not implemented for this driver"), False),
    ],
)
def test_driver_errors_are_translated(raised: BaseException, transient: bool) -> None:
    error = translate(raised, "libcloud create_node", ["s3cr3t"])
    assert error.transient is transient
    assert str(error).startswith("libcloud create_node: ")


def test_secrets_are_scrubbed_and_messages_kept_to_one_line() -> None:
    raised = BaseHTTPError(500, "server error\nfor key s3cr3t and secret hunter2 " + "x" * 500)
    message = str(translate(raised, "libcloud list_nodes", ["s3cr3t", "hunter2"]))
    assert "s3cr3t" not in message and "hunter2" not in message
    assert "\n" not in message and len(message) < 300


# -- resolving and making the driver -------------------------------------------


@pytest.mark.parametrize("name", ["dummy", "Dummy"])
def test_a_libcloud_provider_name_resolves(name: str) -> None:
    config = Config(libcloud_driver=name, libcloud_key="0", libcloud_image="i2", libcloud_size="s1")
    cloud = LibcloudCloud.from_config(config)
    assert isinstance(cloud.driver, DummyNodeDriver)

    async def body(cloud: LibcloudCloud) -> tuple[CloudInstance, list[CloudInstance]]:
        instance_id = await cloud.launch(spec())
        return await cloud.describe(instance_id), await cloud.instances()

    found, listed = run(cloud, body)
    # The dummy driver keeps no names: its node is running, but no sweep finds it.
    assert found.state is InstanceState.RUNNING and found.address == "127.0.0.3"
    assert found.session is None and listed == []


@pytest.mark.parametrize(
    ("options", "starts"),
    [
        ({"libcloud_driver": None}, "--libcloud-driver: required for --provider=libcloud"),
        ({"libcloud_image": None}, "--libcloud-image: required for --provider=libcloud"),
        ({"libcloud_size": " "}, "--libcloud-size: required for --provider=libcloud"),
        ({"libcloud_driver": "digitalocen"}, "--libcloud-driver: libcloud has no compute driver"),
        ({"libcloud_driver": "tests.no_such_module:Driver"}, "--libcloud-driver: cannot import"),
        (
            {"libcloud_driver": "tests.support.libcloud_driver:Nope"},
            "--libcloud-driver: tests.support.libcloud_driver has no",
        ),
        (
            {"libcloud_driver": "tests.support.libcloud_driver:STATES"},
            "--libcloud-driver: tests.support.libcloud_driver has no",
        ),
        ({"libcloud_driver": "os:path"}, "--libcloud-driver: os has no"),
        ({"libcloud_options": "url"}, "--libcloud-options: expected NAME=VALUE"),
        ({"libcloud_options": "url=a,url=b"}, "--libcloud-options: url given twice"),
        ({"libcloud_options": "url=x,9lives=1"}, "--libcloud-options: expected NAME=VALUE"),
        ({"libcloud_options": "timeout=soon"}, "--libcloud-options: timeout: not a number"),
        # The dummy driver takes no arguments but its credentials.
        (
            {"libcloud_driver": "dummy", "libcloud_options": "region=x"},
            "--libcloud-driver: cannot make a DummyNodeDriver: ",
        ),
        (
            {"libcloud_key": None},
            "--libcloud-driver: cannot make a CloudtaskTestDriver (no --libcloud-key",
        ),
        ({"libcloud_key": None, "libcloud_secret": "s"}, "--libcloud-secret: given without"),
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, Any], starts: str) -> None:
    with pytest.raises(UsageError) as caught:
        LibcloudCloud.from_config(libcloud_config("http://127.0.0.1:1/api/", **options))
    assert str(caught.value).startswith(starts)
    assert APIKEY not in str(caught.value)


def test_an_unknown_provider_name_gets_a_suggestion() -> None:
    with pytest.raises(UsageError, match=r"did you mean digitalocean\?"):
        LibcloudCloud.from_config(
            libcloud_config("http://127.0.0.1:1/api/", libcloud_driver="digitalocen")
        )


def test_options_reach_the_driver() -> None:
    config = libcloud_config(
        "http://127.0.0.1:1/api/", libcloud_options="url=http://127.0.0.1:1/x/, timeout=5"
    )
    cloud = LibcloudCloud.from_config(config)
    assert isinstance(cloud.driver, CloudtaskTestDriver)
    assert cloud.driver.api_path == "/x/"
    assert cloud.driver.connection.timeout == 5
    asyncio.run(cloud.close())


# -- names, tags and states ----------------------------------------------------


def test_node_names_carry_session_and_token() -> None:
    assert node_name(spec(7, "ab12", "libcloud3")) == "ct7-ab12-libcloud3"
    assert parse_node_name("ct7-ab12-libcloud3") == (7, "ab12")
    assert node_name(spec(7, "ab12", "Worker #3_x")) == "ct7-ab12-worker-3-x"
    long = node_name(spec(123456, "0123456789abcdef", "w" * 100))
    assert len(long) == NAME_LIMIT and parse_node_name(long) == (123456, "0123456789abcdef")
    assert parse_node_name("ct7-ab12") == (7, "ab12")
    assert parse_node_name("web-1") == (None, None)
    assert parse_node_name("ctx-ab12-w") == (None, None)
    assert parse_node_name(None) == (None, None)
    with pytest.raises(ValueError):
        node_name(spec(token="Not-Hex"))


def test_tags_are_read_from_the_layouts_drivers_use() -> None:
    wanted = {"cloudtask-session": "7", "cloudtask-token": "ab"}
    assert node_tags({"tags": {"cloudtask-session": "7", "cloudtask-token": "ab"}}) == wanted
    assert node_tags({"labels": wanted}) == wanted
    items = [{"key": "cloudtask-session", "value": "7"}, {"key": "cloudtask-token", "value": "ab"}]
    assert node_tags({"metadata": {"items": items}}) == wanted
    assert node_tags({"tags": ["cloudtask-session:7", "cloudtask-token=ab"]}) == wanted
    assert node_tags(None) == {} and node_tags({"tags": None}) == {}


@pytest.mark.parametrize(
    ("state", "address", "expected"),
    [
        (NodeState.RUNNING, "198.18.0.1", InstanceState.RUNNING),
        (NodeState.RUNNING, None, InstanceState.PENDING),
        (NodeState.PENDING, None, InstanceState.PENDING),
        (NodeState.STARTING, None, InstanceState.PENDING),
        (NodeState.REBOOTING, "198.18.0.1", InstanceState.PENDING),
        (NodeState.STOPPED, "198.18.0.1", InstanceState.PENDING),
        (NodeState.ERROR, None, InstanceState.PENDING),
        (NodeState.UNKNOWN, None, InstanceState.PENDING),
        (NodeState.TERMINATED, None, InstanceState.GONE),
        ("running", "198.18.0.1", InstanceState.RUNNING),
    ],
)
def test_node_states_map_to_states(
    state: object, address: str | None, expected: InstanceState
) -> None:
    assert instance_state(state, address) is expected


def test_the_config_is_not_changed(hub: HubServer) -> None:
    config = libcloud_config(hub.url)
    before = dataclasses.asdict(config)
    asyncio.run(LibcloudCloud.from_config(config).close())
    assert dataclasses.asdict(config) == before
