"""What every loopback proxy of the tests shares: read a request body (plain or chunked), send it upstream,
relay the response. The proxies differ only in what they decide to do before forwarding."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from typing import Any

# Hop-by-hop and framing headers that the proxy sets itself.
_DROP_UPSTREAM = ("transfer-encoding", "connection")
_DROP_RELAY = ("transfer-encoding", "connection", "content-length", "server", "date")


class ForwardingHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler with the body reading, upstream request and response relay the proxies share."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _fetch(self, body: bytes, upstream: tuple[str, int]) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send this request to ``upstream``; return (status, reason, headers, body) of its response."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP_UPSTREAM}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _relay(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        """Answer with an upstream response as it came (a HEAD keeps upstream's Content-Length and no body)."""
        self.send_response(status, reason)
        length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        for k, v in headers:
            if k.lower() not in _DROP_RELAY:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
