"""A forwarding HTTP proxy on 127.0.0.1 in front of the moto server that can stall or fail chosen requests.

boto3 and GDAL both reach S3 through it when ``AWS_ENDPOINT_URL_S3`` points at it, so faults hit the real
clients' real traffic. A rule maps a request to an action:

* ``("stall", seconds)`` — read the request, then hold the connection without answering (a server that
  hangs), for ``seconds`` or until :meth:`LoopbackProxy.release` is called; then close it unanswered.
* ``("delay", seconds)`` — wait, then forward (a slow server).
* ``("status", code, s3_error_code)`` — answer an S3-style XML error (e.g. 503 SlowDown, 500 InternalError).
* ``None`` — forward to moto untouched.

Used by the deadline tests and by the load run (``tests/load/load_run.py``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from .proxy_base import ForwardingHandler

Rule = Callable[[str, str, Any], "tuple[Any, ...] | None"]  # (method, path, headers) -> action


class _Handler(ForwardingHandler):
    proxy: LoopbackProxy

    def _handle(self) -> None:
        body = self._body()
        path = unquote(urlparse(self.path).path)
        action = self.proxy.decide(self.command, path, self.headers)
        if action is not None and action[0] == "stall":
            self.proxy.count("stalled")
            self.proxy.released.wait(action[1])
            self.close_connection = True
            return
        if action is not None and action[0] == "delay":
            self.proxy.count("delayed")
            self.proxy.released.wait(action[1])
            action = None
        if action is not None and action[0] == "status":
            self.proxy.count(f"status {action[1]}")
            payload = b"" if self.command == "HEAD" else (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{action[2]}</Code>"
                f"<Message>injected by the test proxy</Message></Error>").encode()
            self.send_response(action[1])
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        self._relay(*self._fetch(body, self.proxy.upstream))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class LoopbackProxy:
    """Start with :meth:`start`, stop with :meth:`stop`; ``rule`` decides each request's fate (thread-safe)."""

    def __init__(self, upstream_url: str, rule: Rule | None = None) -> None:
        parsed = urlparse(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rule = rule
        self.released = threading.Event()
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def decide(self, method: str, path: str, headers: Any) -> tuple[Any, ...] | None:
        return self.rule(method, path, headers) if self.rule is not None else None

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def release(self) -> None:
        """Let every stalled request go (they are closed unanswered)."""
        self.released.set()

    def start(self) -> LoopbackProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
