"""Keys for the gateway tests, generated once per session (RSA generation is slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .support import RecordingGateway

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO_ROOT.parent / "shared" / "hsq" / "demo"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """HSQ's published test-merchant files, read in place (never copied into the repo)."""
    if not (DEMO_DIR / "814000473149_pri.pfx").is_file():
        pytest.skip(f"HSQ's public demo files are not at {DEMO_DIR}")
    return DEMO_DIR


@pytest.fixture(scope="session")
def merchant_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="session")
def platform_private() -> rsa.RSAPrivateKey:
    """Stands in for HSQ's own key: it signs the answers the tests feed the client."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="session")
def platform_public(platform_private: rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    return platform_private.public_key()


@pytest.fixture(scope="session")
def big_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def recording_gateway() -> Iterator[RecordingGateway]:
    gateway = RecordingGateway()
    yield gateway
    gateway.close()
