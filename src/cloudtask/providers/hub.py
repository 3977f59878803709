"""Workers launched on Amazon EC2 through the TurnKey Hub API.

The Hub launches TurnKey appliances (or a snapshot, or an AMI) in the Hub
account's EC2 regions and reports them as "server records". This module
speaks the handful of endpoints cloudtask needs, over one httpx client:

    POST amazon/launch/NAME/            launch; answers a record at once
    GET  amazon/instance/ID/            one record (refresh_cache=true)
    GET  amazon/instances/              every record of the account
    PUT  amazon/instance/ID/terminate/  destroy (auto_unregister=true)

The Hub has no tags and no idempotency token, so a launch's session, token
and worker name go into the record's free-text label; listing parses them
back, which is how a sweep finds an instance whose id never came back.

Every httpx error and error status is turned into one ProviderError here.
The API key travels only in a request header: it is never part of a URL, a
message or a repr, and is scrubbed from anything the Hub echoes back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from ..errors import UsageError
from ..output import one_line, scrub
from .cloud import (
    TAG_SESSION,
    TAG_TOKEN,
    Cloud,
    CloudInstance,
    InstanceState,
    LaunchSpec,
    ProviderError,
)

if TYPE_CHECKING:
    from ..config import Config

DEFAULT_URL = "https://hub.turnkeylinux.org/api/"
DEFAULT_APPLIANCE = "core"  # TurnKey Core: the smallest appliance, a plain Debian
DEFAULT_REGION = "us-east-1"
# A current general-purpose burstable type with 2 GiB: enough for most batch
# jobs, and cheap. The Hub passes the size through to EC2 as the instance type.
DEFAULT_SIZE = "t3.small"
DEFAULT_TYPE = "ebs"  # EBS-backed; "s3" (instance store) is the other choice
STORAGE_TYPES = ("ebs", "s3")

# A slow Hub must not hang a run: every call gives up after these (seconds).
TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# Record statuses meaning the instance is going or gone. Anything else that is
# not "running" with an address is treated as still pending, so that an
# instance in a status we do not know is waited on and destroyed, not forgotten.
GONE_STATUSES = frozenset({"terminated", "terminating", "shutting-down", "stopping", "stopped"})

LABEL_NAME = "name"  # the label key of the worker's name
_LABEL_PAIR = re.compile(r"(\S+?)=(\S*)")
# A Hub error name, as in "HubAccount.InvalidApiKey".
_ERROR_NAME = re.compile(r"[A-Za-z][\w.]*")
_MESSAGE_LIMIT = 200


class HubAPIError(ProviderError):
    """A Hub API call failed; `status` is the HTTP status (None: no answer)."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        error_name: str | None = None,
    ) -> None:
        super().__init__(message, transient=transient)
        self.status = status
        self.error_name = error_name


def make_label(spec: LaunchSpec) -> str:
    """The record label naming the launch: `cloudtask-session=7 cloudtask-token=ab name=hub3`."""
    for value in (spec.token, spec.name):
        if not value or any(char.isspace() or char == "=" for char in value):
            raise ValueError(f"not usable in a Hub label: {value!r}")
    return f"{TAG_SESSION}={spec.session} {TAG_TOKEN}={spec.token} {LABEL_NAME}={spec.name}"


def parse_label(label: str) -> tuple[int | None, str | None]:
    """(session, token) from a label made by make_label; None for what it lacks."""
    pairs = dict(_LABEL_PAIR.findall(label))
    session_text = pairs.get(TAG_SESSION, "")
    session = int(session_text) if session_text.isdigit() else None
    return session, pairs.get(TAG_TOKEN) or None


def instance_state(status: str, address: str | None) -> InstanceState:
    status = status.strip().lower()
    if status in GONE_STATUSES:
        return InstanceState.GONE
    if status == "running" and address:
        return InstanceState.RUNNING
    return InstanceState.PENDING


def record_label(record: Mapping[str, Any]) -> str:
    # The brief's records carry "label"; the Hub's own records have kept it
    # as the description of a nested "server" record. Either will do.
    label = record.get("label")
    if not isinstance(label, str):
        server = record.get("server")
        label = server.get("description") if isinstance(server, Mapping) else None
    return label if isinstance(label, str) else ""


