"""The EC2 provider against moto's server mode on loopback, with a real boto3 client.

One moto server serves the module. Faults moto cannot make (throttling, a
lost answer, an instance not visible yet) come from `FaultyEndpoint`
(tests/support/motoserver.py), a small HTTP server on loopback that answers
chosen requests with an EC2 error and passes the rest on to moto. No test may
reach anything but loopback, and none may leave an instance running in moto.
The cases every cloud shares are in test_clouds.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import botocore.exceptions
import moto.ec2.responses.general as moto_general
import moto.settings
import pytest
import yaml
from tests.support.motoserver import (
    Fault,
    FaultyEndpoint,
    ec2_client,
    isolate_aws,
    live_instances,
    loopback_only,
    moto_server,
    reset,
    terminate_all,
)

from cloudtask.config import Config
from cloudtask.errors import UsageError
from cloudtask.providers.cloud import (
    TAG_NAME,
    TAG_SESSION,
    TAG_TOKEN,
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
    with_retries,
)
from cloudtask.providers.ec2 import (
    DEFAULT_SIZE,
    EC2Cloud,
    EC2Error,
    cloud_config,
    cloud_instance,
    instance_state,
    parse_host_keys,
    translate_error,
)
from cloudtask.providers.launched import LaunchedWorkers
from cloudtask.session import SessionDir
from cloudtask.ssh import HostKeys, SessionKey, SSHOptions
from cloudtask.store import Store

FAST = (0.01, 0.01, 0.01)  # with_retries delays: the backoff is not under test

# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url
        reset(url)


@pytest.fixture(autouse=True)
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """boto3 talks to moto only; afterwards, nothing is left running and nothing leaked."""
    isolate_aws(monkeypatch, tmp_path, endpoint)
    refused = loopback_only(monkeypatch)
    yield refused
    left = live_instances(endpoint)
    terminate_all(endpoint, left)  # so one failure does not fail every later test
    assert not left, f"instances left running in moto: {left}"
    assert not refused, f"non-loopback network use: {refused}"


@pytest.fixture(scope="module")
def client(endpoint: str) -> Iterator[Any]:
    """A plain boto3 client, to see what the provider did and do what it does not."""
    ec2 = ec2_client(endpoint)
    yield ec2
    ec2.close()


@pytest.fixture(scope="module")
def ami(endpoint: str) -> str:
    ec2 = ec2_client(endpoint)
    try:
        return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
    finally:
        ec2.close()


def make_cloud(ami: str, **options: Any) -> EC2Cloud:
    options.setdefault("ec2_region", "us-east-1")
    return EC2Cloud.from_config(Config(ami_id=ami, **options))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def describe_raw(client: Any, instance_id: str) -> dict[str, Any]:
    answer = client.describe_instances(InstanceIds=[instance_id])
    return dict(answer["Reservations"][0]["Instances"][0])


def tags_of(description: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}


def public_key(kind: str = "ssh-ed25519", comment: str = "cloudtask-session-3") -> str:
    key = asyncssh.generate_private_key(kind, comment=comment)
    return key.export_public_key("openssh").decode().strip()


@pytest.fixture
def faulty(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyEndpoint]:
    """A FaultyEndpoint in front of moto, made boto3's endpoint (AWS_ENDPOINT_URL)."""
    with FaultyEndpoint(endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


# -- launch ------------------------------------------------------------------


def test_launch_tags_the_instance_and_volumes_and_authorizes_the_key(ami: str, client: Any) -> None:
    key = public_key()
    spec = LaunchSpec(session=3, token="tok-launch-1", name="worker-1", public_key=key)
    cloud = make_cloud(ami)

    instance_id = run(cloud.launch(spec))

    description = describe_raw(client, instance_id)
    tags = tags_of(description)
    assert tags[TAG_SESSION] == "3"
    assert tags[TAG_TOKEN] == "tok-launch-1"
    assert tags[TAG_NAME] == "worker-1"
    assert description["ImageId"] == ami
    assert description["InstanceType"] == DEFAULT_SIZE == cloud.size == "t3.small"
    assert description.get("ClientToken") == "tok-launch-1"
    assert "InstanceLifecycle" not in description  # on-demand unless asked
    volumes = client.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["Volumes"]
    assert volumes
    for volume in volumes:
        assert tags_of(volume)[TAG_TOKEN] == "tok-launch-1"
    shutdown = client.describe_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"

    encoded = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    user_data = base64.b64decode(encoded["UserData"]["Value"]).decode()
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data) == {"ssh_authorized_keys": [key], "disable_root": False}

    run(cloud.destroy(instance_id))
    run(cloud.close())


