"""An EC2 instance metadata service (IMDSv2) on loopback, as a spot
instance's agent sees it: a session token first, then 404 at
spot/instance-action until a notice is set."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

TOKEN = b"imds-token-1"
NOTICE = b'{"action": "terminate", "time": "2026-12-07T20:00:00Z"}'


@dataclass
class Metadata:
    url: str
    notice: bytes | None = None  # set it to give the notice
    tokens: int = 0  # tokens asked for (PUT)
    refused: int = 0  # requests without the token


@contextmanager
def metadata_service() -> Iterator[Metadata]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Metadata(f"http://127.0.0.1:{server.server_address[1]}")
    server.state = state  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        state = self._state()
        if self.path == "/latest/api/token":
            state.tokens += 1
            self._answer(200, TOKEN)
        else:
            self._answer(404, b"")

    def do_GET(self) -> None:
        state = self._state()
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN.decode():
            state.refused += 1
            self._answer(401, b"")
        elif self.path == "/latest/meta-data/spot/instance-action" and state.notice:
            self._answer(200, state.notice)
        else:
            self._answer(404, b"")

    def _state(self) -> Metadata:
        return self.server.state  # type: ignore[attr-defined,no-any-return]

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass
