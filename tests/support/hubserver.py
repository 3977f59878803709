"""A TurnKey Hub API server for tests: real HTTP on 127.0.0.1, instances in memory.

It answers the four endpoints cloudtask uses (launch, one instance, all
instances, terminate) the way the Hub does as far as cloudtask relies on it:
a launch answers a "pending" record at once and the instance boots in the
background; terminating marks it "terminated". What "booting" means is up to
a pluggable Backend: the default FakeBackend boots nothing and hands out
addresses in 198.18.0.0/15 (the benchmarking range: never contacted), while
another backend may start a real SSH host and return its address and keys.

For fault tests it counts requests per endpoint, records each launch's form
attributes, and can answer the next requests (of one endpoint, or any) with
an error status, before or after doing what they ask.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

API_PATH = "/api/"
ENDPOINTS = ("launch", "instance", "instances", "terminate")


class Backend(Protocol):
    def create(self, instance_id: str) -> tuple[str, list[str]]:
        """Boot the server: its (ip address, host public key lines). May take seconds."""
        ...

    def remove(self, instance_id: str) -> None:
        """Tear the server down."""
        ...


def fake_host_key() -> str:
    """A well-formed ssh-ed25519 public key line, of no real host."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


class FakeBackend:
    """Boots nothing: each instance gets the next 198.18.255.x address and a random key."""

    def __init__(self, boot_delay: float = 0.0) -> None:
        self.boot_delay = boot_delay
        self.created: list[str] = []
        self.removed: list[str] = []
        self._hosts = itertools.count()
        self._lock = threading.Lock()

    def create(self, instance_id: str) -> tuple[str, list[str]]:
        time.sleep(self.boot_delay)
        with self._lock:
            self.created.append(instance_id)
            host = next(self._hosts) % 254 + 1
        return f"198.18.255.{host}", [fake_host_key()]

    def remove(self, instance_id: str) -> None:
        with self._lock:
            self.removed.append(instance_id)


@dataclass
class Fault:
    status: int
    count: int
    endpoint: str | None  # None: any endpoint
    after: bool  # do what the request asks, then answer the error anyway