def test_no_public_key_no_user_data(ami: str, client: Any) -> None:
    cloud = make_cloud(ami, ec2_size="m5.large")
    instance_id = run(cloud.launch(LaunchSpec(session=3, token="tok-nokey", name="w")))
    assert describe_raw(client, instance_id)["InstanceType"] == "m5.large"
    encoded = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert not encoded.get("UserData", {}).get("Value")
    run(cloud.destroy(instance_id))


def test_cloud_config_for_a_user_other_than_root() -> None:
    key = public_key()
    config = yaml.safe_load(cloud_config(key + "\n", "admin"))
    # The image's default user gets the key; root stays disabled.
    assert config == {"ssh_authorized_keys": [key]}


def test_spot_request_reaches_ec2(ami: str, client: Any) -> None:
    cloud = make_cloud(ami, ec2_type="spot")
    spec = LaunchSpec(session=4, token="tok-spot", name="spot-1")
    assert cloud.run_arguments(spec)["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        },
    }
    instance_id = run(cloud.launch(spec))
    assert describe_raw(client, instance_id).get("InstanceLifecycle") == "spot"

    # A reclaimed spot instance is terminated by EC2: gone.
    client.terminate_instances(InstanceIds=[instance_id])
    assert run(cloud.describe(instance_id)).state is InstanceState.GONE


def test_spot_workers_watch_the_metadata_service_and_on_demand_ones_do_not(ami: str) -> None:
    """The agent of a spot worker polls the instance metadata for the
    interruption notice (the link-local service every instance reaches)."""
    assert make_cloud(ami, ec2_type="spot").spot_metadata() == "http://169.254.169.254"
    assert make_cloud(ami).spot_metadata() is None
    assert make_cloud(ami, ec2_type="on-demand").spot_metadata() is None


def test_subnet_and_security_groups_reach_ec2(ami: str, client: Any) -> None:
    vpc = client.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    groups = [
        client.create_security_group(GroupName=name, Description="t", VpcId=vpc)["GroupId"]
        for name in ("ct-a", "ct-b")
    ]
    cloud = make_cloud(ami, ec2_subnet=subnet, ec2_security_group=" , ".join(groups))
    instance_id = run(cloud.launch(LaunchSpec(session=5, token="tok-net", name="n")))
    description = describe_raw(client, instance_id)
    assert description["SubnetId"] == subnet
    assert sorted(group["GroupId"] for group in description["SecurityGroups"]) == sorted(groups)
    run(cloud.destroy(instance_id))


def test_a_retried_launch_with_the_same_token_makes_one_instance(ami: str, client: Any) -> None:
    cloud = make_cloud(ami)
    spec = LaunchSpec(session=6, token="tok-twice", name="w")
    first = run(cloud.launch(spec))
    second = run(cloud.launch(spec))
    assert first == second
    found = client.describe_instances(
        Filters=[{"Name": f"tag:{TAG_TOKEN}", "Values": [spec.token]}]
    )
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    assert ids == [first]
    run(cloud.destroy(first))


# -- describe, destroy -------------------------------------------------------


