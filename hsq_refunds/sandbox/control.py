"""Drive a sandbox server over HTTP, from another process (tests, benchmarks, the demo).

:class:`SandboxControl` has the same methods as :class:`~hsq_refunds.sandbox.server.
SandboxServer` and raises the same :class:`ValueError` for a bad refund or fault, so code can
drive either without caring where the server runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests

from .faults import Fault, make_fault

__all__ = ["SandboxCommands", "SandboxControl"]


class SandboxCommands:
    """``add_refund``, ``add_order`` and ``set_fault``, for a sandbox in-process or over HTTP:
    each builds the JSON spec (or the fault) that ``add_refunds``, ``add_orders`` or
    ``add_fault`` takes."""

    def add_refunds(self, specs: Iterable[Mapping[str, Any]]) -> int:
        raise NotImplementedError

    def add_orders(self, specs: Iterable[Mapping[str, Any]]) -> int:
        raise NotImplementedError

    def add_fault(self, fault: Fault) -> None:
        raise NotImplementedError

    def add_refund(
        self,
        trans_no: str,
        *,
        amount: int = 100,
        timeline: Sequence[Mapping[str, Any]] | None = None,
        orig_trans_no: str = "",
        extend: str = "",
        merchant_no: str | None = None,
        trade_no: str | None = None,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Add (or replace) one refund; see :mod:`hsq_refunds.sandbox.refunds`."""
        if created_at is not None and created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        spec: dict[str, Any] = {
            "transNo": trans_no,
            "amount": amount,
            "origTransNo": orig_trans_no,
            "extend": extend,
        }
        if timeline is not None:
            spec["timeline"] = [dict(step) for step in timeline]
        if merchant_no is not None:
            spec["merchantNo"] = merchant_no
        if trade_no is not None:
            spec["tradeNo"] = trade_no
        if created_at is not None:
            spec["createdAt"] = created_at.isoformat()
        self.add_refunds([spec])

    def add_order(self, orig_trans_no: str, amount: int, kind: str = "balance") -> None:
        """Declare (or replace) one original order; see :mod:`hsq_refunds.sandbox.applications`."""
        self.add_orders([{"origTransNo": orig_trans_no, "amount": amount, "kind": kind}])

    def set_fault(
        self,
        name: str,
        *,
        trans_no: str | None = None,
        times: int | None = None,
        method: str | None = None,
        **params: Any,
    ) -> None:
        """Inject a fault for one refund or (``trans_no=None``) every one, aimed at one
        ``method`` or (``None``) every channel it acts on; see :mod:`hsq_refunds.sandbox.faults`."""
        self.add_fault(make_fault(name, trans_no=trans_no, times=times, method=method, **params))


class SandboxControl(SandboxCommands):
    """Client of a sandbox's JSON control endpoint (``http://HOST:PORT/sandbox``)."""

    def __init__(self, control_url: str, *, timeout: float = 30.0) -> None:
        self.control_url = control_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"SandboxControl({self.control_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_refunds(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Add (or replace) refunds from JSON specs, all or none; returns how many."""
        answer = self._call("POST", "refunds", {"refunds": [dict(spec) for spec in specs]})
        return int(answer["added"])

    def add_orders(self, specs: Iterable[Mapping[str, Any]]) -> int:
        """Declare (or replace) original orders from JSON specs, all or none; returns how many."""
        answer = self._call("POST", "orders", {"orders": [dict(spec) for spec in specs]})
        return int(answer["added"])

    def add_fault(self, fault: Fault) -> None:
        self._call("POST", "faults", fault.to_spec())

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def configure_apply(self, **settings: float) -> dict[str, float]:
        """Set ``balance_seconds``, ``card_seconds``, ``refuse_seconds`` until the next reset."""
        return dict(self._call("POST", "apply", settings)["apply"])

    def configure_notify(self, **settings: Any) -> dict[str, Any]:
        """Set ``method``, ``version``, ``schedule``, ``connect_timeout``, ``read_timeout``."""
        if "schedule" in settings:
            settings["schedule"] = list(settings["schedule"])
        return dict(self._call("POST", "notify", settings)["notify"])

    def query_counts(self) -> dict[str, int]:
        """Queries received per transNo since the last reset."""
        return dict(self._call("GET", "counts")["counts"])

    def query_times(self) -> list[float]:
        """When each counted query arrived (``time.time()``) since the last reset."""
        return [float(when) for when in self._call("GET", "query-times")["times"]]

    def application_counts(self) -> dict[str, dict[str, int]]:
        """Per transNo, applications ``received`` and ``accepted`` since the last reset."""
        return dict(self._call("GET", "counts")["applications"])

    def notification_log(self) -> dict[str, list[dict[str, Any]]]:
        """Every notification attempt per transNo since the last reset."""
        return dict(self._call("GET", "notifications")["notifications"])

    def notifications_pending(self) -> int:
        """Notifications still to be delivered or retried."""
        return int(self._call("GET", "notifications")["pending"])

    def reset(self) -> None:
        """Forget refunds, orders, faults, counts and notifications."""
        self._call("POST", "reset")

    def _call(self, method: str, action: str, payload: Any = None) -> dict[str, Any]:
        response = self._session.request(
            method, f"{self.control_url}/{action}", json=payload, timeout=self.timeout
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 400 and isinstance(answer, dict):
            raise ValueError(answer.get("error", "rejected by the sandbox"))
        if response.status_code != 200 or not isinstance(answer, dict):
            raise RuntimeError(
                f"sandbox control {method} {action} answered HTTP {response.status_code}"
            )
        return answer
