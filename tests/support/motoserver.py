"""Moto's AWS emulation in server mode on loopback, for tests with a real boto3 client.

The server runs in a thread of the test process, on 127.0.0.1 and a free
port, and boto3 reaches it through AWS_ENDPOINT_URL like any endpoint. No
request may reach AWS, so tests also:

- `isolate_aws`: drop every AWS_* and proxy variable, point the config and
  credentials files at empty files, use fake keys, turn off the instance
  metadata service (the credential chain's last resort, a network call);
- `loopback_only`: refuse, and record, any name lookup or connection to an
  address that is not loopback, so a leak fails the test even where the
  error it causes is swallowed or retried.

    with moto_server() as endpoint:
        ...  # isolate_aws(monkeypatch, tmp_path, endpoint), then boto3 as usual
        assert live_instances(endpoint) == []

Moto's state lives in this process, shared by every client: `reset` empties it.
Faults moto cannot make (throttling, a lost answer, an instance not visible
yet) come from `FaultyEndpoint`, put in front of it as boto3's endpoint.
"""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
FAKE_KEY_ID = "testing"
FAKE_SECRET = "testing"

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

# A client made here reads no profile, region, endpoint or credentials from
# the environment or config files: a test may have set them to anything.
IGNORED_SESSION_VARIABLES = {
    name: (None, None, None, None)
    for name in ("profile", "region", "config_file", "credentials_file", "endpoint_url")
}

# Checking clients, by (endpoint, region); closed when their server stops.
_clients: dict[tuple[str, str], Any] = {}

# Variables besides AWS_* that could send boto3's requests elsewhere.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 and a free port; its endpoint URL while it runs."""
    # Werkzeug logs every request at INFO; only errors are worth a test's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        for key in [key for key in _clients if key[0] == endpoint]:
            _clients.pop(key).close()
        server.stop()


def isolate_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str) -> None:
    """Make boto3 in this test talk to `endpoint` only, with fake credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.upper() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse lookups of and connections to anything but loopback; the refusals, as they happen."""
    refused: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def is_loopback(host: object) -> bool:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            refused.append(f"lookup of {host!r}")
            raise OSError(f"test network guard: lookup of {host!r} refused (loopback only)")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            refused.append(f"connection to {address!r}")
            raise OSError(f"test network guard: connection to {address!r} refused (loopback only)")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


def ec2_client(endpoint: str, region: str = REGION) -> Any:
    """An EC2 client for `endpoint` that the environment does not steer: it names everything."""
    core = botocore.session.Session(session_vars=IGNORED_SESSION_VARIABLES)
    return boto3.session.Session(botocore_session=core).client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _checker(endpoint: str, region: str) -> Any:
    # Made once per server and region: a new client loads EC2's service model
    # again, which costs more than the checks it serves.
    key = (endpoint, region)
    if key not in _clients:
        _clients[key] = ec2_client(endpoint, region)
    return _clients[key]


def live_instances(endpoint: str, region: str = REGION) -> list[str]:
    """Ids of the instances in moto that are not terminated (shutting down counts as live)."""
    pages = _checker(endpoint, region).get_paginator("describe_instances").paginate()
    return [
        instance["InstanceId"]
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    ]


def terminate_all(endpoint: str, instance_ids: list[str], region: str = REGION) -> None:
    if instance_ids:
        _checker(endpoint, region).terminate_instances(InstanceIds=instance_ids)


def reset(endpoint: str) -> None:
    """Forget every resource moto holds (moto's own reset API)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    # Built without the environment's proxies: this is loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        answer.read()


@dataclass
class Fault:
    """Answer the next `times` requests of `action` with an EC2 error."""

    action: str
    code: str
    status: int = 503
    times: int = 1
    # Pass the request on to moto first and lose its answer: the call took
    # effect, but the client saw an error.
    deliver: bool = False
    when: Callable[[dict[str, str]], bool] = lambda params: True


@dataclass
class FaultyEndpoint:
    """An HTTP server on loopback: chosen faults, else moto's answer."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, int]] = field(default_factory=list)  # (action, status answered)

    def __post_init__(self) -> None:
        endpoint = self
        self._upstream = urllib.parse.urlsplit(self.upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                params = dict(urllib.parse.parse_qsl(body.decode()))
                endpoint.answer(self, params, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll: shutdown() waits for the serving loop to look.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultyEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(
        self, handler: http.server.BaseHTTPRequestHandler, params: dict[str, str], body: bytes
    ) -> None:
        action = params.get("Action", "?")
        fault = next(
            (f for f in self.faults if f.action == action and f.times > 0 and f.when(params)),
            None,
        )
        if fault is not None:
            fault.times -= 1
            if fault.deliver:
                self.forward(handler, body)
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{fault.code}</Code><Message>{fault.code} (injected)</Message>"
                f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
            ).encode()
            self.respond(handler, fault.status, xml, "text/xml")
            self.seen.append((action, fault.status))
            return
        status, content_type, answer = self.forward(handler, body)
        self.respond(handler, status, answer, content_type)
        self.seen.append((action, status))

    def forward(
        self, handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection(
            self._upstream.hostname or "127.0.0.1", self._upstream.port, timeout=10
        )
        try:
            headers = {
                key: value
                for key, value in handler.headers.items()
                if key.lower() not in ("host", "content-length", "connection")
            }
            connection.request("POST", handler.path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.getheader("Content-Type", "text/xml"), answer.read()
        finally:
            connection.close()

    @staticmethod
    def respond(
        handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes, content_type: str
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def count(self, action: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == action)
