"""Faults the sandbox can inject, to exercise every way a gateway misbehaves.

A fault applies to one refund (``trans_no``) or to every refund (``trans_no=None``), forever or
``times`` times. Faults act on one of three *channels*: the answers to ``POLYMERIZE_REFUND_QUERY``,
the answers to ``POLYMERIZE_REFUND`` (applications), and the notifications the sandbox sends to a
refund's ``returnUrl``. :data:`FAULT_CHANNELS` says which channels each fault acts on; a fault
that acts on both answer channels can be aimed at one of them with ``method``
(``"POLYMERIZE_REFUND_QUERY"`` or ``"POLYMERIZE_REFUND"``), so that query faults don't hit
applications and vice versa.

Several faults may be set at once: ``latency`` delays the answer and combines with any other; of
the others, a refund's own faults come before the ones for every refund, and among those the
earliest set wins. Faults that alter a result (``wrong_trans_no``, ``wrong_merchant_no``,
``double_encoding_missing``, ``verbatim_result``, ``lone_surrogate``, ``huge_amount``, ``status``)
leave a failure answer as it is, and are used up all the same.

On an application, the faults that stand for a request that never got through (``drop``,
``http_error``, ``spring_error``, ``unsigned_failure``, ``signed_failure``) refuse it: no refund is
recorded. Every other fault damages the answer to an application that *was* accepted
(``accept_then_drop`` and ``accept_then_delay`` say so in their names).

Notification faults (``notify_*``) are taken when a notification falls due (its first attempt),
except ``notify_bad_signature``, which is taken per attempt (``times=1``: the first attempt is
badly signed, the retry is not). ``notify_duplicate`` is never used up: its ``times`` is the
number of extra copies of *each* notification (default 1).

JSON form (control endpoint, scenario files)::

    {"name": "http_error", "transNo": "R1", "times": 2, "status": 503}
    {"name": "drop", "method": "POLYMERIZE_REFUND"}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .refunds import STATUSES, is_seconds

__all__ = [
    "APPLY",
    "FAULTS",
    "FAULT_CHANNELS",
    "NOTIFY",
    "QUERY",
    "Fault",
    "FaultBook",
    "make_fault",
    "parse_fault_spec",
]

#: The channels a fault acts on: the two answered methods, and the notifications.
QUERY = "POLYMERIZE_REFUND_QUERY"
APPLY = "POLYMERIZE_REFUND"
NOTIFY = "notify"
METHODS = (QUERY, APPLY)

_NUMBER = "number"
_INTEGER = "integer"
_COUNT = "count"
_STATUS = "status"
_ORDER_STATUS = "order status"
_TEXT = "text"
_FLAG = "flag"

#: Every fault and the parameters it takes.
FAULTS: dict[str, dict[str, str]] = {
    # Delay the answer by ``seconds`` (combines with every other fault).
    "latency": {"seconds": _NUMBER},
    # Answer ``status`` (default 500) with a Spring Boot error body.
    "http_error": {"status": _STATUS},
    # The same, under the name of the body it produces.
    "spring_error": {"status": _STATUS},
    # Close the connection without answering.
    "drop": {},
    # A valid answer whose ``sign`` does not verify (one hex digit changed).
    "bad_signature": {},
    # The valid answer cut in half.
    "malformed_json": {},
    # A correctly signed result about another transNo.
    "wrong_trans_no": {"answer_trans_no": _TEXT},
    # A correctly signed result naming another merchant.
    "wrong_merchant_no": {"answer_merchant_no": _TEXT},
    # ``success=false`` without ``sign`` (or with ``"sign": null`` given ``null_sign``).
    "unsigned_failure": {"error_code": _TEXT, "error_msg": _TEXT, "null_sign": _FLAG},
    # ``success=false``, correctly signed.
    "signed_failure": {"error_code": _TEXT, "error_msg": _TEXT},
    # ``result`` as a JSON object instead of a string holding JSON (signed over the string).
    "double_encoding_missing": {},
    # Success with exactly ``result`` (any text, JSON or not) as the result, signed over it: JSON
    # the sandbox's encoder would never write, e.g. ``{"extend":"\\ud83d",...}`` or an
    # ``orderAmt`` of 99999999999999999999 as a number.
    "verbatim_result": {"result": _TEXT},
    # The normal result with ``extend`` holding a lone surrogate, as the JSON escape ``\ud83d``.
    "lone_surrogate": {},
    # The normal result with ``orderAmt`` as a JSON number, ``amount`` (default 2**64 + 1).
    "huge_amount": {"amount": _INTEGER},
    # The normal result with this ``orderStatus`` (INIT, PROCESSING, SUCCESS, FAIL) instead of
    # the timeline's: with ``times``, a status can go backwards.
    "status": {"status": _ORDER_STATUS},
    # Write the answer ``chunk`` bytes (default 4) at a time, ``interval`` seconds (default 0.5)
    # apart: the headers and body, or the body alone given ``body_only``. A client's per-read
    # timeout never fires; the writing stops when the client hangs up.
    "trickle": {"chunk": _COUNT, "interval": _NUMBER, "body_only": _FLAG},
    # Applications only: record the refund, then close the connection without answering (the
    # application reached the gateway, its answer was lost).
    "accept_then_drop": {},
    # Applications only: record the refund, answer after ``seconds``.
    "accept_then_delay": {"seconds": _NUMBER},
    # Notifications: deliver each notification ``times`` extra times (default 1).
    "notify_duplicate": {},
    # Notifications: send the final status first, then the earlier PROCESSING one.
    "notify_out_of_order": {},
    # Notifications: a ``sign`` that does not verify (per attempt).
    "notify_bad_signature": {},
    # Notifications: deliver ``seconds`` later than due.
    "notify_delay": {"seconds": _NUMBER},
    # Notifications: never deliver (the log says so).
    "notify_never": {},
}

_ANSWERS = frozenset(METHODS)
#: The channels each fault acts on.
FAULT_CHANNELS: dict[str, frozenset[str]] = {
    name: (
        frozenset({NOTIFY})
        if name.startswith("notify_")
        else frozenset({APPLY})
        if name.startswith("accept_then_")
        else _ANSWERS
    )
    for name in FAULTS
}

#: Parameters a fault cannot do without.
_REQUIRED = {
    "latency": "seconds",
    "verbatim_result": "result",
    "status": "status",
    "accept_then_delay": "seconds",
    "notify_delay": "seconds",
}
#: Parameter defaults, filled in by :func:`make_fault`.
DEFAULTS: dict[str, dict[str, Any]] = {
    "huge_amount": {"amount": 2**64 + 1},
    "trickle": {"chunk": 4, "interval": 0.5, "body_only": False},
}


def _integer(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _text(value: Any) -> bool:
    """A string that UTF-8 can encode: one without lone surrogates."""
    return isinstance(value, str) and not any("\ud800" <= char <= "\udfff" for char in value)


#: Per kind of parameter: the check of a value, and what the value must be.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    _NUMBER: (is_seconds, "a finite number >= 0"),
    _INTEGER: (_integer, "an integer"),
    _COUNT: (lambda value: _integer(value) and value >= 1, "a positive integer"),
    _STATUS: (
        lambda value: _integer(value) and 100 <= value <= 599,
        "an HTTP status between 100 and 599",
    ),
    _ORDER_STATUS: (lambda value: value in STATUSES, f"one of {', '.join(STATUSES)}"),
    _FLAG: (lambda value: isinstance(value, bool), "true or false"),
    _TEXT: (_text, "a string (with no lone surrogates: it is signed as UTF-8)"),
}


@dataclass(slots=True)
class Fault:
    """A fault in force; ``times`` counts down to its removal (``None``: forever).

    ``method`` aims a fault that acts on both answered methods at one of them.
    """

    name: str
    trans_no: str | None
    times: int | None
    params: dict[str, Any] = field(default_factory=dict)
    method: str | None = None

    def to_spec(self) -> dict[str, Any]:
        """The JSON form, as :func:`parse_fault_spec` reads it."""
        spec: dict[str, Any] = {"name": self.name, **self.params}
        if self.trans_no is not None:
            spec["transNo"] = self.trans_no
        if self.times is not None:
            spec["times"] = self.times
        if self.method is not None:
            spec["method"] = self.method
        return spec

    def acts_on(self, channel: str) -> bool:
        return channel in FAULT_CHANNELS[self.name] and self.method in (None, channel)


def make_fault(
    name: str,
    *,
    trans_no: str | None = None,
    times: int | None = None,
    method: str | None = None,
    **params: Any,
) -> Fault:
    """Validate a fault; :class:`ValueError` names what is wrong."""
    kinds = FAULTS.get(name)
    if kinds is None:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if trans_no is not None and (not isinstance(trans_no, str) or not trans_no):
        raise ValueError(f"fault {name}: transNo must be a non-empty string")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"fault {name}: times must be a positive integer")
    if method is not None:
        channels = FAULT_CHANNELS[name]
        if method not in METHODS:
            raise ValueError(f"fault {name}: method must be one of {', '.join(METHODS)}")
        if method not in channels:
            raise ValueError(f"fault {name}: acts on {', '.join(sorted(channels))} only")
    for key, value in params.items():
        kind = kinds.get(key)
        if kind is None:
            allowed = ", ".join(kinds) or "none"
            raise ValueError(f"fault {name}: unknown parameter {key!r} (allowed: {allowed})")
        check, expected = _CHECKS[kind]
        if not check(value):
            raise ValueError(f"fault {name}: {key} must be {expected}")
    required = _REQUIRED.get(name)
    if required is not None and required not in params:
        raise ValueError(f"fault {name}: needs {required}")
    return Fault(name, trans_no, times, {**DEFAULTS.get(name, {}), **params}, method)


def parse_fault_spec(spec: Any) -> Fault:
    """Build a fault from its JSON form."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a fault spec must be a JSON object, got {type(spec).__name__}")
    params = dict(spec)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ValueError("fault spec: name is required")
    trans_no = params.pop("transNo", None)
    times = params.pop("times", None)
    method = params.pop("method", None)
    return make_fault(name, trans_no=trans_no, times=times, method=method, **params)


