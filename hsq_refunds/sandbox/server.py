"""A fake HSQ gateway over real HTTP, for tests, benchmarks, the example project and offline work.

It speaks HSQ's wire protocol (``POST /api/acquiring``, form-encoded, signed both ways) with the
sandbox's own keys, so the code under test runs exactly as it would against HSQ. It answers
refund queries, applies for refunds (against original orders it is told of or takes on trust)
and POSTs HSQ's notification to each applied refund's ``returnUrl`` from a background thread.
Refunds, orders, faults and settings are set in-process (thread-safe) or over the JSON control
endpoint under ``/sandbox`` (:class:`~hsq_refunds.sandbox.control.SandboxControl`), from another
process.

The control endpoint has no authentication: keep the server on 127.0.0.1 (the default).

The server is an HTTP/1.1 ``ThreadingHTTPServer`` that keeps connections alive, so a
``requests.Session``'s pool reuses them; the keys are parsed once, at construction.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .answers import API_PATH, JSON_TYPE, Reply, spring_error_body
from .app import CONTROL_PATH, SandboxApp
from .control import SandboxControl
from .credentials import Credentials

__all__ = ["SandboxServer"]

logger = logging.getLogger("hsq_refunds.sandbox")

_MAX_BODY = 1 << 20


class SandboxServer(SandboxApp):
    """The sandbox gateway on ``host:port`` (``port=0``: any free port), in a background thread.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``scenario`` is a JSON
    file ``{"refunds": [...], "faults": [...], "orders": [...], "apply": {...}, "notify": {...}}``
    loaded at construction; ``latency`` delays every answer: it leaves that many seconds after
    its request arrived (the sandbox's own work included). ``apply``
    (``balance_seconds``, ``card_seconds``, ``refuse_seconds``: how long applied refunds stay
    PROCESSING) and ``notify`` (``method``, ``version``, ``schedule``, ``connect_timeout``,
    ``read_timeout``) are settings; like the latency, they survive :meth:`reset`.
    """

    def __init__(
        self,
        credentials: Credentials,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scenario: str | os.PathLike[str] | None = None,
        latency: float = 0.0,
        apply: Mapping[str, Any] | None = None,
        notify: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(credentials, latency=latency, apply=apply, notify=notify)
        self.credentials = credentials
        self.host = host
        self._requested_port = port
        if scenario is not None:
            self.load_scenario(scenario)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._control: SandboxControl | None = None

    def __repr__(self) -> str:
        where = self.url if self._httpd else "not started"
        return f"SandboxServer(merchant_no={self.credentials.merchant_no!r}, {where})"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread, and start the notifier's; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("the sandbox server is already running")
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"hsq-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.notifier.start(name=f"hsq-sandbox-notify-{self.port}")
        logger.info("sandbox gateway listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and notifying; close every connection, idle keep-alive ones included."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self.notifier.stop()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join()
        if self._control is not None:
            self._control.close()
            self._control = None
        self._httpd = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not running; call start()")
        return int(self._httpd.server_address[1])

    @property
    def _base(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The gateway URL to configure as the app's ``BASE_URL``."""
        return self._base + API_PATH

    @property
    def control_url(self) -> str:
        return self._base + CONTROL_PATH

    @property
    def control(self) -> SandboxControl:
        """A :class:`SandboxControl` for this server (to exercise the HTTP control path)."""
        if self._control is None:
            self._control = SandboxControl(self.control_url)
        return self._control


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (after its own timeout, say) is routine, not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("client %s went away", client_address)
            return
        logger.exception("sandbox: error while serving %s", client_address)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down open connections so that no pooled client keeps talking to a stopped server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HsqSandbox/1.0"
    disable_nagle_algorithm = True
    timeout = 120
    server: _HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        received = time.monotonic()
        path = urlsplit(self.path).path
        try:
            reply = self.server.app.handle(self.command, path, body)
        except Exception:  # a bug here must still look like a server error, not a hang
            logger.exception("sandbox failed to answer %s %s", self.command, path)
            reply = Reply(500, spring_error_body(500, path), summary="500")
        if reply.delay:
            # The delay runs from the request's arrival: the sandbox's own work (signing) is
            # part of it, so that a latency of L answers after L, not after L plus that work.
            time.sleep(max(0.0, reply.delay - (time.monotonic() - received)))
        if reply.drop:
            self.close_connection = True
            _shutdown(self.connection)
            return
        self._send(reply)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.send_error(411, "Content-Length required")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Invalid Content-Length")
            return None
        if not 0 <= length <= _MAX_BODY:
            self.send_error(413, "Request body too large")
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        if reply.trickle is None:
            self._send_head(reply)
            self.wfile.write(reply.body)
        else:
            self._send_trickling(reply, *reply.trickle)

    def _send_head(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()

    def _send_trickling(self, reply: Reply, chunk: int, interval: float, body_only: bool) -> None:
        """Write the answer ``chunk`` bytes at a time, ``interval`` seconds apart, until done or
        until the client hangs up (TCP_NODELAY is on: each write leaves at once)."""
        if body_only:
            self._send_head(reply)
            data = reply.body
        else:
            self.log_request(reply.status)
            phrase = self.responses.get(reply.status, ("",))[0]
            head = (
                f"{self.protocol_version} {reply.status} {phrase}\r\n"
                f"Server: {self.version_string()}\r\n"
                f"Date: {self.date_time_string()}\r\n"
                f"Content-Type: {JSON_TYPE}\r\n"
                f"Content-Length: {len(reply.body)}\r\n\r\n"
            )
            data = head.encode("latin-1") + reply.body
        for start in range(0, len(data), chunk):
            try:
                hung_up = bool(start) and _hung_up(self.connection, interval)
                if not hung_up:
                    self.connection.sendall(data[start : start + chunk])
            except OSError:
                hung_up = True
            if hung_up:
                logger.info(
                    "trickle stopped: the client hung up after %d of %d bytes", start, len(data)
                )
                self.close_connection = True
                return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the HTTP layer itself, answered Spring-style as the real gateway would."""
        path = urlsplit(getattr(self, "path", "") or "").path
        body = spring_error_body(code, path, message or "")
        self.send_response(code, message)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


def _hung_up(connection: socket.socket, wait: float) -> bool:
    """Wait ``wait`` seconds, or less if the client hangs up (then ``True``)."""
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            readable, _, _ = select.select([connection], [], [], remaining)
            if not readable:
                return False
            if not connection.recv(1, socket.MSG_PEEK):
                return True  # an orderly close
        except OSError:
            return True
        # The client sent something (a pipelined request): keep pausing, without spinning.
        time.sleep(remaining)
        return False


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
