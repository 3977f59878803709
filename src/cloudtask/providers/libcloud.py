"""Workers launched on any cloud with an Apache Libcloud compute driver.

--libcloud-driver names the driver: a libcloud provider name ("digitalocean",
"linode", "gce", ...) or "package.module:ClassName" for a NodeDriver of
one's own (third-party drivers, and the test driver). The driver is made
with --libcloud-key, --libcloud-secret and the NAME=VALUE pairs of
--libcloud-options; workers start from --libcloud-image in --libcloud-size
(and --libcloud-location, if given), all ids the driver knows.

Drivers differ in what they can tag, so the launch's session and token are
put in the node's name, which every driver keeps: "ct7-0123abcd-libcloud3".
Where the driver takes labels or metadata they go there as well, and where it
takes an idempotency token (EC2's) the launch token is given.

Libcloud is synchronous: each call runs in a thread. A driver's connection
holds the request in flight, so calls on one driver are made one at a time.
Every error a driver raises is turned into one ProviderError here; the key
and secret are scrubbed from anything shown.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import inspect
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.common.types import ProviderError as LibcloudProviderError
from libcloud.compute.base import (
    NodeAuthSSHKey,
    NodeDriver,
    NodeImage,
    NodeLocation,
    NodeSize,
)
from libcloud.compute.providers import DRIVERS, get_driver
from libcloud.compute.types import NodeState

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

T = TypeVar("T")

# Node names: "ct<session>-<token>-<worker name>". Most clouds take lower
# case letters, digits and dashes, up to 63 characters (GCE, DNS labels).
NAME_LIMIT = 63
_NODE_NAME = re.compile(r"ct(\d+)-([a-z0-9]+)(?:-|$)")
_NOT_IN_NAME = re.compile(r"[^a-z0-9-]+")
_TOKEN = re.compile(r"[a-z0-9]+")
_OPTION_NAME = re.compile(r"[A-Za-z_]\w*")
_MESSAGE_LIMIT = 200

# Some clouds list a new node only a while after making it (EC2 is eventually
# consistent): until then, a node launched here and not listed is not gone.
LISTING_GRACE = 120.0


class LibcloudAPIError(ProviderError):
    """A driver call failed; `status` is the HTTP status where the driver tells it."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message, transient=transient)
        self.status = status


def node_name(spec: LaunchSpec) -> str:
    """The node name that carries the launch's session and token."""
    if not _TOKEN.fullmatch(spec.token):
        raise ValueError(f"a launch token must be lower case letters and digits: {spec.token!r}")
    prefix = f"ct{spec.session}-{spec.token}"
    worker = _NOT_IN_NAME.sub("-", spec.name.lower()).strip("-")
    name = f"{prefix}-{worker}" if worker else prefix
    return name[:NAME_LIMIT].rstrip("-")


def parse_node_name(name: object) -> tuple[int | None, str | None]:
    """(session, token) from a name made by node_name; (None, None) for another name."""
    match = _NODE_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        return None, None
    return int(match.group(1)), match.group(2)


def node_tags(extra: object) -> dict[str, str]:
    """Tags, labels or metadata a driver reports in a node's `extra`, as one dict.

    Drivers report them as a dict (EC2 tags, GCE labels, OpenStack metadata),
    GCE metadata as {"items": [{"key": ..., "value": ...}]}, or a list of
    "key:value" strings (DigitalOcean, Linode tags).
    """
    tags: dict[str, str] = {}
    if not isinstance(extra, Mapping):
        return tags
    for field in ("tags", "labels", "metadata"):
        value = extra.get(field)
        if isinstance(value, Mapping) and isinstance(value.get("items"), list):
            value = {
                item.get("key"): item.get("value")
                for item in value["items"]
                if isinstance(item, Mapping)
            }
        if isinstance(value, Mapping):
            tags.update((str(k), str(v)) for k, v in value.items() if v is not None)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    key, _, text = item.replace("=", ":", 1).partition(":")
                    tags.setdefault(key, text)
    return tags


