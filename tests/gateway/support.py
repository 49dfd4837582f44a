"""Helpers shared by the gateway tests: certificates and gateway answers signed like HSQ's."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from hsq_refunds.gateway.signing import failure_sign_strings, sign, success_sign_string

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


class RecordingGateway:
    """A minimal HTTP server on 127.0.0.1 that records each request and plays back answers.

    For what the sandbox gateway is not meant to do (redirects, oversized bodies, odd
    headers) and for looking at the exact bytes a client sends.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                gateway.requests.append(
                    RecordedRequest(self.path, dict(self.headers), self.rfile.read(length))
                )
                status, headers, body = (
                    gateway.answers.pop(0) if gateway.answers else (200, {}, b"{}")
                )
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
