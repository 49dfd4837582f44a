"""Engine test fixtures: the app pointed at the sandbox gateway, refunds on both sides."""

from __future__ import annotations

import pytest

from hsq_refunds import signals
from hsq_refunds.models import Refund


@pytest.fixture
def received(request):
    """Every refund signal, as (signal name, trans_no, kwargs)."""
    log: list[tuple[str, str, dict]] = []
    hooks = []
    for name in (
        "refund_status_changed",
        "refund_succeeded",
        "refund_failed",
        "refund_needs_attention",
    ):
        signal = getattr(signals, name)

        def receiver(sender, refund, _name=name, **kwargs):
            assert sender is Refund and isinstance(refund, Refund)
            kwargs.pop("signal")
            log.append((_name, refund.trans_no, kwargs))

        signal.connect(receiver, weak=False)
        hooks.append((signal, receiver))
    yield log
    for signal, receiver in hooks:
        signal.disconnect(receiver)
