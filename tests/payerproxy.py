"""A loopback proxy in front of the moto server that plays S3's requester-pays rule (moto does not have it).

Requests to a *paying* bucket that do not carry ``x-amz-request-payer: requester`` (the header, or the
``x-amz-request-payer=requester`` query parameter S3 documents for signed URLs) are answered as S3 answers
them: ``403 AccessDenied`` (a HeadBucket still gets the ``x-amz-bucket-region`` header, as from S3). Requests
to a *denied* bucket are refused whatever they carry (a bucket policy that does not let us in). Everything
else is forwarded untouched.

Every request is logged in :attr:`PayerProxy.seen` with its bucket, whether it carried the payer, the region
of its SigV4 signature (None for an unsigned or SigV2-presigned request), its User-Agent and the status sent.
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from .proxy_base import ForwardingHandler

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/s3/aws4_request")


@dataclass(frozen=True)
class Seen:
    method: str
    bucket: str
    path: str
    query: str
    payer: bool
    region: str | None
    agent: str
    status: int

    @property
    def by_gdal(self) -> bool:
        return "boto" not in self.agent.lower()


@dataclass
class PayerProxy:
    upstream: tuple[str, int]
    paying: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, entry: Seen) -> None:
        with self._lock:
            self.seen.append(entry)

    def to(self, bucket: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.bucket == bucket]


def _carries_payer(headers: Any, query: str) -> bool:
    if (headers.get("x-amz-request-payer") or "").lower() == "requester":
        return True
    return [v.lower() for v in parse_qs(query).get("x-amz-request-payer", [])] == ["requester"]


def _signed_region(headers: Any, query: str) -> str | None:
    m = _SCOPE.search(headers.get("Authorization") or "")
    if m:
        return m.group(1)
    credential = parse_qs(query).get("X-Amz-Credential", [""])[0]
    parts = credential.split("/")
    return parts[2] if len(parts) == 5 else None


class _Handler(ForwardingHandler):
    proxy: PayerProxy

    def _handle(self) -> None:
        body = self._body()
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        bucket = path.lstrip("/").split("/", 1)[0]
        payer = _carries_payer(self.headers, parsed.query)
        refuse = bucket in self.proxy.denied or (bucket in self.proxy.paying and not payer)
        status, reason, headers, data = (403, "Forbidden", [], b"") if refuse else self._fetch(body, self.proxy.upstream)
        if refuse and self.command == "HEAD" and path.strip("/") == bucket:
            # S3 tells a bucket's region even to a HeadBucket it refuses.
            up = self._fetch(body, self.proxy.upstream)[2]
            headers = [(k, v) for k, v in up if k.lower() == "x-amz-bucket-region"]
        self.proxy.log(Seen(self.command, bucket, path, parsed.query, payer, _signed_region(self.headers, parsed.query),
                            self.headers.get("User-Agent") or "", status))
        if refuse:
            return self._deny(headers)
        self._relay(status, reason, headers, data)

    def _deny(self, headers: list[tuple[str, str]]) -> None:
        payload = b"" if self.command == "HEAD" else (
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access Denied"
            b"</Message><RequestId>payerproxy</RequestId></Error>")
        self.send_response(403, "Forbidden")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            super().handle_error(request, client_address)


def start(upstream_url: str) -> tuple[PayerProxy, _QuietServer]:
    """Start a proxy to ``upstream_url`` (the moto server) on 127.0.0.1 and a free port."""
    up = urlparse(upstream_url)
    proxy = PayerProxy(upstream=(up.hostname or "127.0.0.1", up.port or 80))
    handler = type("PayerHandler", (_Handler,), {"proxy": proxy})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    return proxy, server
