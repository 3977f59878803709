"""A libcloud compute driver whose cloud is the test Hub of tests/support/hubserver.py.

With it the libcloud provider runs its real code path (driver resolution by
import path, construction from --libcloud-options, create_node, list_nodes,
destroy_node, libcloud's own HTTP connection and exceptions) against the same
in-memory cloud that backs the hub provider's tests. Made as a real driver
is: a ConnectionKey that adds the key header, and a JsonResponse that turns
an error answer into libcloud's exceptions (401 into InvalidCredsError, 429
into RateLimitReachedError, any other into BaseHTTPError).

    --libcloud-driver=tests.support.libcloud_driver:CloudtaskTestDriver
    --libcloud-key=APIKEY --libcloud-options=url=http://127.0.0.1:PORT/api/

A node's name is the Hub label; the metadata create_node is given follows it
in the label as KEY=VALUE words and comes back in the node's extra.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from libcloud.common.base import ConnectionKey, JsonResponse
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import (
    Node,
    NodeAuthSSHKey,
    NodeDriver,
    NodeImage,
    NodeLocation,
    NodeSize,
)
from libcloud.compute.types import NodeState

STATES = {
    "pending": NodeState.PENDING,
    "running": NodeState.RUNNING,
    "terminated": NodeState.TERMINATED,
}


class HubResponse(JsonResponse):  # type: ignore[misc]
    def success(self) -> bool:
        return 200 <= int(self.status) < 300

    def parse_error(self) -> str:
        try:
            body = json.loads(self.body)
            message = f"{body['name']}: {body['description']}"
        except (ValueError, KeyError, TypeError):
            message = str(self.body)
        if self.status == 401:
            raise InvalidCredsError(message)
        return message


class HubConnection(ConnectionKey):  # type: ignore[misc]
    responseCls = HubResponse

    def add_default_headers(self, headers: dict[str, str]) -> dict[str, str]:
        headers.update({"apikey": self.key, "Accept": "application/json"})
        return headers


class CloudtaskTestDriver(NodeDriver):  # type: ignore[misc]
    """The test Hub as a libcloud cloud: key is its API key, url its base URL."""

    type = "cloudtask-test"
    name = "cloudtask test cloud"
    website = "http://127.0.0.1/"
    connectionCls = HubConnection
    features = {"create_node": ["ssh_key"]}  # noqa: RUF012 (libcloud's own layout)

    def __init__(self, key: str, url: str = "http://127.0.0.1/api/", **kwargs: Any) -> None:
        parts = urlsplit(url)
        self.api_path = parts.path.rstrip("/") + "/"
        super().__init__(
            key,
            secure=parts.scheme == "https",
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            **kwargs,
        )

    def create_node(
        self,
        name: str,
        size: NodeSize,
        image: NodeImage,
        location: NodeLocation | None = None,
        auth: NodeAuthSSHKey | None = None,
        ex_metadata: dict[str, str] | None = None,
    ) -> Node:
        words = [name, *(f"{key}={value}" for key, value in (ex_metadata or {}).items())]
        attributes = {"size": size.id, "type": "ebs", "label": " ".join(words)}
        if location is not None:
            attributes["region"] = location.id
        if auth is not None:
            attributes["sshkey"] = auth.pubkey  # recorded by the test Hub, not used
        record = self._api("POST", f"amazon/launch/{quote(image.id, safe='')}/", attributes)
        return self._node(record)

    def list_nodes(self) -> list[Node]:
        records = self._api("GET", "amazon/instances/", {"refresh_cache": "true"})
        return [self._node(record) for record in records]

    def destroy_node(self, node: Node) -> bool:
        path = f"amazon/instance/{quote(str(node.id), safe='')}/terminate/"
        self._api("PUT", path, {"auto_unregister": "true"})
        return True

    def _api(self, method: str, path: str, attributes: dict[str, str]) -> Any:
        action = self.api_path + path
        if method == "GET":
            response = self.connection.request(action, params=attributes, method=method)
        else:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            response = self.connection.request(
                action, data=urlencode(attributes), headers=headers, method=method
            )
        return response.object

    def _node(self, record: dict[str, Any]) -> Node:
        name, *words = str(record.get("label") or "").split()
        metadata = dict(word.partition("=")[::2] for word in words)
        address = record.get("ipaddress")
        return Node(
            id=record["instanceid"],
            name=name,
            state=STATES.get(record["status"], NodeState.UNKNOWN),
            public_ips=[address] if address else [],
            private_ips=[],
            driver=self,
            extra={"metadata": metadata, "region": record.get("region")},
        )


class NameOnlyTestDriver(CloudtaskTestDriver):
    """As a driver that can tag nothing: its create_node takes no metadata."""

    def create_node(  # type: ignore[override]
        self,
        name: str,
        size: NodeSize,
        image: NodeImage,
        location: NodeLocation | None = None,
        auth: NodeAuthSSHKey | None = None,
    ) -> Node:
        return super().create_node(name, size, image, location, auth)
