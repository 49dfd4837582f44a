"""A fake HSQ gateway that speaks the real protocol with its own keys.

For the example project, the test suite, the benchmarks, and merchants who develop offline::

    python -m hsq_refunds.sandbox init keys/
    python -m hsq_refunds.sandbox serve --keys keys/

or in-process::

    from hsq_refunds.sandbox import SandboxServer, create_credentials

    with SandboxServer(create_credentials(tmp_dir)) as gateway:
        gateway.add_refund("R1", amount=100)       # a refund to query
        gateway.add_order("P1", 1000, kind="card")  # an order to apply for refunds against
        ...  # point the app at gateway.url

It answers ``POLYMERIZE_REFUND_QUERY`` and ``POLYMERIZE_REFUND``, and POSTs HSQ's refund
notification to each applied refund's ``returnUrl``; faults (:mod:`.faults`) make it misbehave
in every way a gateway can.

It imports no Django.
"""

from .control import SandboxControl
from .credentials import Credentials, CredentialsError, create_credentials
from .faults import FAULTS
from .server import SandboxServer

__all__ = [
    "FAULTS",
    "Credentials",
    "CredentialsError",
    "SandboxControl",
    "SandboxServer",
    "create_credentials",
]