def to_instance(record: Mapping[str, Any]) -> CloudInstance:
    """A CloudInstance from a Hub server record."""
    instance_id = record.get("instanceid")
    if not isinstance(instance_id, str) or not instance_id:
        raise HubAPIError("the Hub answered a server record without an instanceid", transient=False)
    address = record.get("ipaddress")
    address = address.strip() if isinstance(address, str) and address.strip() else None
    status = record.get("status")
    session, token = parse_label(record_label(record))
    keys = record.get("sshkeys")
    host_keys = (
        tuple(key.strip() for key in keys if isinstance(key, str) and key.strip())
        if isinstance(keys, list)
        else ()
    )
    return CloudInstance(
        id=instance_id,
        state=instance_state(status if isinstance(status, str) else "", address),
        address=address,
        session=session,
        token=token,
        host_keys=host_keys,
    )


def check_url(url: str) -> str:
    """The API base URL, ending in "/"; ValueError with the reason when unusable."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("give the API base URL alone (no user, query or fragment)")
    # The API key goes in a header: over plain HTTP only to this machine.
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"plain http would send the API key in clear to {parts.hostname}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_detail(response: httpx.Response) -> tuple[str | None, str]:
    """(error name, description) of an error answer.

    The brief's Hub answers JSON {"name": ..., "description": ...}; the Hub
    has also answered plain text "Name: description". Anything else (a proxy's
    HTML page) has no name, and the reason phrase stands for it.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        name = body.get("name") or body.get("error")
        description = body.get("description") or body.get("message") or ""
        if isinstance(name, str) and _ERROR_NAME.fullmatch(name):
            return name, str(description)
        return None, str(description or response.reason_phrase)
    text = response.text.strip()
    name, colon, description = text.partition(":")
    if colon and _ERROR_NAME.fullmatch(name.strip()):
        return name.strip(), description.strip()
    return None, response.reason_phrase


