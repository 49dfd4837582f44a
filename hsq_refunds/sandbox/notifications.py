"""The refund notification: the sandbox POSTs HSQ's notification to a refund's ``returnUrl``.

For a refund applied with a ``returnUrl``, each status change of its timeline (PROCESSING at
acceptance, then the final SUCCESS or FAIL) is sent as a form (``application/x-www-form-
urlencoded``, UTF-8) with the seven public fields ``method, version, format, merchantNo,
signType, signContent, sign``. ``signContent`` is the compact JSON of ``transNo, origTransNo,
tradeNo, orderAmt`` (a string), ``orderStatus, finishedDate, respCode, respMsg, extend``; ``sign``
is SHA256withRSA with the *platform* private key over the request sign string of those values
(``method=..&version=..&format=..&merchantNo=..&signType=..&signContent=..&key=<sign key>``),
lowercase hex.

HSQ's ``method`` and ``version`` for refund notifications are not public. The defaults,
``CALLBACK`` and ``1.0.0``, are stand-ins (what one public client saw for *payment*
notifications); they are settable, so that a receiver can be shown not to depend on them.

One daemon thread (:class:`Notifier`, started and stopped with the server) delivers on a
schedule: a notification is delivered again after each wait of ``schedule`` (default 1, 2, 5, 15
and 60 seconds) until the answer's body is exactly ``SUCCESS`` once stripped of whitespace, then
given up. Deliveries go one at a time, only to the URL given (no redirects, no proxies), with
connect and read timeouts; each attempt is logged per refund (:meth:`Notifier.log`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .answers import Answers, corrupt_hex
from .faults import Fault
from .refunds import SHANGHAI, SandboxRefund, Step, is_seconds

__all__ = ["CONTENT_FIELDS", "Notifier", "NotifySettings", "notification_content"]

logger = logging.getLogger("hsq_refunds.sandbox")

#: The fields of a notification's ``signContent``, in the order they are written.
CONTENT_FIELDS = (
    "transNo",
    "origTransNo",
    "tradeNo",
    "orderAmt",
    "orderStatus",
    "finishedDate",
    "respCode",
    "respMsg",
    "extend",
)
FORM_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"
#: Longest answer body read (and, clipped further, logged) per attempt.
_BODY_LIMIT = 4096
_LOGGED_BODY = 200
#: How long :meth:`Notifier.stop` waits for a delivery in flight before leaving the daemon be.
_STOP_WAIT = 2.0

#: Take a notification fault for a transNo: ``(trans_no, name, use) -> Fault | None``.
FaultTaker = Callable[[str, str, bool], Fault | None]


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """How notifications are sent; the JSON form has the same keys.

    ``method`` and ``version`` are stand-ins: HSQ's values for refund notifications are not
    public (``CALLBACK``/``1.0.0`` were seen for payment notifications).
    """

    method: str = "CALLBACK"
    version: str = "1.0.0"
    #: Seconds to wait before each new attempt after a failed one; empty: never retry.
    schedule: tuple[float, ...] = (1.0, 2.0, 5.0, 15.0, 60.0)
    connect_timeout: float = 3.0
    read_timeout: float = 10.0

    def updated(self, changes: Mapping[str, Any]) -> NotifySettings:
        """A copy with ``changes``; :class:`ValueError` names a bad key or value."""
        if not isinstance(changes, Mapping):
            raise ValueError("notify settings must be a JSON object")
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(
                f"notify settings: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})"
            )
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("method", "version"):
                if not isinstance(value, str) or not value or not value.isprintable():
                    raise ValueError(f"notify settings: {key} must be a non-empty printable string")
                values[key] = value
            elif key == "schedule":
                if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
                    raise ValueError("notify settings: schedule must be a list of seconds")
                if not all(is_seconds(item) for item in value):
                    raise ValueError("notify settings: schedule holds finite numbers >= 0 only")
                values[key] = tuple(float(item) for item in value)
            else:
                if not is_seconds(value) or value == 0:
                    raise ValueError(f"notify settings: {key} must be a finite number > 0")
                values[key] = float(value)
        return dataclasses.replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schedule"] = list(self.schedule)
        return data


def notification_content(refund: SandboxRefund, step: Step, offset: float) -> str:
    """The ``signContent`` of the notification for ``step``, which begins ``offset`` seconds
    after the refund's creation."""
    result = refund.result_of(step, refund.created_at + dt.timedelta(seconds=offset))
    content = {name: result.get(name, "") for name in CONTENT_FIELDS}
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class _Job:
    """One notification of one refund (a copy, for ``notify_duplicate``), across its attempts."""

    trans_no: str
    url: str
    order_status: str
    final: bool
    content: str
    generation: int
    attempt: int = 0
    duplicate: bool = False
    #: The first-due faults (never, delay, out of order) have been looked at.
    checked: bool = False
    signed: dict[tuple[str, str], str] = field(default_factory=dict)