class HubServer:
    """The test Hub. `with HubServer(apikey) as hub:` serves at `hub.url`."""

    def __init__(
        self,
        apikey: str = "test-apikey",
        backend: Backend | None = None,
        *,
        unknown_images: frozenset[str] = frozenset({"no-such-appliance"}),
    ) -> None:
        self.apikey = apikey
        self.backend: Backend = backend if backend is not None else FakeBackend()
        self.unknown_images = unknown_images
        self.records: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()  # endpoint -> requests received
        self.launches: list[dict[str, str]] = []  # each launch's form attributes
        self.boot_errors: list[Exception] = []  # what backend.create raised
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- running ---------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{API_PATH}"

    def start(self) -> HubServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.hub = self
        self._httpd = httpd
        # A short poll: stopping waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="hubserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join()
        self._httpd = None
        self.settle()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait for background boots and removals to finish."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                workers = [worker for worker in self._workers if worker.is_alive()]
                self._workers = workers
            if not workers:
                return
            workers[0].join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError("backend calls still running")

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- for tests -------------------------------------------------------------

    def fail(
        self, status: int, count: int = 1, endpoint: str | None = None, *, after: bool = False
    ) -> None:
        """Answer the next `count` requests (to `endpoint`, or any) with `status`."""
        assert endpoint is None or endpoint in ENDPOINTS, endpoint
        with self._lock:
            self._faults.append(Fault(status, count, endpoint, after))

    def status(self, instance_id: str) -> str:
        with self._lock:
            return str(self.records[instance_id]["status"])

    def wait_status(self, instance_id: str, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.status(instance_id) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance_id} is {self.status(instance_id)}, not {status}")
            time.sleep(0.01)

    # -- the API ---------------------------------------------------------------

    def received(self, endpoint: str) -> Fault | None:
        """Count a request; the fault it is to meet, if any."""
        with self._lock:
            self.requests[endpoint] += 1
            for fault in self._faults:
                if fault.endpoint in (None, endpoint):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def launch(self, image: str, attributes: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.launches.append(attributes)
            if image in self.unknown_images:
                return 404, _error("Appliance.NotFound", f"no appliance or snapshot {image}")
            instance_id = f"i-{secrets.token_hex(8)}"
            record = {
                "instanceid": instance_id,
                "status": "pending",
                "ipaddress": None,
                "region": attributes.get("region", "us-east-1"),
                "size": attributes.get("size", ""),
                "type": attributes.get("type", "s3"),
                "label": attributes.get("label", ""),
                "image": image,
            }
            self.records[instance_id] = record
            self._background(self._boot, instance_id)
            return 200, dict(record)

    def instance(self, instance_id: str) -> tuple[int, Any]:
        with self._lock:
            record = self.records.get(instance_id)
            if record is None:
                return 404, _error("AmazonInstance.NotFound", f"no instance {instance_id}")
            return 200, dict(record)

    def instances(self) -> tuple[int, Any]:
        with self._lock:
            return 200, [dict(record) for record in self.records.values()]

    def terminate(self, instance_id: str) -> tuple[int, Any]:
        with self._lock:
            record = self.records.get(instance_id)
            if record is None:
                return 404, _error("AmazonInstance.NotFound", f"no instance {instance_id}")
            if record["status"] == "running":
                self._background(self.backend.remove, instance_id)
            # A pending one is removed by its boot thread once the boot returns.
            record["status"] = "terminated"
            return 200, dict(record)

    def _boot(self, instance_id: str) -> None:
        try:
            address, host_keys = self.backend.create(instance_id)
        except Exception as exc:
            # A boot that fails ends the instance, as on EC2; kept for the test to see.
            with self._lock:
                self.records[instance_id]["status"] = "terminated"
                self.boot_errors.append(exc)
            return
        with self._lock:
            record = self.records[instance_id]
            if record["status"] == "pending":
                record.update(status="running", ipaddress=address, sshkeys=list(host_keys))
                return
        self.backend.remove(instance_id)  # terminated while it booted

    def _background(self, target: Any, instance_id: str) -> None:
        worker = threading.Thread(target=target, args=(instance_id,), daemon=True)
        self._workers.append(worker)
        worker.start()


def unreachable_url() -> str:
    """An API URL on a 127.0.0.1 port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{API_PATH}"


@contextlib.contextmanager
def silent_url() -> Iterator[str]:
    """An API URL on 127.0.0.1 that takes connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # the kernel completes handshakes; nothing reads
        yield f"http://127.0.0.1:{listener.getsockname()[1]}{API_PATH}"


def _error(name: str, description: str) -> dict[str, str]:
    return {"name": name, "description": description}


class _HTTPServer(ThreadingHTTPServer):
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients reuse connections
    timeout = 30  # an idle kept-alive connection is closed after this

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read counters, not a log on stderr

    def _serve(self, method: str) -> None:
        assert isinstance(self.server, _HTTPServer)
        hub = self.server.hub
        # Read the whole body first: on a kept-alive connection an unread
        # body would be taken for the next request.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        parts = urlsplit(self.path)
        attributes = dict(parse_qsl(body if method != "GET" else parts.query))
        route = _route(method, parts.path)
        if route is None:
            self._send(404, "text/html", b"<html><body>404 Not Found</body></html>")
            return
        endpoint, argument = route
        fault = hub.received(endpoint)
        if fault is not None and not fault.after:
            self._fault(fault)
            return
        apikey = self.headers.get("apikey")
        if apikey != hub.apikey:
            # Echoes the key it got, as careless servers do: clients must scrub it.
            self._json(401, _error("HubAccount.InvalidApiKey", f"invalid API key {apikey}"))
            return
        if endpoint == "launch":
            status, answer = hub.launch(argument, attributes)
        elif endpoint == "instance":
            status, answer = hub.instance(argument)
        elif endpoint == "instances":
            status, answer = hub.instances()
        else:
            status, answer = hub.terminate(argument)
        if fault is not None:
            self._fault(fault)
            return
        self._json(status, answer)

    def _fault(self, fault: Fault) -> None:
        names = {429: "Hub.Throttled", 503: "Hub.Unavailable"}
        headers = {"Retry-After": "1"} if fault.status == 429 else {}
        name = names.get(fault.status, "Hub.Error")
        self._json(fault.status, _error(name, "injected fault"), headers)

    def _json(self, status: int, answer: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(answer).encode(), headers)

    def _send(
        self, status: int, kind: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _route(method: str, path: str) -> tuple[str, str] | None:
    """(endpoint, its path argument) of a request, None for no endpoint."""
    if not path.startswith(API_PATH):
        return None
    words = [unquote(word) for word in path[len(API_PATH) :].strip("/").split("/")]
    match method, words:
        case "POST", ["amazon", "launch", image]:
            return "launch", image
        case "GET", ["amazon", "instance", instance_id]:
            return "instance", instance_id
        case "GET", ["amazon", "instances"]:
            return "instances", ""
        case "PUT", ["amazon", "instance", instance_id, "terminate"]:
            return "terminate", instance_id
    return None
