"""Sandbox key material, written the way HSQ issues it to a merchant.

HSQ hands a merchant a password-protected PKCS#12 file with the merchant key
(``<merchantNo>_pri.pfx``), the merchant certificate (``<merchantNo>_pub.cer``), the platform
certificate (``MANDAO_<merchantNo>_pub.cer``) and a 32-hex-character sign key. The sandbox makes
its own set of the same files, so that the code under test loads exactly what it would load in
production. It also keeps the platform *private* key (``platform_private.pem``), which only a
fake gateway can have: the sandbox server signs its answers with it.

Everything is described by ``credentials.json`` in the same directory; paths in it are relative
to that directory so the folder can be moved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

__all__ = [
    "CREDENTIALS_FILE",
    "Credentials",
    "CredentialsError",
    "create_credentials",
    "self_signed_certificate",
]

#: The file that describes a sandbox key directory.
CREDENTIALS_FILE = "credentials.json"

_MERCHANT_NO = re.compile(r"^[0-9A-Za-z_-]{1,16}$")
_PATH_KEYS = ("private_key", "platform_cert", "merchant_cert", "platform_private_key")
_REQUIRED_KEYS = ("merchant_no", "sign_key", "private_key", "private_key_password", "platform_cert")
_CERT_VALIDITY = dt.timedelta(days=3650)


class CredentialsError(ValueError):
    """A sandbox key directory is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class Credentials:
    """One merchant's sandbox credentials; paths are absolute strings.

    ``repr`` hides the sign key and the key password, so a credentials object may be logged or
    shown in a test failure without leaking them.
    """

    merchant_no: str
    sign_key: str
    private_key: str
    private_key_password: str
    platform_cert: str
    directory: str
    merchant_cert: str = ""
    platform_private_key: str = ""

    def __repr__(self) -> str:
        return (
            f"Credentials(merchant_no={self.merchant_no!r}, sign_key='***', "
            f"private_key={self.private_key!r}, private_key_password='***', "
            f"platform_cert={self.platform_cert!r}, directory={self.directory!r})"
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Credentials:
        """Read ``credentials.json`` in ``directory``; relative paths resolve against it."""
        base = Path(directory).expanduser().resolve()
        path = base / CREDENTIALS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CredentialsError(
                f"no {CREDENTIALS_FILE} in {str(base)!r}; create one with "
                "`python -m hsq_refunds.sandbox init DIR`"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CredentialsError(f"cannot read {str(path)!r}: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{str(path)!r} does not hold a JSON object")
        missing = [key for key in _REQUIRED_KEYS if not isinstance(data.get(key), str)]
        if missing:
            raise CredentialsError(f"{str(path)!r} lacks {', '.join(missing)}")
        optional = ("merchant_cert", "platform_private_key")
        values: dict[str, Any] = {key: data[key] for key in _REQUIRED_KEYS}
        values.update({key: str(data.get(key) or "") for key in optional})
        for key in _PATH_KEYS:
            if values[key]:
                values[key] = str(base / values[key])
        return cls(directory=str(base), **values)

    def settings_dict(self, base_url: str) -> dict[str, Any]:
        """The ``HSQ_REFUNDS`` Django setting that points the app at a sandbox at ``base_url``."""
        return {
            "BASE_URL": base_url,
            "MERCHANTS": {
                self.merchant_no: {
                    "SIGN_KEY": self.sign_key,
                    "PRIVATE_KEY": self.private_key,
                    "PRIVATE_KEY_PASSWORD": self.private_key_password,
                    "PLATFORM_CERT": self.platform_cert,
                }
            },
        }


def create_credentials(
    directory: str | os.PathLike[str],
    *,
    merchant_no: str = "888000000001",
    key_size: int = 2048,
    platform_key_size: int = 2048,
    sign_key: str | None = None,
    password: str | None = None,
    overwrite: bool = False,
) -> Credentials:
    """Generate a merchant key pair and a platform key pair, and write them as HSQ issues them.

    Raises :class:`FileExistsError` where credentials already exist in ``directory`` unless
    ``overwrite`` is true: regenerating keys silently would invalidate every configuration that
    points at them.
    """
    if not _MERCHANT_NO.match(merchant_no):
        raise CredentialsError("merchant_no must be 1-16 letters, digits, '-' or '_'")
    base = Path(directory).expanduser().resolve()
    names = {
        "private_key": f"{merchant_no}_pri.pfx",
        "merchant_cert": f"{merchant_no}_pub.cer",
        "platform_cert": f"MANDAO_{merchant_no}_pub.cer",
        "platform_private_key": "platform_private.pem",
    }
    if not overwrite:
        existing = [name for name in (CREDENTIALS_FILE, *names.values()) if (base / name).exists()]
        if existing:
            raise FileExistsError(
                f"sandbox credentials already exist in {str(base)!r} ({', '.join(existing)}); "
                "pass overwrite=True (--force) to replace them"
            )
    sign_key = sign_key if sign_key is not None else secrets.token_hex(16)
    password = password if password is not None else secrets.token_urlsafe(12)
    if not password:
        raise CredentialsError("the PKCS#12 password must not be empty")

    merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    platform_key = rsa.generate_private_key(public_exponent=65537, key_size=platform_key_size)
    merchant_cert = self_signed_certificate(merchant_key, f"{merchant_no}", "HSQ sandbox merchant")
    platform_cert = self_signed_certificate(
        platform_key, f"MANDAO_{merchant_no}", "HSQ sandbox platform"
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - the MAC that every PKCS#12 reader accepts
        .build(password.encode("utf-8"))
    )
    pfx = pkcs12.serialize_key_and_certificates(
        merchant_no.encode(), merchant_key, merchant_cert, None, encryption
    )

    files = {
        "private_key": pfx,
        "merchant_cert": merchant_cert.public_bytes(serialization.Encoding.PEM),
        "platform_cert": platform_cert.public_bytes(serialization.Encoding.PEM),
        "platform_private_key": platform_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for key, data in files.items():
        _write_private(base / names[key], data)
    description = {
        "merchant_no": merchant_no,
        "sign_key": sign_key,
        "private_key": names["private_key"],
        "private_key_password": password,
        "platform_cert": names["platform_cert"],
        "merchant_cert": names["merchant_cert"],
        "platform_private_key": names["platform_private_key"],
    }
    _write_private(
        base / CREDENTIALS_FILE,
        (json.dumps(description, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    )
    return Credentials.load(base)


def self_signed_certificate(
    key: rsa.RSAPrivateKey, common_name: str, organization: str = "HSQ sandbox"
) -> x509.Certificate:
    """A self-signed certificate, as HSQ's own certificates are."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, whatever the umask and previous mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    finally:
        if fd != -1:
            os.close(fd)