def test_describe_follows_the_instance_through_its_states(ami: str, client: Any) -> None:
    cloud = make_cloud(ami)
    instance_id = run(cloud.launch(LaunchSpec(session=8, token="tok-states", name="w")))

    running = run(cloud.describe(instance_id))
    raw = describe_raw(client, instance_id)
    assert running == CloudInstance(
        id=instance_id,
        state=InstanceState.RUNNING,
        address=raw["PublicIpAddress"],
        session=8,
        token="tok-states",
        host_keys=(),  # moto's stock console output has no host key block
    )

    client.stop_instances(InstanceIds=[instance_id])
    # Stopped still costs (volumes): not GONE, so it is still destroyed.
    assert run(cloud.describe(instance_id)).state is InstanceState.PENDING

    run(cloud.destroy(instance_id))
    gone = run(cloud.describe(instance_id))
    assert gone.state is InstanceState.GONE and gone.address is None
    assert run(cloud.describe("i-0123456789abcdef0")).state is InstanceState.GONE


def test_state_and_address_mapping() -> None:
    assert instance_state("pending") is InstanceState.PENDING
    assert instance_state("running") is InstanceState.RUNNING
    assert instance_state("stopping") is InstanceState.PENDING
    assert instance_state("stopped") is InstanceState.PENDING
    assert instance_state("shutting-down") is InstanceState.GONE
    assert instance_state("terminated") is InstanceState.GONE
    private_only = cloud_instance(
        {
            "InstanceId": "i-1",
            "State": {"Name": "running"},
            "PrivateIpAddress": "10.0.0.5",
            "Tags": [{"Key": TAG_SESSION, "Value": "not-a-number"}],
        }
    )
    assert private_only == CloudInstance("i-1", InstanceState.RUNNING, address="10.0.0.5")
    pending = cloud_instance({"InstanceId": "i-2", "State": {"Name": "pending"}})
    assert pending == CloudInstance("i-2", InstanceState.PENDING)


def test_an_instance_not_visible_yet_is_pending_not_gone(
    ami: str, client: Any, faulty: FaultyEndpoint
) -> None:
    cloud = make_cloud(ami)
    instance_id = run(cloud.launch(LaunchSpec(session=9, token="tok-unseen", name="w")))
    # EC2's eventual consistency: right after the launch, the id is unknown.
    faulty.faults.append(Fault("DescribeInstances", "InvalidInstanceID.NotFound", 400))
    faulty.faults.append(Fault("TerminateInstances", "InvalidInstanceID.NotFound", 400))
    assert run(cloud.describe(instance_id)).state is InstanceState.PENDING
    with pytest.raises(ProviderError) as caught:
        run(cloud.destroy(instance_id))
    assert caught.value.transient  # terminating waits for it to show
    # Another process, which did not launch it, takes "not found" at its word.
    faulty.faults.append(Fault("DescribeInstances", "InvalidInstanceID.NotFound", 400))
    assert run(make_cloud(ami).describe(instance_id)).state is InstanceState.GONE
    run(cloud.destroy(instance_id))
    assert describe_raw(client, instance_id)["State"]["Name"] == "terminated"


# -- sweep by tag ------------------------------------------------------------


def test_instances_of_a_session_found_by_tag(ami: str, client: Any) -> None:
    cloud = make_cloud(ami)
    ours = [run(cloud.launch(LaunchSpec(11, f"tok-11-{n}", f"w{n}"))) for n in range(2)]
    other = run(cloud.launch(LaunchSpec(12, "tok-12-0", "x")))
    # Launched, but its id never came back to cloudtask: only the tags tell.
    orphan_tags = [
        {"Key": TAG_SESSION, "Value": "11"},
        {"Key": TAG_TOKEN, "Value": "tok-11-orphan"},
        {"Key": TAG_NAME, "Value": "orphan"},
    ]
    orphan = client.run_instances(
        ImageId=ami,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": orphan_tags}],
    )["Instances"][0]["InstanceId"]
    untagged = client.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
    stopped = run(cloud.launch(LaunchSpec(11, "tok-11-stopped", "s")))
    client.stop_instances(InstanceIds=[stopped])
    ended = run(cloud.launch(LaunchSpec(11, "tok-11-ended", "e")))
    run(cloud.destroy(ended))

    session_11 = run(cloud.instances(11))
    assert sorted(i.id for i in session_11) == sorted([*ours, orphan, stopped])
    assert {i.token for i in session_11} == {
        "tok-11-0",
        "tok-11-1",
        "tok-11-orphan",
        "tok-11-stopped",
    }
    assert all(i.session == 11 for i in session_11)
    assert [i.id for i in run(cloud.instances(12))] == [other]
    everything = {i.id for i in run(cloud.instances())}
    assert everything == {*ours, orphan, stopped, other}
    assert untagged["InstanceId"] not in everything

    for instance_id in [*ours, other, orphan, stopped]:
        run(cloud.destroy(instance_id))
    client.terminate_instances(InstanceIds=[untagged["InstanceId"]])
    assert run(cloud.instances()) == []