def instance_state(state: object, address: str | None) -> InstanceState:
    # Only a terminated node is gone. A stopped, suspended or failed node still
    # exists (and may still cost money): it is pending, so a sweep destroys it.
    if state == NodeState.TERMINATED:
        return InstanceState.GONE
    if state == NodeState.RUNNING and address:
        return InstanceState.RUNNING
    return InstanceState.PENDING  # on its way, or running with nothing to connect to yet


def to_instance(node: Any) -> CloudInstance:
    """A CloudInstance from a libcloud Node."""
    address = next((ip for ip in [*(node.public_ips or ()), *(node.private_ips or ())] if ip), None)
    session, token = parse_node_name(node.name)
    if session is None:
        tags = node_tags(node.extra)
        session_text = tags.get(TAG_SESSION, "")
        session = int(session_text) if session_text.isdigit() else None
        token = tags.get(TAG_TOKEN) or None
    return CloudInstance(
        id=str(node.id),
        state=instance_state(node.state, address),
        address=str(address) if address else None,
        session=session,
        token=token,
    )


def driver_class(name: str) -> type[NodeDriver]:
    """The NodeDriver class of a libcloud provider name or a "module:Class" path."""
    name = name.strip()
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            reason = one_line(str(exc), _MESSAGE_LIMIT)
            raise UsageError(
                f"--libcloud-driver: cannot import {module_name!r}: {reason}"
            ) from None
        found = getattr(module, class_name, None)
        if not (isinstance(found, type) and issubclass(found, NodeDriver)):
            raise UsageError(
                f"--libcloud-driver: {module_name} has no libcloud NodeDriver class {class_name!r}"
            )
        return found
    try:
        found = get_driver(name)
    except AttributeError:
        known = sorted(str(provider) for provider in DRIVERS)
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(
            f"--libcloud-driver: libcloud has no compute driver {name!r}{hint}; "
            "or give module:Class"
        ) from None
    except Exception as exc:  # a retired provider, a driver's missing dependency
        raise UsageError(
            f"--libcloud-driver: {name}: {one_line(str(exc), _MESSAGE_LIMIT)}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, NodeDriver)):
        raise UsageError(f"--libcloud-driver: {name} is not a compute driver")
    return found


# Arguments every driver passes to its connection, which wants numbers.
NUMBER_OPTIONS = frozenset({"timeout", "retry_delay", "backoff", "port"})


def parse_options(text: str | None) -> dict[str, object]:
    """Driver arguments from "name=value,name=value".

    true and false become booleans, and the connection's numbers (timeout,
    ...) numbers; any other value stays a string, as "2.0" may be a version.
    """
    options: dict[str, object] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not _OPTION_NAME.fullmatch(name):
            raise UsageError(f"--libcloud-options: expected NAME=VALUE, got {item.strip()!r}")
        if name in options:
            raise UsageError(f"--libcloud-options: {name} given twice")
        value = value.strip()
        if name in NUMBER_OPTIONS:
            try:
                options[name] = int(value) if value.isdigit() else float(value)
            except ValueError:
                raise UsageError(f"--libcloud-options: {name}: not a number: {value!r}") from None
        else:
            options[name] = {"true": True, "false": False}.get(value.lower(), value)
    return options


class LibcloudCloud(Cloud):
    """One libcloud driver (an account, a region) and what workers are made of."""

    name: ClassVar[str] = "libcloud"
    listing_lag: ClassVar[float] = LISTING_GRACE

    def __init__(
        self,
        driver: NodeDriver,
        *,
        image: str,
        size: str,
        location: str | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        # Any: libcloud's methods are untyped, and drivers add their own.
        self.driver: Any = driver
        self.image = image
        self._size = size
        self.location = location
        self._secrets = tuple(secret for secret in secrets if secret)
        self._lock = threading.Lock()
        self.listing_grace = LISTING_GRACE
        self._unlisted: dict[str, float] = {}  # launched here, never listed: id -> when

    @classmethod
    def from_config(cls, config: Config) -> LibcloudCloud:
        for option, value in (
            ("--libcloud-driver", config.libcloud_driver),
            ("--libcloud-image", config.libcloud_image),
            ("--libcloud-size", config.libcloud_size),
        ):
            if not value or not value.strip():
                raise UsageError(f"{option}: required for --provider=libcloud")
        assert config.libcloud_driver and config.libcloud_image and config.libcloud_size
        driver_type = driver_class(config.libcloud_driver)
        options = parse_options(config.libcloud_options)
        secrets = (config.libcloud_key or "", config.libcloud_secret or "")
        args: list[str] = []
        if config.libcloud_key:
            args.append(config.libcloud_key)
            if config.libcloud_secret:
                args.append(config.libcloud_secret)
        elif config.libcloud_secret:
            raise UsageError("--libcloud-secret: given without --libcloud-key")
        try:
            driver = driver_type(*args, **options)
        except (TypeError, ValueError, LibcloudError) as exc:
            hint = "" if args else " (no --libcloud-key given)"
            message = _detail(exc, secrets)
            raise UsageError(
                f"--libcloud-driver: cannot make a {driver_type.__name__}{hint}: {message}"
            ) from None
        except Exception as exc:  # a driver that signs in on creation, and failed
            raise translate(exc, f"libcloud: {driver_type.__name__}", secrets) from None
        return cls(
            driver,
            image=config.libcloud_image.strip(),
            size=config.libcloud_size.strip(),
            location=(config.libcloud_location or "").strip() or None,
            secrets=secrets,
        )

    def __repr__(self) -> str:
        return (
            f"LibcloudCloud(driver={type(self.driver).__name__}, image={self.image!r}, "
            f"size={self._size!r}, location={self.location!r})"
        )

    @property
    def size(self) -> str:
        return self._size

    async def launch(self, spec: LaunchSpec) -> str:
        arguments = self._create_arguments(spec)
        try:
            node = await self._call("create_node", lambda: self.driver.create_node(**arguments))
        except ProviderError as exc:
            # A 5xx or a timeout may come after the cloud made the node: a retry
            # would make a second. Its name tells whether it did.
            if exc.transient and (found := await self._launched(spec)) is not None:
                return found
            raise
        node_id = getattr(node, "id", None)
        if not node_id:
            raise ProviderError("libcloud create_node: the driver returned no node id")
        self._unlisted[str(node_id)] = time.monotonic()
        return str(node_id)

    async def describe(self, instance_id: str) -> CloudInstance:
        node = await self._find(instance_id)
        if node is None:
            state = (
                InstanceState.PENDING if self._not_listed_yet(instance_id) else InstanceState.GONE
            )
            return CloudInstance(instance_id, state)
        return to_instance(node)

    async def instances(self, session: int | None = None) -> list[CloudInstance]:
        nodes = await self._list()
        found = []
        for node in nodes:
            instance = to_instance(node)
            if instance.session is None or instance.state is InstanceState.GONE:
                continue  # not launched by cloudtask, or gone already
            if session is None or instance.session == session:
                found.append(instance)
        return found

    async def destroy(self, instance_id: str) -> None:
        # Drivers destroy a Node, not an id: find it first. Not found is gone,
        # but for a node just launched here, which may not be listed yet.
        node = await self._find(instance_id)
        if node is None and self._not_listed_yet(instance_id):
            raise LibcloudAPIError(
                f"libcloud list_nodes: {instance_id} is not listed yet", transient=True
            )
        if node is None or node.state == NodeState.TERMINATED:
            return
        try:
            destroyed = await self._call("destroy_node", lambda: self.driver.destroy_node(node))
        except LibcloudAPIError as exc:
            if exc.status == 404:
                return  # gone between the listing and the destroy
            raise
        if destroyed is False:
            # Listing again tells whether it is on its way out after all.
            raise ProviderError(
                f"libcloud destroy_node: the driver did not destroy {instance_id}", transient=True
            )

    async def close(self) -> None:
        # libcloud keeps a requests session (and its pooled connections) per
        # driver connection; drivers without one have nothing to close.
        session = getattr(getattr(self.driver.connection, "connection", None), "session", None)
        if session is not None:
            await self._call("close", session.close)

    async def _launched(self, spec: LaunchSpec) -> str | None:
        """The id of the node made for spec, if the cloud lists one."""
        try:
            listed = await self.instances(spec.session)
        except ProviderError:
            return None
        return next((found.id for found in listed if found.token == spec.token), None)

    # -- calls into the driver -----------------------------------------------

    def _create_arguments(self, spec: LaunchSpec) -> dict[str, Any]:
        driver = self.driver
        arguments: dict[str, Any] = {
            "name": node_name(spec),
            "size": NodeSize(self._size, self._size, 0, 0, None, 0.0, driver),
            "image": NodeImage(self.image, self.image, driver),
        }
        if self.location:
            arguments["location"] = NodeLocation(self.location, self.location, "", driver)
        accepted = set(inspect.signature(driver.create_node).parameters)
        tags = {TAG_SESSION: str(spec.session), TAG_TOKEN: spec.token}
        # Only arguments whose meaning is the same across drivers: ex_tags is
        # a list in some and a dict in others, so it is left alone.
        if "ex_labels" in accepted:
            arguments["ex_labels"] = tags
        elif "ex_metadata" in accepted:
            arguments["ex_metadata"] = tags
        if "ex_clienttoken" in accepted:
            arguments["ex_clienttoken"] = spec.token
        features = getattr(driver, "features", {}).get("create_node", ())
        if spec.public_key and "ssh_key" in features and "auth" in accepted:
            arguments["auth"] = NodeAuthSSHKey(spec.public_key)
        return arguments

    async def _list(self) -> list[Any]:
        nodes = await self._call("list_nodes", lambda: list(self.driver.list_nodes()))
        for node in nodes:
            self._unlisted.pop(str(node.id), None)
        return nodes

    async def _find(self, instance_id: str) -> Any:
        return next((node for node in await self._list() if str(node.id) == instance_id), None)

    def _not_listed_yet(self, instance_id: str) -> bool:
        launched = self._unlisted.get(instance_id)
        return launched is not None and time.monotonic() - launched < self.listing_grace

    async def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run a driver call in a thread; its errors become one ProviderError."""

        def locked() -> T:
            with self._lock:
                return call()

        try:
            return await asyncio.to_thread(locked)
        except ProviderError:
            raise
        except Exception as exc:
            raise translate(exc, f"libcloud {what}", self._secrets) from None


def translate(exc: BaseException, what: str, secrets: Iterable[str] = ()) -> LibcloudAPIError:
    """The ProviderError for what a libcloud driver raised: transient when a retry may help."""
    detail = _detail(exc, secrets)
    code = getattr(exc, "code", None) if isinstance(exc, BaseHTTPError) else None
    if isinstance(exc, LibcloudProviderError):
        code = exc.http_code
    if isinstance(exc, InvalidCredsError):
        return LibcloudAPIError(f"{what}: the key or secret was refused: {detail}", status=401)
    if isinstance(code, int):
        shown = detail if detail.startswith(str(code)) else f"{code} {detail}"
        transient = code in (408, 429) or code >= 500
        return LibcloudAPIError(f"{what}: {shown}", transient=transient, status=code)
    if isinstance(exc, OSError) and not isinstance(exc, ValueError):
        # Connection refused or reset, timeouts, DNS and TLS failures; the
        # HTTP library's errors are OSErrors too, but for its bad-URL ones
        # (which are also ValueErrors).
        return LibcloudAPIError(f"{what}: {type(exc).__name__}: {detail}", transient=True)
    return LibcloudAPIError(f"{what}: {type(exc).__name__}: {detail}")


def _detail(exc: BaseException, secrets: Iterable[str]) -> str:
    """What exc says, on one line, without the key or secret."""
    return one_line(scrub(str(exc) or type(exc).__name__, secrets), _MESSAGE_LIMIT)
