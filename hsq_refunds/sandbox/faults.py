"""Faults the sandbox can inject into its answers, to exercise every way a gateway misbehaves.

A fault applies to one refund's queries (``trans_no``) or to every query (``trans_no=None``),
forever or ``times`` times. Several faults may be set at once: ``latency`` delays the answer
and combines with any other; of the others, a refund's own faults come before the ones for every
query, and among those the earliest set wins. Faults that alter a result (``wrong_trans_no``,
``wrong_merchant_no``, ``double_encoding_missing``) leave a failure answer as it is, and are used
up all the same. JSON form (control endpoint, scenario files)::

    {"name": "http_error", "transNo": "R1", "times": 2, "status": 503}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULTS", "Fault", "FaultBook", "make_fault", "parse_fault_spec"]

_NUMBER = "number"
_STATUS = "status"
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
}


@dataclass(slots=True)
class Fault:
    """A fault in force; ``times`` counts down to its removal (``None``: forever)."""

    name: str
    trans_no: str | None
    times: int | None
    params: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        """The JSON form, as :func:`parse_fault_spec` reads it."""
        spec: dict[str, Any] = {"name": self.name, **self.params}
        if self.trans_no is not None:
            spec["transNo"] = self.trans_no
        if self.times is not None:
            spec["times"] = self.times
        return spec


def make_fault(
    name: str, *, trans_no: str | None = None, times: int | None = None, **params: Any
) -> Fault:
    """Validate a fault; :class:`ValueError` names what is wrong."""
    kinds = FAULTS.get(name)
    if kinds is None:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if trans_no is not None and (not isinstance(trans_no, str) or not trans_no):
        raise ValueError(f"fault {name}: transNo must be a non-empty string")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"fault {name}: times must be a positive integer")
    for key, value in params.items():
        kind = kinds.get(key)
        if kind is None:
            allowed = ", ".join(kinds) or "none"
            raise ValueError(f"fault {name}: unknown parameter {key!r} (allowed: {allowed})")
        _check_param(name, key, kind, value)
    if name == "latency" and "seconds" not in params:
        raise ValueError("fault latency: needs seconds")
    return Fault(name, trans_no, times, dict(params))


def _check_param(name: str, key: str, kind: str, value: Any) -> None:
    if kind == _NUMBER:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and value >= 0
        )
        expected = "a finite number >= 0"
    elif kind == _STATUS:
        ok = not isinstance(value, bool) and isinstance(value, int) and 100 <= value <= 599
        expected = "an HTTP status between 100 and 599"
    elif kind == _FLAG:
        ok = isinstance(value, bool)
        expected = "true or false"
    else:
        ok = isinstance(value, str)
        expected = "a string"
    if not ok:
        raise ValueError(f"fault {name}: {key} must be {expected}")


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
    return make_fault(name, trans_no=trans_no, times=times, **params)


class FaultBook:
    """The faults in force. Not thread-safe: the server calls it under its own lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Set ``fault``, replacing one of the same name for the same target."""
        self._faults = [
            f for f in self._faults if (f.name, f.trans_no) != (fault.name, fault.trans_no)
        ]
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, trans_no: str | None) -> tuple[Fault | None, Fault | None]:
        """The latency fault and the answer fault for one query, each used up once."""
        candidates = [f for f in self._faults if trans_no is not None and f.trans_no == trans_no]
        candidates += [f for f in self._faults if f.trans_no is None]
        latency = next((f for f in candidates if f.name == "latency"), None)
        answer = next((f for f in candidates if f.name != "latency"), None)
        for fault in (latency, answer):
            if fault is not None and fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
        return latency, answer
