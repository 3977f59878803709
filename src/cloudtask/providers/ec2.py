"""The EC2 cloud: launches, describes, lists and terminates instances with boto3.

boto3's own configuration is honoured as it stands: the credential chain,
profiles (AWS_PROFILE), AWS_ENDPOINT_URL, and the configured region when
--ec2-region is not given. Options used:

    --ami-id              the image (required; "resolve:ssm:..." works too)
    --ec2-region          the region (else boto3's; one of the two is required)
    --ec2-size            the instance type, DEFAULT_SIZE (t3.small) by default
    --ec2-type            on-demand (the default) or spot: a one-time spot request
                          whose instance is terminated, not stopped, when reclaimed
    --ec2-subnet          the subnet launched instances join (else the default VPC's)
    --ec2-security-group  security group ids, comma-separated (else the VPC's default)
    --user                the login user the session key is authorized for

Every instance is tagged with the session, the launch intent's token and the
worker's name (instance and volumes), so a sweep by tag finds it even if its
id never came back. The token is also the ClientToken of RunInstances: EC2
returns the same instance when a launch is retried, rather than a second one.
The session's public key reaches the instance as cloud-config user data;
its host keys come back through the console output, where cloud-init prints
them (`parse_host_keys`).

boto3 is synchronous, so calls run in threads (one client per EC2Cloud, which
boto3 allows). Its own retries are off: every botocore error is translated
once, here, into a ProviderError that says whether trying again may help, and
`with_retries` does the retrying.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    InvalidRegionError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import UsageError
from ..output import one_line
from .cloud import (
    TAG_NAME,
    TAG_SESSION,
    TAG_TOKEN,
    Cloud,
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef

    from ..config import Config

DEFAULT_SIZE = "t3.small"

# One attempt per call: with_retries is the one place that retries, and a
# boto3 retry underneath it would multiply its attempts and delays.
CLIENT_CONFIG = BotoConfig(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=10,
    read_timeout=60,
    # Launches and polls run in parallel threads; the default pool of 10
    # connections would be discarded and reopened.
    max_pool_connections=32,
    user_agent_extra="cloudtask",
)

NOT_FOUND = "InvalidInstanceID.NotFound"

# EC2 is eventually consistent: an instance just launched may be unknown to
# DescribeInstances and TerminateInstances for a while. Within this many
# seconds of its launch, "not found" means "not visible yet", not "gone".
VISIBILITY_GRACE = 120.0

# Error codes for which a later attempt may succeed. Any 5xx is transient too.
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "InsufficientInstanceCapacity",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)

# Codes with which EC2 may refuse GetConsoleOutput's Latest on a non-Nitro
# instance type; the buffered output is asked for instead.
LATEST_UNSUPPORTED = frozenset(
    {
        "UnsupportedOperation",
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterCombination",
    }
)

# Every state but terminated: a stopped instance still bills for its volumes.
LIVE_STATES = ("pending", "running", "stopping", "stopped")

MESSAGE_LIMIT = 300
# Access key ids, and long base64 runs (secret keys, session tokens, and the
# kilobytes of an encoded authorization failure message) are cut out of messages.
SECRET_LIKE = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|[A-Za-z0-9+/]{40,}={0,2}")

T = TypeVar("T")


class EC2Error(ProviderError):
    """A ProviderError with the EC2 error code, where there is one."""

    def __init__(self, message: str, *, transient: bool = False, code: str | None = None) -> None:
        super().__init__(message, transient=transient)
        self.code = code


def redacted(message: str) -> str:
    """The message on one line, without anything that looks like a credential."""
    return one_line(SECRET_LIKE.sub("[redacted]", message), MESSAGE_LIMIT)


def translate_error(exc: ClientError | BotoCoreError, operation: str) -> EC2Error:
    """The ProviderError a botocore error means: transient when trying again may help."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "Error"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        transient = code in TRANSIENT_CODES or status >= 500
        message = redacted(f"EC2 {operation}: {code}: {error.get('Message') or 'no message'}")
        return EC2Error(message, transient=transient, code=code)
    # Connections refused, reset or timed out; a certificate problem will not
    # mend itself in seconds. Credentials, profile and parameter problems are
    # BotoCoreErrors too, and permanent.
    transient = isinstance(exc, BotoConnectionError | HTTPClientError) and not isinstance(
        exc, SSLError
    )
    return EC2Error(redacted(f"EC2 {operation}: {exc}"), transient=transient)


# -- pure parts: user data, descriptions, console output ---------------------


