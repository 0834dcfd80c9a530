"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the moto server (real GDAL and boto3 traffic).

Point ``AWS_ENDPOINT_URL`` at :attr:`FaultProxy.url` and every S3 request of boto3 *and* GDAL (through
``sceneclip.core.gdalenv``) passes through it. Requests are forwarded untouched unless a :class:`Rule` matches;
a rule answers in place of S3 with

* ``status`` (+ an S3 error XML body with ``code``/``message``, as S3 sends for 403/404/500/503),
* ``reset``: the upstream answer's headers, half its body, then a TCP reset (connection reset mid-body),
* ``truncate``: the upstream answer's headers (full Content-Length), half its body, then a clean close,
* ``stall``: hold the connection for ``stall_s`` seconds, then close it without an answer.

Rules match a method, a substring of the decoded path and a substring of the query (``uploadId``,
``partNumber``), optionally only GETs with a ``Range`` header, after letting ``after`` matching requests
through, for ``times`` requests (None: for ever).
Every request is logged in :attr:`FaultProxy.seen` as ``(method, path, query, faulted)``.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from .proxy_base import ForwardingHandler


@dataclass
class Rule:
    """One fault. ``action`` is ``status``, ``reset``, ``truncate`` or ``stall``."""

    action: str = "status"
    method: str | None = None  # None: any method
    path: str = ""  # substring of the decoded path (``/bucket/key``)
    query: str = ""  # substring of the raw query string
    ranged: bool | None = None  # True: only requests with a Range header; False: only without
    times: int | None = None  # None: every matching request
    after: int = 0  # let this many matching requests through first (e.g. the header read of a GeoTIFF)
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    stall_s: float = 30.0
    hits: int = 0
    passed: int = 0

    def matches(self, method: str, path: str, query: str, ranged: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and method != self.method:
            return False
        if self.ranged is not None and ranged != self.ranged:
            return False
        if self.path not in path or self.query not in query:
            return False
        if self.passed < self.after:
            self.passed += 1
            return False
        return True


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str, str, bool]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **kwargs) -> Rule:
        rule = Rule(**kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, method: str, path: str = "", *, faulted: bool | None = None) -> int:
        return sum(1 for m, p, _, f in list(self.seen) if m == method and path in p and (faulted is None or f == faulted))

    def match(self, method: str, path: str, query: str, ranged: bool) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, query, ranged):
                    rule.hits += 1
                    return rule
        return None


class _Handler(ForwardingHandler):
    proxy: FaultProxy

    def _handle(self) -> None:
        body = self._body()
        parsed = urlparse(self.path)
        path, query = unquote(parsed.path), parsed.query
        rule = self.proxy.match(self.command, path, query, "Range" in self.headers)
        self.proxy.seen.append((self.command, path, query, rule is not None))
        if rule is not None and rule.action == "status":
            return self._error(rule)
        if rule is not None and rule.action == "stall":
            time.sleep(rule.stall_s)
            self.close_connection = True
            return
        status, reason, headers, data = self._forward(body)
        self.send_response(status, reason)
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(k, v)
        length = str(len(data)) if self.command != "HEAD" else dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            return
        if rule is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[: max(1, len(data) // 2)])
        self.wfile.flush()
        self.close_connection = True
        if rule.action == "reset":  # SO_LINGER 0: close sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _error(self, rule: Rule) -> None:
        payload = b"" if self.command == "HEAD" else (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}</Code>"
            f"<Message>{rule.message}</Message><RequestId>faultproxy</RequestId></Error>").encode()
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes):
        return self._fetch(body, self.proxy.upstream)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients dropping keep-alive connections are not errors
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            super().handle_error(request, client_address)


def start(upstream_url: str) -> tuple[FaultProxy, _QuietServer]:
    """Start a proxy to ``upstream_url`` (the moto server) on 127.0.0.1 and a free port."""
    up = urlparse(upstream_url)
    proxy = FaultProxy(upstream=(up.hostname, up.port))
    handler = type("FaultHandler", (_Handler,), {"proxy": proxy})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    return proxy, server
