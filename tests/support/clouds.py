"""Each cloud behind the `Cloud` interface, with its test server, for the shared cloud suite.

tests/providers/test_clouds.py runs the same cases against every cloud: the
hub provider against the test Hub (tests/support/hubserver.py), the libcloud
provider with a real libcloud driver whose cloud is that same test Hub
(tests/support/libcloud_driver.py), and the EC2 provider against moto's
server mode on loopback, behind a `FaultyEndpoint` (tests/support/motoserver.py).
A harness makes the cloud, makes the faults the cases need, and checks what
only its own server can tell (requests counted, the instance's record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from tests.support.hubserver import FakeBackend, HubServer, unreachable_url
from tests.support.motoserver import (
    Fault,
    FaultyEndpoint,
    ec2_client,
    isolate_aws,
    live_instances,
    loopback_only,
    terminate_all,
)

from cloudtask.config import Config
from cloudtask.providers.cloud import TAG_TOKEN, Cloud, CloudInstance, InstanceState, LaunchSpec
from cloudtask.providers.ec2 import EC2Cloud
from cloudtask.providers.hub import HubCloud
from cloudtask.providers.libcloud import LibcloudCloud

HUB_APIKEY = "hub-test-key-5f1c9a"
LIBCLOUD_APIKEY = "libcloud-test-key-3d9e"
LIBCLOUD_DRIVER = "tests.support.libcloud_driver:CloudtaskTestDriver"
BOOT = 0.2  # seconds the test Hub's fake backend takes to "boot"
SESSION_KEY = "ssh-ed25519 AAAAsessionkey cloudtask"

T = TypeVar("T")


def run(cloud: Cloud, body: Callable[[Any], Awaitable[T]]) -> T:
    """Drive the cloud in one event loop, and close it in that loop."""

    async def main() -> T:
        try:
            return await body(cloud)
        finally:
            await cloud.close()

    return asyncio.run(main())


async def until_running(cloud: Cloud, instance_id: str) -> list[CloudInstance]:
    """Every describe until the instance runs (at most 5 s)."""
    seen = [await cloud.describe(instance_id)]
    for _ in range(100):
        if seen[-1].state is not InstanceState.PENDING:
            break
        await asyncio.sleep(0.05)
        seen.append(await cloud.describe(instance_id))
    return seen


class CloudHarness(Protocol):
    name: str
    apikey: str | None  # a secret no error may show
    unknown_id: str  # an instance id of the cloud's form that names nothing

    def make(self) -> Cloud: ...
    def unreachable(self) -> Cloud: ...
    def spec(self, session: int, token: str) -> LaunchSpec: ...
    def lose_next_launch_answer(self) -> None: ...
    def ids_with_token(self, token: str) -> list[str]: ...
    def check_lost_launch_made_once(self, instance_id: str, retries: list[str]) -> None: ...
    def check_destroyed(self, instance_id: str) -> None: ...
    def check_unreachable_error(self, message: str) -> None: ...


class HubHarness:
    """The hub provider against the test Hub."""

    name = "hub"
    apikey: str | None = HUB_APIKEY
    unknown_id = "i-0000000000000000"
    terminate_requests = 3  # destroy, destroy again, destroy unknown: each a request

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def make(self) -> Cloud:
        return HubCloud.from_config(
            Config(provider="hub", hub_apikey=HUB_APIKEY, hub_url=self.hub.url)
        )

    def unreachable(self) -> Cloud:
        return HubCloud.from_config(Config(hub_apikey=HUB_APIKEY, hub_url=unreachable_url()))

    def spec(self, session: int, token: str) -> LaunchSpec:
        return LaunchSpec(session, token, f"{self.name}1", SESSION_KEY)

    def lose_next_launch_answer(self) -> None:
        self.hub.fail(503, endpoint="launch", after=True)

    def ids_with_token(self, token: str) -> list[str]:
        return [
            instance_id
            for instance_id, record in self.hub.records.items()
            if f"cloudtask-token={token}" in record["label"].split()
        ]

    def check_lost_launch_made_once(self, instance_id: str, retries: list[str]) -> None:
        assert list(self.hub.records) == [instance_id]
        assert self.hub.requests["launch"] == 1 and self.hub.requests["instances"] == 1

    def check_destroyed(self, instance_id: str) -> None:
        backend = self.hub.backend
        assert isinstance(backend, FakeBackend)
        assert self.hub.status(instance_id) == "terminated"
        assert self.hub.requests["terminate"] == self.terminate_requests
        self.hub.settle()
        assert backend.removed == [instance_id]

    def check_unreachable_error(self, message: str) -> None:
        assert "cannot reach 127.0.0.1" in message


class LibcloudHarness(HubHarness):
    """The libcloud provider, its driver's cloud the test Hub."""

    name = "libcloud"
    apikey = LIBCLOUD_APIKEY
    unknown_id = "i-0000"
    terminate_requests = 1  # listed as terminated, or not listed: nothing to do

    def config(self, url: str) -> Config:
        return Config(
            provider="libcloud",
            libcloud_driver=LIBCLOUD_DRIVER,
            libcloud_key=LIBCLOUD_APIKEY,
            libcloud_options=f"url={url}",
            libcloud_image="core",
            libcloud_size="t3.small",
        )

    def make(self) -> Cloud:
        return LibcloudCloud.from_config(self.config(self.hub.url))

    def unreachable(self) -> Cloud:
        return LibcloudCloud.from_config(self.config(unreachable_url()))

    def check_unreachable_error(self, message: str) -> None:
        assert "ConnectionError" in message