def cloud_config(public_key: str, user: str) -> str:
    """cloud-config user data authorizing `public_key` for the login user.

    cloud-init gives top-level ssh_authorized_keys to the image's default user
    (ubuntu, admin, ec2-user...) and to root; for root it prefixes them with a
    "log in as ..." command unless disable_root is false.
    """
    # JSON's double-quoted string is valid YAML, and escapes anything odd.
    lines = ["#cloud-config", "ssh_authorized_keys:", f"  - {json.dumps(public_key.strip())}"]
    if user == "root":
        lines.append("disable_root: false")
    return "\n".join(lines) + "\n"


def instance_state(name: str) -> InstanceState:
    """The cloudtask state of an EC2 state name."""
    if name == "running":
        return InstanceState.RUNNING
    if name in ("shutting-down", "terminated"):
        return InstanceState.GONE
    # Stopped or stopping is not gone: it still costs (its volumes) and must be
    # terminated; as PENDING it is waited for, times out and is destroyed.
    return InstanceState.PENDING


def cloud_instance(description: InstanceTypeDef | Mapping[str, Any]) -> CloudInstance:
    """A CloudInstance from one instance of a DescribeInstances answer."""
    tags = {tag.get("Key"): tag.get("Value") for tag in description.get("Tags", [])}
    state = instance_state(description.get("State", {}).get("Name", "pending"))
    address = None
    if state is not InstanceState.GONE:
        address = description.get("PublicIpAddress") or description.get("PrivateIpAddress")
    return CloudInstance(
        id=description["InstanceId"],
        state=state,
        address=address,
        session=_session_number(tags.get(TAG_SESSION)),
        token=tags.get(TAG_TOKEN),
    )


def _session_number(tag: str | None) -> int | None:
    try:
        return int(tag) if tag is not None else None
    except ValueError:
        return None


HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"
# A key anywhere in a line: consoles prefix lines ("ec2: ", timestamps) and
# the kernel may print into the middle of cloud-init's block.
HOST_KEY = re.compile(
    r"(?<![\w-])(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa)[ \t]+"
    r"([A-Za-z0-9+/]+={0,2})(?![A-Za-z0-9+/=])"
)


def parse_host_keys(console: str) -> tuple[str, ...]:
    """The host keys ("ssh-ed25519 AAAA...") cloud-init printed to the console.

    The last complete block counts: the start of the output may be cut (EC2
    keeps the last 64 KB), and a block still being written has no end yet.
    A line whose key data does not name its own key type is garbled, and left
    out. Empty when there is no complete block.
    """
    end = console.rfind(HOST_KEYS_END)
    begin = console.rfind(HOST_KEYS_BEGIN, 0, max(end, 0))
    if end < 0 or begin < 0:
        return ()
    keys: list[str] = []
    for line in console[begin + len(HOST_KEYS_BEGIN) : end].splitlines():
        match = HOST_KEY.search(line)
        if match is None or not _names_its_type(match[1], match[2]):
            continue
        key = f"{match[1]} {match[2]}"
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _names_its_type(key_type: str, data: str) -> bool:
    """An OpenSSH public key blob starts with its type, as a length-prefixed string."""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    length = int.from_bytes(blob[:4], "big")
    return len(blob) > 4 + length and blob[4 : 4 + length] == key_type.encode()


# -- options -----------------------------------------------------------------


def _market(ec2_type: str | None) -> bool:
    """Whether --ec2-type asks for spot instances."""
    value = (ec2_type or "on-demand").strip().lower()
    if value not in ("spot", "on-demand"):
        raise UsageError(f"--ec2-type: the ec2 provider takes spot or on-demand, got {ec2_type!r}")
    return value == "spot"