# -- host keys from the console output ---------------------------------------


def console_with_keys(keys: list[str]) -> str:
    """Console output as an Ubuntu instance prints it, keys and all, with its untidiness."""
    ed25519, ecdsa, rsa = keys
    garbled = "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"x" * 20).decode()
    return "\r\n".join(
        [
            "[    0.000000] Linux version 6.8.0-1012-aws (buildd@lcy02-amd64-061)",
            # An earlier boot's block, cut at the start by the 64 KB limit.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLDOLDOLDOLDOLD root@old",
            "-----END SSH HOST KEY KEYS-----",
            "[   14.012345] cloud-init[812]: Cloud-init v. 24.1 running 'modules:config'",
            "ec2: #############################################################",
            "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            "ec2: 256 SHA256:3Xq0cbcbnotakey root@ip-10-0-0-1 (ECDSA)",
            "ec2: -----END SSH HOST KEY FINGERPRINTS-----",
            "-----BEGIN SSH HOST KEY KEYS-----",
            ecdsa,
            "[   15.100000] random: crng init done",
            ed25519,
            garbled,  # type says rsa, data says ed25519: not a key
            rsa,
            ed25519,  # printed twice: listed once
            "-----END SSH HOST KEY KEYS-----",
            "[   16.000000] cloud-init[812]: Cloud-init v. 24.1 finished",
            # A later block still being written: no end yet.
            "-----BEGIN SSH HOST KEY KEYS-----",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWNEW",
        ]
    )


@pytest.fixture(scope="module")
def host_keys() -> list[str]:
    return [
        public_key(kind, comment="root@ip-10-0-0-1")
        for kind in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")
    ]


def bare(key: str) -> str:
    return " ".join(key.split()[:2])


def test_parse_host_keys(host_keys: list[str]) -> None:
    ed25519, ecdsa, rsa = (bare(key) for key in host_keys)
    assert parse_host_keys(console_with_keys(host_keys)) == (ecdsa, ed25519, rsa)
    prefixed = "\n".join(
        [
            "ec2: -----BEGIN SSH HOST KEY KEYS-----",
            f"ec2: {host_keys[0]}",
            "ec2: -----END SSH HOST KEY KEYS-----",
        ]
    )
    assert parse_host_keys(prefixed) == (ed25519,)


@pytest.mark.parametrize(
    "console",
    [
        "",
        moto_general.SAMPLE_CONSOLE_OUTPUT,
        "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAA",  # not finished yet
        "-----END SSH HOST KEY KEYS-----\n-----BEGIN SSH HOST KEY KEYS-----\n",
        "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 not!base64\n"
        "-----END SSH HOST KEY KEYS-----",
    ],
)
def test_no_host_keys(console: str) -> None:
    assert parse_host_keys(console) == ()