class EC2Harness:
    """The EC2 provider against moto, behind a FaultyEndpoint."""

    name = "ec2"
    apikey: str | None = None  # moto takes any credentials: nothing secret to hide
    unknown_id = "i-0123456789abcdef0"

    def __init__(
        self, moto: str, ami: str, faulty: FaultyEndpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.ami = ami
        self.faulty = faulty
        self.monkeypatch = monkeypatch
        self.client = ec2_client(moto)

    def make(self) -> Cloud:
        return EC2Cloud.from_config(Config(ami_id=self.ami, ec2_region="us-east-1"))

    def unreachable(self) -> Cloud:
        with FaultyEndpoint("http://127.0.0.1:1") as closed:
            url = closed.url
        # The port was just let go: nothing listens there now.
        self.monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        return self.make()

    def spec(self, session: int, token: str) -> LaunchSpec:
        return LaunchSpec(session, token, "w")

    def lose_next_launch_answer(self) -> None:
        # RunInstances takes effect but the answer is a 503.
        self.faulty.faults.append(Fault("RunInstances", "InternalError", status=503, deliver=True))

    def ids_with_token(self, token: str) -> list[str]:
        found = self.client.describe_instances(
            Filters=[{"Name": f"tag:{TAG_TOKEN}", "Values": [token]}]
        )
        return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]

    def check_lost_launch_made_once(self, instance_id: str, retries: list[str]) -> None:
        assert len(retries) == 1 and "InternalError" in retries[0]
        assert self.faulty.count("RunInstances") == 1

    def check_destroyed(self, instance_id: str) -> None:
        answer = self.client.describe_instances(InstanceIds=[instance_id])
        assert answer["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"

    def check_unreachable_error(self, message: str) -> None:
        pass  # the shared checks are all there is


@contextmanager
def hub_harness(kind: type[HubHarness], apikey: str) -> Iterator[HubHarness]:
    with HubServer(apikey, FakeBackend(boot_delay=BOOT)) as hub:
        yield kind(hub)


def moto_ami(moto: str) -> str:
    """An image moto knows (listing them takes seconds: once per server)."""
    return str(ec2_client(moto).describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


@contextmanager
def ec2_harness(
    moto: str, ami: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[EC2Harness]:
    """boto3 talks to moto only; afterwards, nothing is left running and nothing leaked."""
    isolate_aws(monkeypatch, tmp_path, moto)
    refused = loopback_only(monkeypatch)
    with FaultyEndpoint(moto) as faulty:
        monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.url)
        yield EC2Harness(moto, ami, faulty, monkeypatch)
    left = live_instances(moto)
    terminate_all(moto, left)  # so one failure does not fail every later test
    assert not left, f"instances left running in moto: {left}"
    assert not refused, f"non-loopback network use: {refused}"
