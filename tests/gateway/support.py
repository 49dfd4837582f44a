"""Helpers shared by the gateway tests: certificates and gateway answers signed like HSQ's."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hsq_refunds.gateway.signing import (
    failure_sign_strings,
    request_sign_string,
    sign,
    success_sign_string,
)

SIGN_KEY = "0123456789abcdef0123456789abcdef"


MERCHANT_NO = "888000000001"
TRANS_NO = "RF20240101000001"


def business_result(**overrides: Any) -> dict[str, Any]:
    """A refund query result as the gateway's page shows it, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "extend": "自定义参数",
        "finishedDate": "20240102030405",
        "merchantNo": MERCHANT_NO,
        "orderAmt": "1500",
        "orderStatus": "SUCCESS",
        "origTransNo": "PAY20240101000001",
        "respCode": "200007",
        "respMsg": "查询成功",
        "tradeNo": "12000020240101000000000000000001",
        "transNo": TRANS_NO,
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not ...}


def success_body(
    platform_private: rsa.RSAPrivateKey,
    result: str | dict[str, Any],
    *,
    sign_key: str = SIGN_KEY,
    success: Any = True,
) -> bytes:
    """A success answer signed over ``result`` exactly as sent."""
    result_text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    envelope = {
        "success": success,
        "result": result_text,
        "errorCode": None,
        "errorMsg": None,
        "sign": sign(platform_private, success_sign_string(result_text, sign_key)),
    }
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def failure_body(
    platform_private: rsa.RSAPrivateKey | None,
    error_code: Any,
    error_msg: Any,
    *,
    sign_key: str = SIGN_KEY,
    layout: int = 0,
) -> bytes:
    """A failure answer, signed over one of the accepted layouts (unsigned without a key)."""
    envelope: dict[str, Any] = {"success": False, "errorCode": error_code, "errorMsg": error_msg}
    if platform_private is not None:
        message = failure_sign_strings(error_code, error_msg, sign_key)[layout]
        envelope["sign"] = sign(platform_private, message)
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def apply_result(**overrides: Any) -> dict[str, Any]:
    """An application's result as the gateway's answer carries it, with ``overrides``."""
    fields: dict[str, Any] = {
        "merchantNo": MERCHANT_NO,
        "transNo": TRANS_NO,
        "tradeNo": "12000020240101000000000000000009",
        "orderAmt": 1500,
        "orderStatus": "PROCESSING",
        "finishedDate": "",
        "respCode": "100201",
        "respMsg": "退款处理中",
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not ...}


def notification_form(
    platform_private: rsa.RSAPrivateKey,
    content: str | dict[str, Any] | None = None,
    *,
    sign_key: str = SIGN_KEY,
    **overrides: str,
) -> dict[str, str]:
    """A refund notification as HSQ would POST it, signed by the platform over the fields
    (``overrides`` applied before signing)."""
    if content is None:
        content = business_result(orderAmt="1500")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    fields = {
        "method": "CALLBACK",
        "version": "1.0.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": text,
        **overrides,
    }
    fields["sign"] = sign(platform_private, request_sign_string(fields, sign_key))
    return fields


class RecordingGateway:
    """A minimal HTTP server on 127.0.0.1 that records each request and plays back answers.

    For what the sandbox gateway is not meant to do (redirects, oversized bodies, odd
    headers) and for looking at the exact bytes a client sends.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        #: When set, answers every request for which no answer is queued.
        self.responder: Callable[[RecordedRequest], tuple[int, dict[str, str], bytes]] | None
        self.responder = None
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(self.path, dict(self.headers), self.rfile.read(length))
                gateway.requests.append(request)
                if gateway.answers:
                    status, headers, body = gateway.answers.pop(0)
                elif gateway.responder is not None:
                    status, headers, body = gateway.responder(request)
                else:
                    status, headers, body = 200, {}, b"{}"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/api/acquiring"

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.answers.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class RecordedRequest:
    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def form(self) -> dict[str, str]:
        """The form fields, decoded; each field must appear exactly once."""
        pairs = urllib.parse.parse_qsl(
            self.body.decode("ascii"), keep_blank_values=True, strict_parsing=True
        )
        form = dict(pairs)
        assert len(form) == len(pairs), "a form field appears twice"
        return form


def http_response(body: bytes, status: str = "200 OK", **headers: str) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length, as raw bytes."""
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json;charset=UTF-8"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("ascii") + body


class SocketGateway:
    """A gateway on a real socket (127.0.0.1) that misbehaves in time, which an HTTP server
    library does not let a test do.

    For each request read (connections are kept alive), by ``mode``:

    - ``"trickle"``: sends ``answer[:at_once]`` at once and the rest ``chunk`` bytes every
      ``interval`` seconds (TCP_NODELAY, so each piece is its own segment);
    - ``"silent"``: sends nothing, and waits for the client to give up;
    - ``"drop"``: closes the connection without a byte.

    Every loop is bounded by ``limit`` seconds. ``requests`` counts the requests read;
    ``cut_off`` is set when the client closed a connection in the middle of an answer,
    ``completed`` when a whole answer was sent.
    """

    def __init__(
        self,
        answer: bytes = b"",
        *,
        mode: str = "trickle",
        at_once: int = 0,
        chunk: int = 1,
        interval: float = 0.05,
        limit: float = 20.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.mode = mode
        self.at_once = at_once
        self.chunk = chunk
        self.interval = interval
        self.limit = limit
        self.requests = 0
        self.bodies: list[bytes] = []
        self.cut_off = threading.Event()
        self.completed = threading.Event()
        self._tls = tls
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()
        port = self._listener.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/api/acquiring"

    def close(self) -> None:
        self._stop.set()
        self._accepter.join()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _address = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self._connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.limit)
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            while not self._stop.is_set():
                body = self._read_request(conn)
                if body is None:
                    return
                with self._lock:
                    self.requests += 1
                    self.bodies.append(body)
                if self.mode == "drop":
                    return
                if self.mode == "silent":
                    if self._closed_within(conn, self.limit):
                        self.cut_off.set()
                    return
                if not self._trickle(conn):
                    return
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return None
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                return None
            body += piece
        return body

    def _trickle(self, conn: socket.socket) -> bool:
        """Send the answer; whether all of it went (then the connection may serve another)."""
        answer, position = self.answer, self.at_once
        conn.sendall(answer[:position])
        ends = time.monotonic() + self.limit
        while position < len(answer):
            if self._stop.is_set() or time.monotonic() >= ends:
                return False
            if self._closed_within(conn, self.interval):
                self.cut_off.set()
                return False
            conn.sendall(answer[position : position + self.chunk])
            position += self.chunk
        self.completed.set()
        return True

    @staticmethod
    def _closed_within(conn: socket.socket, seconds: float) -> bool:
        """Whether the client closes the connection within ``seconds``."""
        ready, _, _ = select.select([conn], [], [], seconds)
        if not ready:
            return False
        try:
            return conn.recv(1) == b""
        except (OSError, ssl.SSLError):
            return True


def tls_server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 with a fresh self-signed certificate, and the path
    of that certificate (for the client's CA bundle)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "gateway-cert.pem"
    key_path = tmp_path / "gateway-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
