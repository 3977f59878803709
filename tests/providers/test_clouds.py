"""The `Cloud` interface, the same cases for every cloud: hub, ec2 and libcloud.

Each case runs against each cloud's test server (tests/support/clouds.py): the
test Hub for hub and libcloud (through a real libcloud driver), moto's server
mode on loopback for EC2. What only one cloud does, or only its server can
tell, is in that cloud's own file (test_hub_provider.py, test_ec2_provider.py,
test_libcloud_provider.py) or in its harness's checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clouds import (
    HUB_APIKEY,
    LIBCLOUD_APIKEY,
    CloudHarness,
    HubHarness,
    LibcloudHarness,
    ec2_harness,
    hub_harness,
    moto_ami,
    run,
    until_running,
)
from tests.support.motoserver import moto_server, reset

from cloudtask.providers.cloud import (
    Cloud,
    CloudInstance,
    InstanceState,
    ProviderError,
    with_retries,
)

QUICK = (0.01, 0.01, 0.01)  # with_retries delays: the backoff is not under test


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, str]]:
    """One moto server for the module's EC2 cases (started only if one runs), and its AMI."""
    with moto_server() as url:
        yield url, moto_ami(url)
        reset(url)


@pytest.fixture(params=["hub", "ec2", "libcloud"])
def cloud(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CloudHarness]:
    if request.param == "hub":
        with hub_harness(HubHarness, HUB_APIKEY) as harness:
            yield harness
    elif request.param == "libcloud":
        with hub_harness(LibcloudHarness, LIBCLOUD_APIKEY) as harness:
            yield harness
    else:
        url, ami = request.getfixturevalue("moto")
        with ec2_harness(url, ami, monkeypatch, tmp_path) as ec2:
            yield ec2


def test_describing_an_unknown_instance_says_gone(cloud: CloudHarness) -> None:
    found = run(cloud.make(), lambda c: c.describe(cloud.unknown_id))
    assert found == CloudInstance(cloud.unknown_id, InstanceState.GONE)


def test_destroy_terminates_and_destroying_again_is_fine(cloud: CloudHarness) -> None:
    async def body(c: Cloud) -> tuple[str, CloudInstance]:
        instance_id = await c.launch(cloud.spec(10, "d0000001"))
        await until_running(c, instance_id)
        await c.destroy(instance_id)
        await c.destroy(instance_id)  # already terminated
        await c.destroy(cloud.unknown_id)  # never known
        return instance_id, await c.describe(instance_id)

    instance_id, after = run(cloud.make(), body)

    assert after.state is InstanceState.GONE
    cloud.check_destroyed(instance_id)


def test_a_launch_whose_answer_is_lost_is_not_made_twice(cloud: CloudHarness) -> None:
    # The launch takes effect but its answer is lost; with_retries tries again
    # with the same token, which finds the instance instead of making another.
    cloud.lose_next_launch_answer()
    spec = cloud.spec(6, "0123456789abcdef")
    retries: list[str] = []

    instance_id = run(
        cloud.make(),
        lambda c: with_retries(lambda: c.launch(spec), "launch", QUICK, retries.append),
    )

    assert cloud.ids_with_token(spec.token) == [instance_id]
    cloud.check_lost_launch_made_once(instance_id, retries)
    run(cloud.make(), lambda c: c.destroy(instance_id))


def test_an_unreachable_cloud_is_a_transient_error(cloud: CloudHarness) -> None:
    unreachable = cloud.unreachable()
    with pytest.raises(ProviderError) as caught:
        run(
            unreachable,
            lambda c: with_retries(lambda: c.describe(cloud.unknown_id), "describe", QUICK),
        )
    assert caught.value.transient
    message = str(caught.value)
    assert "\n" not in message
    if cloud.apikey is not None:
        assert cloud.apikey not in message
    cloud.check_unreachable_error(message)