class FaultBook:
    """The faults in force. Not thread-safe: the server calls it under its own lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Set ``fault``, replacing one of the same name for the same target and method."""
        key = (fault.name, fault.trans_no, fault.method)
        self._faults = [f for f in self._faults if (f.name, f.trans_no, f.method) != key]
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def _candidates(self, trans_no: str | None, channel: str) -> list[Fault]:
        """The faults for ``channel``: the refund's own first, then those for every refund."""
        found = [f for f in self._faults if f.trans_no in (trans_no, None) and f.acts_on(channel)]
        return sorted(found, key=lambda fault: fault.trans_no is None)

    def _use(self, fault: Fault) -> None:
        if fault.times is not None:
            fault.times -= 1
            if fault.times == 0:
                self._faults.remove(fault)

    def take(self, trans_no: str | None, method: str = QUERY) -> tuple[Fault | None, Fault | None]:
        """The latency fault and the answer fault for one request, each used up once."""
        if not self._faults:
            return None, None
        candidates = self._candidates(trans_no, method)
        latency = next((f for f in candidates if f.name == "latency"), None)
        answer = next((f for f in candidates if f.name != "latency"), None)
        for fault in (latency, answer):
            if fault is not None:
                self._use(fault)
        return latency, answer

    def take_notify(self, trans_no: str, name: str, *, use: bool = True) -> Fault | None:
        """The first notification fault ``name`` for ``trans_no`` (its own first), used up once
        unless ``use`` is false."""
        if not self._faults:
            return None
        fault = next((f for f in self._candidates(trans_no, NOTIFY) if f.name == name), None)
        if fault is not None and use:
            self._use(fault)
        return fault