def _security_groups(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    groups = tuple(group.strip() for group in value.split(",") if group.strip())
    if not groups:
        raise UsageError("--ec2-security-group: no security group id given")
    for group in groups:
        if not group.startswith("sg-"):
            raise UsageError(f"--ec2-security-group: {group!r} is not a security group id (sg-...)")
    return groups


def _subnet(value: str | None) -> str | None:
    if value is None:
        return None
    subnet = value.strip()
    if not subnet.startswith("subnet-"):
        raise UsageError(f"--ec2-subnet: {value!r} is not a subnet id (subnet-...)")
    return subnet


# -- the cloud ---------------------------------------------------------------


# The instance metadata service, as instances reach it (CLOUDTASK_EC2_METADATA_URL
# for tests that serve their own).
METADATA_URL = "http://169.254.169.254"


class EC2Cloud(Cloud):
    name = "ec2"
    listing_lag = VISIBILITY_GRACE
    idempotent_launch = True  # ClientToken

    @classmethod
    def from_config(cls, config: Config) -> EC2Cloud:
        if not config.ami_id or not config.ami_id.strip():
            raise UsageError("--ami-id: the ec2 provider needs the AMI workers start from")
        spot = _market(config.ec2_type)
        groups = _security_groups(config.ec2_security_group)
        subnet = _subnet(config.ec2_subnet)
        region = config.ec2_region
        try:
            session = boto3.session.Session()
            region = region or session.region_name
            if not region:
                raise UsageError(
                    "--ec2-region: no region given, and boto3 has none configured "
                    "(AWS_DEFAULT_REGION, or region in ~/.aws/config)"
                )
            # Resolves the credential chain (not yet asking AWS whether they are
            # good): on a machine with none, this probes the metadata service.
            client = session.client("ec2", region_name=region, config=CLIENT_CONFIG)
        except InvalidRegionError:
            raise UsageError(f"--ec2-region: not a region name: {region!r}") from None
        except BotoCoreError as exc:
            # An unknown profile, an unreadable config file, a credential
            # process that fails: nothing can run until it is fixed.
            raise UsageError(f"AWS configuration: {redacted(str(exc))}") from None
        return cls(
            client,
            image=config.ami_id.strip(),
            size=(config.ec2_size or DEFAULT_SIZE).strip(),
            spot=spot,
            subnet=subnet,
            security_groups=groups,
            user=config.user,
        )

    def __init__(
        self,
        client: EC2Client,
        *,
        image: str,
        size: str = DEFAULT_SIZE,
        spot: bool = False,
        subnet: str | None = None,
        security_groups: tuple[str, ...] = (),
        user: str = "root",
    ) -> None:
        self._client = client
        self._image = image
        self._size = size
        self._spot = spot
        self._subnet = subnet
        self._security_groups = security_groups
        self._user = user
        # Instance id -> when its launch returned, until DescribeInstances first
        # shows it (see VISIBILITY_GRACE).
        self._unseen: dict[str, float] = {}
        # Tokens a launch was attempted with: a second attempt looks for the
        # first one's instance before asking again.
        self._tokens: set[str] = set()

    @property
    def size(self) -> str:
        return self._size

    @property
    def region(self) -> str:
        """The region instances are launched in."""
        return str(self._client.meta.region_name)

    async def launch(self, spec: LaunchSpec) -> str:
        """RunInstances with the token as ClientToken; the id as soon as EC2 answers."""
        if spec.token in self._tokens:
            # EC2 answers a repeated ClientToken with the first instance; this
            # lookup also covers endpoints that ignore ClientToken (moto).
            found = await self._find_token(spec.token)
            if found is not None:
                return found
        self._tokens.add(spec.token)
        arguments = self.run_arguments(spec)
        reservation = await self._call(
            "RunInstances", lambda: self._client.run_instances(**arguments)
        )
        instance_id = reservation["Instances"][0]["InstanceId"]
        self._unseen[instance_id] = time.monotonic()
        return instance_id

    def spot_metadata(self) -> str | None:
        if not self._spot:
            return None
        return os.environ.get("CLOUDTASK_EC2_METADATA_URL", METADATA_URL)

    def run_arguments(self, spec: LaunchSpec) -> dict[str, Any]:
        """The RunInstances arguments for one launch."""
        tags = [
            {"Key": TAG_SESSION, "Value": str(spec.session)},
            {"Key": TAG_TOKEN, "Value": spec.token},
            {"Key": TAG_NAME, "Value": spec.name},
        ]
        arguments: dict[str, Any] = {
            "ImageId": self._image,
            "InstanceType": self._size,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": spec.token,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            # A worker that powers itself off is done with, not kept (and
            # billed for its volumes) as a stopped instance.
            "InstanceInitiatedShutdownBehavior": "terminate",
        }
        if self._subnet is not None:
            arguments["SubnetId"] = self._subnet
        if self._security_groups:
            arguments["SecurityGroupIds"] = list(self._security_groups)
        if self._spot:
            arguments["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        if spec.public_key:
            # boto3 base64-encodes UserData itself.
            arguments["UserData"] = cloud_config(spec.public_key, self._user)
        return arguments

    async def describe(self, instance_id: str) -> CloudInstance:
        """DescribeInstances; for a running instance also GetConsoleOutput, for its host keys.

        "Not found" is GONE, except for an instance this EC2Cloud launched less
        than VISIBILITY_GRACE seconds ago: that one is PENDING.
        """
        descriptions = await self._describe_ids(instance_id)
        if not descriptions:
            if self._not_visible_yet(instance_id):
                return CloudInstance(instance_id, InstanceState.PENDING)
            self._unseen.pop(instance_id, None)
            return CloudInstance(instance_id, InstanceState.GONE)
        self._unseen.pop(instance_id, None)
        instance = cloud_instance(descriptions[0])
        if instance.state is InstanceState.RUNNING:
            instance = dataclasses.replace(instance, host_keys=await self.host_keys(instance_id))
        return instance

    async def host_keys(self, instance_id: str) -> tuple[str, ...]:
        """The host keys in the instance's console output; empty before cloud-init prints them."""
        try:
            # Latest: the output as it is now, where the instance type allows
            # (Nitro); the buffered output lags the boot by minutes.
            output = await self._call(
                "GetConsoleOutput",
                lambda: self._client.get_console_output(InstanceId=instance_id, Latest=True),
            )
        except EC2Error as exc:
            if exc.code not in LATEST_UNSUPPORTED:
                raise
            output = await self._call(
                "GetConsoleOutput",
                lambda: self._client.get_console_output(InstanceId=instance_id),
            )
        return parse_host_keys(output.get("Output") or "")

    async def instances(self, session: int | None = None) -> list[CloudInstance]:
        """Instances tagged with the session (or any session) and not terminated.

        Stopped ones are listed (as PENDING): they still cost. Host keys are
        not looked up here: that would be one more call per instance.
        """
        tag: FilterTypeDef = (
            {"Name": "tag-key", "Values": [TAG_SESSION]}
            if session is None
            else {"Name": f"tag:{TAG_SESSION}", "Values": [str(session)]}
        )
        states: FilterTypeDef = {"Name": "instance-state-name", "Values": list(LIVE_STATES)}
        descriptions = await self._describe_filtered([tag, states])
        return [cloud_instance(description) for description in descriptions]

    async def destroy(self, instance_id: str) -> None:
        """TerminateInstances; an id EC2 does not know is gone already, unless just launched."""
        try:
            await self._call(
                "TerminateInstances",
                lambda: self._client.terminate_instances(InstanceIds=[instance_id]),
            )
        except EC2Error as exc:
            if exc.code != NOT_FOUND:
                raise
            if self._not_visible_yet(instance_id):
                # Not gone: not visible yet. Terminating must wait for it.
                raise EC2Error(
                    f"EC2 TerminateInstances: {instance_id} was just launched and is "
                    "not visible yet",
                    transient=True,
                    code=NOT_FOUND,
                ) from None
        self._unseen.pop(instance_id, None)

    async def close(self) -> None:
        self._client.close()

    # -- calls ----------------------------------------------------------------

    async def _call(self, operation: str, call: Callable[[], T]) -> T:
        """Run one boto3 call in a thread; its errors as EC2Errors."""
        try:
            return await asyncio.to_thread(call)
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, operation) from None

    async def _describe_ids(self, instance_id: str) -> list[InstanceTypeDef]:
        try:
            answer = await self._call(
                "DescribeInstances",
                lambda: self._client.describe_instances(InstanceIds=[instance_id]),
            )
        except EC2Error as exc:
            if exc.code == NOT_FOUND:
                return []
            raise
        return list(_flatten(answer["Reservations"]))

    async def _describe_filtered(self, filters: list[FilterTypeDef]) -> list[InstanceTypeDef]:
        def every_page() -> list[InstanceTypeDef]:
            pages = self._client.get_paginator("describe_instances").paginate(Filters=filters)
            return [description for page in pages for description in _flatten(page["Reservations"])]

        return await self._call("DescribeInstances", every_page)

    async def _find_token(self, token: str) -> str | None:
        """The instance launched with this token, if one is visible; a live one first."""
        descriptions = await self._describe_filtered(
            [{"Name": f"tag:{TAG_TOKEN}", "Values": [token]}]
        )
        descriptions.sort(
            key=lambda d: d.get("State", {}).get("Name") in ("shutting-down", "terminated")
        )
        return descriptions[0]["InstanceId"] if descriptions else None

    def _not_visible_yet(self, instance_id: str) -> bool:
        launched = self._unseen.get(instance_id)
        return launched is not None and time.monotonic() - launched < VISIBILITY_GRACE


def _flatten(reservations: Iterable[Any]) -> Iterable[InstanceTypeDef]:
    for reservation in reservations:
        yield from reservation.get("Instances", [])