def test_describe_reports_the_console_host_keys(
    ami: str, host_keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Moto has no API to set console output; its server runs in this process,
    # so its stock text is replaced.
    monkeypatch.setattr(moto_general, "SAMPLE_CONSOLE_OUTPUT", console_with_keys(host_keys))
    cloud = make_cloud(ami)
    instance_id = run(cloud.launch(LaunchSpec(13, "tok-keys", "k")))
    described = run(cloud.describe(instance_id))
    assert described.state is InstanceState.RUNNING
    assert set(described.host_keys) == {bare(key) for key in host_keys}
    run(cloud.destroy(instance_id))


def test_console_output_without_latest_where_unsupported(
    ami: str, host_keys: list[str], monkeypatch: pytest.MonkeyPatch, faulty: FaultyEndpoint
) -> None:
    monkeypatch.setattr(moto_general, "SAMPLE_CONSOLE_OUTPUT", console_with_keys(host_keys))
    faulty.faults.append(
        Fault(
            "GetConsoleOutput",
            "UnsupportedOperation",
            400,
            times=5,
            when=lambda params: params.get("Latest") == "true",
        )
    )
    cloud = make_cloud(ami)
    instance_id = run(cloud.launch(LaunchSpec(13, "tok-latest", "k")))
    assert len(run(cloud.describe(instance_id)).host_keys) == 3
    assert faulty.seen.count(("GetConsoleOutput", 400)) == 1
    assert faulty.seen.count(("GetConsoleOutput", 200)) == 1
    run(cloud.destroy(instance_id))


# -- errors and retries ------------------------------------------------------


def test_throttling_is_retried_by_with_retries_not_by_boto3(
    ami: str, client: Any, faulty: FaultyEndpoint
) -> None:
    faulty.faults.append(Fault("RunInstances", "RequestLimitExceeded", 503, times=2))
    cloud = make_cloud(ami)
    retries: list[str] = []
    spec = LaunchSpec(14, "tok-throttled", "t")
    instance_id = run(with_retries(lambda: cloud.launch(spec), "launching t", FAST, retries.append))
    # Three requests in all: boto3 retried none of them itself.
    assert faulty.seen[:3] == [
        ("RunInstances", 503),
        ("DescribeInstances", 200),  # looking for the first attempt's instance
        ("RunInstances", 503),
    ]
    assert faulty.count("RunInstances") == 3
    assert len(retries) == 2
    assert retries[0].startswith("launching t: EC2 RunInstances: RequestLimitExceeded")
    assert tags_of(describe_raw(client, instance_id))[TAG_TOKEN] == "tok-throttled"
    run(cloud.destroy(instance_id))


def test_throttling_that_does_not_stop_fails_transient(ami: str, faulty: FaultyEndpoint) -> None:
    faulty.faults.append(Fault("DescribeInstances", "RequestLimitExceeded", 503, times=100))
    cloud = make_cloud(ami)
    with pytest.raises(ProviderError) as caught:
        run(with_retries(lambda: cloud.describe("i-0123456789abcdef0"), "describing", FAST))
    assert caught.value.transient
    assert str(caught.value).startswith("describing: EC2 DescribeInstances: RequestLimitExceeded")
    assert faulty.count("DescribeInstances") == len(FAST) + 1


def test_auth_failure_is_not_retried(ami: str, faulty: FaultyEndpoint) -> None:
    faulty.faults.append(Fault("RunInstances", "AuthFailure", 401, times=100))
    cloud = make_cloud(ami)
    with pytest.raises(ProviderError) as caught:
        run(with_retries(lambda: cloud.launch(LaunchSpec(15, "tok-auth", "a")), "launching", FAST))
    assert not caught.value.transient
    assert "AuthFailure" in str(caught.value)
    assert faulty.count("RunInstances") == 1


def test_unknown_ami_is_not_retried(ami: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto.settings, "ENABLE_AMI_VALIDATION", True)
    cloud = make_cloud("ami-00000000000000000")
    with pytest.raises(ProviderError) as caught:
        run(cloud.launch(LaunchSpec(15, "tok-ami", "a")))
    assert not caught.value.transient
    assert "InvalidAMIID" in str(caught.value)


def client_error(code: str, status: int, message: str = "no") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "RunInstances",
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("RequestLimitExceeded", 503), True),
        (client_error("Throttling", 400), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("InsufficientInstanceCapacity", 500), True),
        (client_error("InternalError", 500), True),
        (client_error("503", 503), True),  # a body botocore could not parse
        (client_error("AuthFailure", 401), False),
        (client_error("UnauthorizedOperation", 403), False),
        (client_error("InvalidAMIID.NotFound", 400), False),
        (client_error("InvalidAMIID.Malformed", 400), False),
        (client_error("InvalidParameterValue", 400), False),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/"), True),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1/"), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1/"), True),
        (botocore.exceptions.SSLError(endpoint_url="https://x/", error="bad cert"), False),
        (botocore.exceptions.NoCredentialsError(), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_error_translation(error: Exception, transient: bool) -> None:
    assert isinstance(error, botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError)
    translated = translate_error(error, "RunInstances")
    assert isinstance(translated, EC2Error) and isinstance(translated, ProviderError)
    assert translated.transient is transient
    assert str(translated).startswith("EC2 RunInstances: ")


def test_error_messages_are_one_line_without_secrets() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    message = f"Key AKIAIOSFODNN7EXAMPLE\nsecret {secret}\n" + "x " * 400
    translated = translate_error(client_error("AuthFailure", 401, message), "RunInstances")
    text = str(translated)
    assert "\n" not in text and len(text) <= 300
    assert "AKIAIOSFODNN7EXAMPLE" not in text and secret not in text
    assert translated.code == "AuthFailure"


# -- options -----------------------------------------------------------------


def test_from_config_needs_an_ami() -> None:
    with pytest.raises(UsageError, match="--ami-id"):
        EC2Cloud.from_config(Config(ec2_region="us-east-1"))


def test_from_config_needs_a_region(ami: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(UsageError, match="--ec2-region"):
        EC2Cloud.from_config(Config(ami_id=ami))


def test_region_from_boto3_or_the_option(
    ami: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cloud = EC2Cloud.from_config(Config(ami_id=ami))
    assert cloud.region == "us-east-1"
    cloud = EC2Cloud.from_config(Config(ami_id=ami, ec2_region="eu-west-1"))
    assert cloud.region == "eu-west-1"
    # A profile's region, when the environment names none.
    config_file = tmp_path / "aws-config"
    config_file.write_text("[profile work]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_PROFILE", "work")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    cloud = EC2Cloud.from_config(Config(ami_id=ami))
    assert cloud.region == "ap-south-1"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ec2_type": "s3"}, "--ec2-type"),
        ({"ec2_security_group": "default"}, "--ec2-security-group"),
        ({"ec2_security_group": " , "}, "--ec2-security-group"),
        ({"ec2_subnet": "my-subnet"}, "--ec2-subnet"),
        ({"ec2_region": "not a region!"}, "--ec2-region"),
    ],
)
def test_from_config_bad_options(ami: str, options: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        make_cloud(ami, **options)


@pytest.mark.parametrize("region", [None, "us-east-1"])
def test_from_config_unknown_profile(
    ami: str, region: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(UsageError, match=r"AWS configuration: .*no-such-profile"):
        EC2Cloud.from_config(Config(ami_id=ami, ec2_region=region))


# -- launched workers on EC2 ----------------------------------------------------------


def test_launched_ec2_workers_are_named_ec2_dash_n_and_destroyed_when_the_cloud_says_so(
    ami: str, client: Any, tmp_path: Path
) -> None:
    """`ec21`, `ec22` read as one number; and "destroyed" means the cloud said so."""
    session = SessionDir.create(tmp_path)
    store = Store.create(session.path)
    options = SSHOptions(None, 5.0, HostKeys(session.path / "known_hosts", known_hosts=()))
    warnings: list[str] = []
    workers = LaunchedWorkers(
        make_cloud(ami), store, session, options, SessionKey(session.id), "root", None,
        warnings.append,
    )  # fmt: skip

    async def launch_and_destroy() -> tuple[str, bool]:
        instance = await workers.launch()
        try:
            return instance.name, await workers.destroy(instance)
        finally:
            await workers.close()

    name, destroyed = run(launch_and_destroy())

    assert name == "ec2-1"
    assert destroyed and warnings == []
    (record,) = store.instances()
    assert (record.name, record.destroyed is not None) == ("ec2-1", True)
