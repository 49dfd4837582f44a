"""pytest fixtures that run the sandbox gateway, for this project's tests and merchants' own.

Enable with ``pytest_plugins = ["hsq_refunds.sandbox.pytest_plugin"]`` in a root
``conftest.py`` (or ``-p hsq_refunds.sandbox.pytest_plugin``). Then::

    def test_refund_lands(hsq_sandbox, hsq_sandbox_settings, settings):
        settings.HSQ_REFUNDS = hsq_sandbox_settings
        hsq_sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
        ...

Keys are generated once per test session and one server runs for the whole session;
``hsq_sandbox`` resets it (refunds, orders, faults, counts, notifications, and the apply and
notify settings) before each test. Django is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .credentials import Credentials, create_credentials
from .server import SandboxServer

__all__ = [
    "hsq_sandbox",
    "hsq_sandbox_credentials",
    "hsq_sandbox_server",
    "hsq_sandbox_settings",
]


@pytest.fixture(scope="session")
def hsq_sandbox_credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """Sandbox credentials made once per session (a 1024-bit platform key, for speed)."""
    directory = tmp_path_factory.mktemp("hsq_sandbox_keys")
    return create_credentials(directory, key_size=2048, platform_key_size=1024)


@pytest.fixture(scope="session")
def hsq_sandbox_server(hsq_sandbox_credentials: Credentials) -> Iterator[SandboxServer]:
    """The session's sandbox gateway, started once; prefer :func:`hsq_sandbox` in tests."""
    with SandboxServer(hsq_sandbox_credentials) as server:
        yield server


@pytest.fixture
def hsq_sandbox(hsq_sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox gateway with nothing left by earlier tests (refunds, orders,
    faults, counts, notifications, settings changed with ``configure_*``)."""
    hsq_sandbox_server.reset()
    return hsq_sandbox_server


@pytest.fixture
def hsq_sandbox_settings(
    hsq_sandbox: SandboxServer, hsq_sandbox_credentials: Credentials
) -> dict[str, Any]:
    """An ``HSQ_REFUNDS`` setting pointing at the sandbox (a fresh copy per test)."""
    return hsq_sandbox_credentials.settings_dict(hsq_sandbox.url)
