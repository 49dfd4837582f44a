"""A fake HSQ gateway that speaks the real protocol with its own keys.

For the example project, the test suite, the benchmarks, and merchants who develop offline::

    python -m hsq_refunds.sandbox init keys/
    python -m hsq_refunds.sandbox serve --keys keys/

or in-process::

    from hsq_refunds.sandbox import SandboxServer, create_credentials

    with SandboxServer(create_credentials(tmp_dir)) as gateway:
        gateway.add_refund("R1", amount=100)
        ...  # point the app at gateway.url

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