class HubCloud(Cloud):
    """A TurnKey Hub account, and what launched workers are made of."""

    name: ClassVar[str] = "hub"
    idempotent_launch: ClassVar[bool] = True  # launch() looks for its token first

    def __init__(
        self,
        apikey: str,
        *,
        url: str = DEFAULT_URL,
        image: str = DEFAULT_APPLIANCE,
        region: str = DEFAULT_REGION,
        size: str = DEFAULT_SIZE,
        storage: str = DEFAULT_TYPE,
        backup_id: str | None = None,
        timeout: httpx.Timeout | float = TIMEOUT,
    ) -> None:
        if not apikey:
            raise ValueError("an API key is required")
        self._apikey = apikey
        self.url = check_url(url)
        self.image = image  # an appliance name, a snapshot id or an AMI id
        self.region = region
        self._size = size
        self.storage = storage
        self.backup_id = backup_id
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={"apikey": apikey, "Accept": "application/json"},
            timeout=timeout,
            # A redirect could carry the key header somewhere else.
            follow_redirects=False,
        )

    @classmethod
    def from_config(cls, config: Config) -> HubCloud:
        if not config.hub_apikey or not config.hub_apikey.strip():
            raise UsageError("--hub-apikey: a TurnKey Hub API key is required for --provider=hub")
        try:
            url = check_url(config.hub_url or DEFAULT_URL)
        except ValueError as exc:
            raise UsageError(f"--hub-url: {exc}") from None
        if config.snapshot_id and config.ami_id:
            raise UsageError("--snapshot-id, --ami-id: give one of them, not both")
        storage = (config.ec2_type or DEFAULT_TYPE).strip().lower()
        if storage not in STORAGE_TYPES:
            raise UsageError(
                f"--ec2-type: with --provider=hub, one of {', '.join(STORAGE_TYPES)}; "
                f"got {config.ec2_type!r}"
            )
        return cls(
            config.hub_apikey.strip(),
            url=url,
            image=config.snapshot_id or config.ami_id or DEFAULT_APPLIANCE,
            region=config.ec2_region or DEFAULT_REGION,
            size=config.ec2_size or DEFAULT_SIZE,
            storage=storage,
            backup_id=config.backup_id,
        )

    def __repr__(self) -> str:
        return (
            f"HubCloud(url={self.url!r}, image={self.image!r}, region={self.region!r}, "
            f"size={self._size!r}, storage={self.storage!r})"
        )

    @property
    def size(self) -> str:
        return self._size

    async def launch(self, spec: LaunchSpec) -> str:
        attributes = {
            "region": self.region,
            "size": self._size,
            "type": self.storage,
            "label": make_label(spec),
        }
        if self.backup_id:
            attributes["backup_id"] = self.backup_id
        # No Hub attribute for a login key is known, so spec.public_key is not
        # sent: logins rely on what the Hub account installs.
        try:
            record = await self._call(
                "POST", f"amazon/launch/{quote(self.image, safe='')}/", attributes
            )
        except HubAPIError as exc:
            # A 5xx or a timeout may come after the Hub launched it: a retry
            # would launch a second. The label tells whether it did.
            if exc.transient and (found := await self._launched(spec)) is not None:
                return found
            raise
        return to_instance(self._one_record(record)).id

    async def describe(self, instance_id: str) -> CloudInstance:
        try:
            record = await self._call(
                "GET", self._instance_path(instance_id), {"refresh_cache": "true"}
            )
        except HubAPIError as exc:
            if _unknown_instance(exc):
                return CloudInstance(instance_id, InstanceState.GONE)
            raise
        return to_instance(self._one_record(record))

    async def instances(self, session: int | None = None) -> list[CloudInstance]:
        records = await self._call("GET", "amazon/instances/", {"refresh_cache": "true"})
        if not isinstance(records, list):
            raise HubAPIError("the Hub answered the instance list with no list", transient=False)
        found = []
        for record in records:
            if not isinstance(record, Mapping) or not record.get("instanceid"):
                continue  # nothing to destroy by id (yet)
            instance = to_instance(record)
            if instance.session is None or instance.state is InstanceState.GONE:
                continue  # not launched by cloudtask, or gone already
            if session is None or instance.session == session:
                found.append(instance)
        return found

    async def destroy(self, instance_id: str) -> None:
        path = self._instance_path(instance_id) + "terminate/"
        try:
            await self._call("PUT", path, {"auto_unregister": "true"})
        except HubAPIError as exc:
            if _unknown_instance(exc):
                return
            # How the Hub refuses to terminate a terminated instance is not
            # known: if it refuses, ask whether the instance is gone anyway.
            if exc.status in (400, 409, 410) and (
                (await self.describe(instance_id)).state is InstanceState.GONE
            ):
                return
            raise

    async def close(self) -> None:
        await self._client.aclose()

    async def _launched(self, spec: LaunchSpec) -> str | None:
        """The id of the instance launched for spec, if the Hub lists one."""
        try:
            listed = await self.instances(spec.session)
        except ProviderError:
            return None
        return next((found.id for found in listed if found.token == spec.token), None)

    # -- the one place requests are made and errors translated ---------------

    @staticmethod
    def _instance_path(instance_id: str) -> str:
        return f"amazon/instance/{quote(instance_id, safe='')}/"

    @staticmethod
    def _one_record(answer: Any) -> Mapping[str, Any]:
        # The Hub has answered a single-instance GET with a list of one record.
        if isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        if not isinstance(answer, Mapping):
            raise HubAPIError(
                "the Hub answered something that is not a server record", transient=False
            )
        return answer

    async def _call(self, method: str, path: str, attributes: Mapping[str, str]) -> Any:
        """One API request; its decoded JSON answer, or a HubAPIError."""
        where = f"Hub API {method} {path}"
        try:
            if method == "GET":
                response = await self._client.request(method, path, params=dict(attributes))
            else:
                response = await self._client.request(method, path, data=dict(attributes))
        except httpx.TimeoutException:
            raise HubAPIError(f"{where}: no answer in time", transient=True) from None
        except httpx.TransportError as exc:
            raise HubAPIError(
                f"{where}: cannot reach {self._client.base_url.host}: "
                f"{self._shown(str(exc) or type(exc).__name__)}",
                transient=True,
            ) from None
        except httpx.HTTPError as exc:
            raise HubAPIError(
                f"{where}: {self._shown(str(exc) or type(exc).__name__)}", transient=False
            ) from None
        status = response.status_code
        if not 200 <= status < 300:
            name, description = error_detail(response)
            reason = f"{name}: {description}" if name else description
            raise HubAPIError(
                f"{where}: {status} {self._shown(reason)}",
                # 408 and 429 ask for a later try; a 5xx may pass.
                transient=status in (408, 429) or status >= 500,
                status=status,
                error_name=name,
            )
        try:
            return response.json()
        except ValueError:
            raise HubAPIError(
                f"{where}: {status}, but the answer is not JSON", transient=False
            ) from None

    def _shown(self, text: str) -> str:
        """text on one line, without the API key."""
        return one_line(scrub(text, [self._apikey]), _MESSAGE_LIMIT)


def _unknown_instance(exc: HubAPIError) -> bool:
    # A 404 with a Hub error name is the Hub saying it knows no such instance.
    # A 404 without one is a wrong URL (a web server's page), which must not
    # pass for "gone": that would leave running instances behind.
    return exc.status == 404 and exc.error_name is not None