class Notifier:
    """Delivers notifications from one daemon thread, on a schedule; thread-safe."""

    def __init__(self, answers: Answers, settings: NotifySettings, take_fault: FaultTaker) -> None:
        self._answers = answers
        self._take_fault = take_fault
        self._base_settings = self._settings = settings
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()
        self._held: dict[str, list[_Job]] = {}
        self._log: dict[str, list[dict[str, Any]]] = {}
        self._generation = 0
        self._active = 0
        self._thread: threading.Thread | None = None
        #: The thread that should be running: an earlier one that outlived ``stop`` ends.
        self._token: object | None = None

    # -- settings ------------------------------------------------------------------------

    @property
    def settings(self) -> NotifySettings:
        return self._settings

    def configure(self, changes: Mapping[str, Any], *, base: bool = False) -> NotifySettings:
        """Change the settings (``base``: also those :meth:`reset` returns to)."""
        with self._cond:
            self._settings = self._settings.updated(changes)
            if base:
                self._base_settings = self._base_settings.updated(changes)
            return self._settings

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, name: str = "hsq-sandbox-notify") -> None:
        with self._cond:
            if self._token is not None:
                return
            token = self._token = object()
            self._thread = threading.Thread(target=self._run, args=(token,), name=name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread; what is scheduled stays, for a later :meth:`start`."""
        with self._cond:
            thread, self._thread, self._token = self._thread, None, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_WAIT)

    def reset(self) -> None:
        """Forget scheduled and held notifications and the log; settings back to the base."""
        with self._cond:
            self._generation += 1
            self._heap.clear()
            self._held.clear()
            self._log.clear()
            self._settings = self._base_settings
            self._cond.notify_all()

    # -- scheduling and the log ----------------------------------------------------------

    def schedule(self, refund: SandboxRefund, url: str) -> None:
        """Schedule a notification for each status change of ``refund``'s timeline."""
        now = time.monotonic()
        age = (dt.datetime.now(dt.UTC) - refund.created_at).total_seconds()
        changes = refund.status_changes()
        if not changes:
            return
        with self._cond:
            for offset, step in changes:
                job = _Job(
                    trans_no=refund.trans_no,
                    url=url,
                    order_status=step.status or "",
                    final=step.seconds is None,
                    content=notification_content(refund, step, offset),
                    generation=self._generation,
                )
                self._push(job, now + max(0.0, offset - age))
            self._cond.notify_all()

    def _push(self, job: _Job, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._order), job))

    def log(self) -> dict[str, list[dict[str, Any]]]:
        """Every attempt so far, per transNo, oldest first."""
        with self._cond:
            return {trans_no: [dict(entry) for entry in log] for trans_no, log in self._log.items()}

    def pending(self) -> int:
        """Notifications still to be delivered or retried (held and in flight included)."""
        with self._cond:
            held = sum(len(jobs) for jobs in self._held.values())
            return len(self._heap) + held + self._active

    # -- the thread ----------------------------------------------------------------------

    def _run(self, token: object) -> None:
        with requests.Session() as session:
            session.trust_env = False  # only to the returnUrl given: no proxy from the environment
            while True:
                with self._cond:
                    job = self._next_due(token)
                    if job is None:
                        return
                    self._active += 1
                try:
                    self._process(job, session)
                except Exception:  # a bug must not end the deliveries of every other refund
                    logger.exception("sandbox: notification of transNo=%s failed", job.trans_no)
                finally:
                    with self._cond:
                        self._active -= 1
                        self._cond.notify_all()

    def _next_due(self, token: object) -> _Job | None:
        """Wait (holding the condition) for the next due job; ``None`` when stopping."""
        while self._token is token:
            if self._heap:
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)
            else:
                self._cond.wait()
        return None

    def _current(self, job: _Job) -> bool:
        return job.generation == self._generation

    def _process(self, job: _Job, session: requests.Session) -> None:
        with self._cond:
            if not self._current(job):  # scheduled before a reset
                return
        if not job.checked:
            job.checked = True
            if self._take_fault(job.trans_no, "notify_never", True) is not None:
                self._record(job, result="never")
                if job.final:
                    self._release_held(job.trans_no)
                return
            delay = self._take_fault(job.trans_no, "notify_delay", True)
            if delay is not None:
                self._requeue(job, time.monotonic() + float(delay.params["seconds"]))
                return
            if (
                not job.final
                and self._take_fault(job.trans_no, "notify_out_of_order", True) is not None
            ):
                with self._cond:
                    if self._current(job):
                        self._held.setdefault(job.trans_no, []).append(job)
                return
        if job.attempt == 0 and not job.duplicate:
            duplicate = self._take_fault(job.trans_no, "notify_duplicate", False)
            copies = (duplicate.times or 1) if duplicate is not None else 0
            now = time.monotonic()
            for _ in range(copies):
                self._requeue(dataclasses.replace(job, duplicate=True, signed={}), now)
            if job.final:
                self._release_held(job.trans_no)
        self._attempt(job, session)

    def _requeue(self, job: _Job, due: float) -> None:
        """Schedule ``job`` (again) at ``due``, unless a reset came since it was scheduled."""
        with self._cond:
            if self._current(job):
                self._push(job, due)
                self._cond.notify_all()

    def _release_held(self, trans_no: str) -> None:
        """Send the notifications held back by ``notify_out_of_order``, after this one."""
        with self._cond:
            now = time.monotonic()
            for held in self._held.pop(trans_no, []):
                self._push(held, now)
            self._cond.notify_all()

    def _attempt(self, job: _Job, session: requests.Session) -> None:
        settings = self._settings
        bad_signature = self._take_fault(job.trans_no, "notify_bad_signature", True) is not None
        body = urllib.parse.urlencode(self._form(job, settings, bad_signature)).encode("ascii")
        status: int | None = None
        answer = b""
        error = ""
        try:
            with session.post(
                job.url,
                data=body,
                headers={"Content-Type": FORM_TYPE},
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                for chunk in response.iter_content(1024):
                    answer += chunk
                    if len(answer) > _BODY_LIMIT:
                        break
        except requests.RequestException as exc:
            error = type(exc).__name__
        text = answer.decode("utf-8", "replace")
        if error:
            result = "error"
        elif len(answer) <= _BODY_LIMIT and text.strip() == "SUCCESS":
            result = "acknowledged"
        else:
            result = "rejected"
        retry_in: float | None = None
        if result != "acknowledged" and job.attempt < len(settings.schedule):
            retry_in = settings.schedule[job.attempt]
        self._record(
            job,
            result=result,
            http_status=status,
            body=text[:_LOGGED_BODY],
            error=error,
            bad_signature=bad_signature,
            retry_in=retry_in,
        )
        job.attempt += 1
        if retry_in is not None:
            self._requeue(job, time.monotonic() + retry_in)

    def _form(self, job: _Job, settings: NotifySettings, bad_signature: bool) -> dict[str, str]:
        fields = {
            "method": settings.method,
            "version": settings.version,
            "format": "JSON",
            "merchantNo": self._answers.merchant_no,
            "signType": "RSA2",
            "signContent": job.content,
        }
        key = (settings.method, settings.version)
        signature = job.signed.get(key)
        if signature is None:
            signature = job.signed[key] = self._answers.sign_form(fields)
        fields["sign"] = corrupt_hex(signature) if bad_signature else signature
        return fields

    def _record(self, job: _Job, *, result: str, **details: Any) -> None:
        entry = {
            "order_status": job.order_status,
            "attempt": job.attempt + 1,
            "at": dt.datetime.now(SHANGHAI).isoformat(timespec="milliseconds"),
            "url": job.url,
            "http_status": details.get("http_status"),
            "body": details.get("body", ""),
            "result": result,
            "error": details.get("error", ""),
            "duplicate": job.duplicate,
            "bad_signature": details.get("bad_signature", False),
            "retry_in": details.get("retry_in"),
        }
        with self._cond:
            if not self._current(job):
                return
            self._log.setdefault(job.trans_no, []).append(entry)
        logger.info(
            "notify transNo=%s %s attempt %d: %s%s",
            job.trans_no,
            job.order_status,
            entry["attempt"],
            result,
            f" HTTP {entry['http_status']}" if entry["http_status"] is not None else "",
        )
