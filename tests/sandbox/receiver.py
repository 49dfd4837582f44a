"""A merchant's notification endpoint for the tests: a real HTTP server on loopback.

It decodes each form once, checks its signature with the platform public key over the received
values (as a merchant must), records it, and answers ``SUCCESS`` when the signature verifies and
``FAIL`` otherwise, unless the test scripted other answers for the first deliveries.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hsq_refunds.gateway import signing
from hsq_refunds.sandbox import Credentials
from tests.sandbox.wire import platform_key


@dataclass(frozen=True)
class Delivery:
    """One notification as the receiver got it."""

    form: dict[str, str]
    content_type: str
    verified: bool
    answered: tuple[int, str]

    @property
    def content(self) -> dict[str, Any]:
        return json.loads(self.form["signContent"])

    @property
    def status(self) -> str:
        return self.content["orderStatus"]


#: A scripted answer: a body (HTTP 200), or ``(status, body)``, or ``(status, body, headers)``.
Answer = str | tuple[int, str] | tuple[int, str, dict[str, str]]


class Receiver:
    """``with Receiver(credentials) as receiver:`` then give ``receiver.url`` as ``returnUrl``."""

    def __init__(self, credentials: Credentials, answers: Iterable[Answer] = ()) -> None:
        self._credentials = credentials
        self._answers = list(answers)
        self._cond = threading.Condition()
        self.deliveries: list[Delivery] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver._take(self, raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hsq/refund-notify"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _take(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        verified = set(form) == {*signing.REQUEST_SIGN_FIELDS, "sign"} and signing.verify(
            platform_key(self._credentials.platform_cert),
            signing.request_sign_string(form, self._credentials.sign_key),
            form["sign"],
        )
        with self._cond:
            scripted = self._answers.pop(0) if self._answers else None
        answer = scripted if scripted is not None else ("SUCCESS" if verified else "FAIL")
        status, body, headers = _unpack(answer)
        # Recorded before it is answered: the sandbox sends the next notification only once it
        # has this answer, so ``deliveries`` is in the sandbox's order however threads are run.
        delivery = Delivery(form, handler.headers.get("Content-Type", ""), verified, (status, body))
        with self._cond:
            self.deliveries.append(delivery)
            self._cond.notify_all()
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        encoded = body.encode("utf-8")
        handler.send_header("Content-Type", "text/plain;charset=UTF-8")
        handler.send_header("Content-Length", str(len(encoded)))
        handler.end_headers()
        handler.wfile.write(encoded)

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivery]:
        """The first ``count`` deliveries, once they have all arrived (AssertionError if not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.deliveries)} of {count} notifications arrived"
                self._cond.wait(left)
            return list(self.deliveries)


def _unpack(answer: Answer) -> tuple[int, str, dict[str, str]]:
    if isinstance(answer, str):
        return 200, answer, {}
    if len(answer) == 2:
        return answer[0], answer[1], {}
    return answer  # type: ignore[return-value]


def wait_until(predicate: Any, timeout: float = 30, what: str = "the condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
