"""A scripted gateway on 127.0.0.1 that answers every request with the body a test gives it.

The property tests generate raw answers (signed, tampered, unsigned, broken) and need them to
reach the engine exactly as bytes on the wire, through the real client and its connection pool.
The sandbox gateway only produces well-defined faults; this server sends anything.
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedGateway"]


class ScriptedGateway:
    """Serves ``status`` and ``body`` to every POST until told otherwise; counts requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="scripted-gateway",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/api/acquiring"

    def answer(self, body: bytes, status: int = 200) -> None:
        """Answer the next requests with ``status`` and ``body``, and start counting again."""
        with self._lock:
            self.status, self.body, self.requests = status, body, 0

    def reply(self) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            return self.status, self.body

    def start(self) -> ScriptedGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, gateway: ScriptedGateway) -> None:
        self.gateway = gateway
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status, body = self.server.gateway.reply()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests look at the refunds, not at the access log."""
