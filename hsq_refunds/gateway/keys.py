"""Loading the merchant's private key and the platform's public key.

HSQ issues the merchant key as a password-protected PKCS#12 file (``<merchantNo>_pri.pfx``,
legacy RC2-40 encryption) and the platform key as an X.509 certificate
(``MANDAO_<merchantNo>_pub.cer``). Merchants also keep keys as PEM or as bare base64 DER
copied from a console, in files or in environment variables. Every one of those is accepted
here, given as a path or as the text itself.

Errors are :class:`~hsq_refunds.gateway.errors.ConfigurationError` with a message that names
the problem and never contains key material or passwords: the underlying library's own
messages are never passed on, because they are not guaranteed to be free of either.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from .errors import ConfigurationError

__all__ = ["KeySource", "load_platform_key", "load_private_key"]

#: A path (``str`` or ``Path``) to a key file, or the key itself as text or bytes.
KeySource = str | bytes | os.PathLike[str]

_PRIVATE = "merchant private key"
_PLATFORM = "platform key"
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=]+$")
_BASE64_TEXT = re.compile(rb"^[A-Za-z0-9+/=\s]+$")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_MAX_KEY_BYTES = 1 << 20
#: Bare base64 key text is at least this long (a 512-bit public key is ~128 characters);
#: shorter values without a PEM header are taken for paths.
_MIN_BASE64_KEY_CHARS = 100
_PLATFORM_HINT = "the platform key is HSQ's public certificate (MANDAO_<merchantNo>_pub.cer)"


def _describe_path(value: str) -> str:
    """Name a path in an error, unless the value could be (a fragment of) base64 key text."""
    if len(value) < 512 and "\n" not in value and not _BASE64_CHARS.match(value):
        return f"file {value!r}"
    return "the given file"


def _read_source(source: KeySource, what: str) -> tuple[bytes, str]:
    """Return the key bytes and a safe description of where they came from.

    A string is key text when it holds a PEM header or looks like base64 and is not the name
    of an existing file; otherwise it is a path.
    """
    if isinstance(source, bytes):
        if not source.strip():
            raise ConfigurationError(f"{what}: the value is empty")
        return source, "the given data"
    if isinstance(source, os.PathLike):
        return _read_file(Path(source), f"file {str(Path(source))!r}", what)
    if not isinstance(source, str):
        raise ConfigurationError(
            f"{what}: expected a file path or key text, got {type(source).__name__}"
        )
    text = source.strip()
    if not text:
        raise ConfigurationError(f"{what}: the value is empty")
    if "-----BEGIN" in text:
        return text.encode("utf-8", "replace"), "the given text"
    looks_base64 = len(text) >= _MIN_BASE64_KEY_CHARS and bool(_BASE64_TEXT.match(text.encode()))
    if looks_base64 and not _is_file(Path(text)):
        return text.encode("ascii"), "the given text"
    return _read_file(Path(text).expanduser(), _describe_path(text), what)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # name too long, NUL byte, ...
        return False


def _read_file(path: Path, described: str, what: str) -> tuple[bytes, str]:
    if not _is_file(path):
        raise ConfigurationError(
            f"{what}: {described} does not exist or is not a file, and the value is not PEM "
            "or base64 key text"
        )
    try:
        if path.stat().st_size > _MAX_KEY_BYTES:
            raise ConfigurationError(f"{what}: {described} is too large to be a key")
        return path.read_bytes(), described
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"{what}: cannot read {described}: {reason}") from None


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or password in ("", b""):
        return None
    if isinstance(password, bytes):
        return password
    if isinstance(password, str):
        return password.encode("utf-8")
    raise ConfigurationError(
        f"{_PRIVATE}: the password must be text, got {type(password).__name__}"
    )


def _der(data: bytes, origin: str, what: str, formats: str) -> bytes:
    """Binary DER as it is; base64 text decoded."""
    if data.startswith(b"\x30"):
        return data
    compact = b"".join(data.split())
    if not _BASE64_TEXT.match(compact):
        raise ConfigurationError(f"{what}: {origin} is neither {formats}")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"{what}: {origin} is base64 text that does not decode (truncated?)"
        ) from None


def _der_is_truncated(der: bytes) -> bool:
    """Whether the outer DER ``SEQUENCE`` announces more bytes than there are."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first > len(der)
    count = first & 0x7F
    if count == 0 or count > 4:  # indefinite or absurd lengths: leave them to the parser
        return False
    length = int.from_bytes(der[2 : 2 + count], "big")
    return 2 + count + length > len(der)


def _key_kind(key: object) -> str:
    kinds = (
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
    )
    for classes, name in kinds:
        if isinstance(key, classes):
            return name
    return "a non-RSA"


def _require_rsa_private(key: object, origin: str) -> rsa.RSAPrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    raise ConfigurationError(
        f"{_PRIVATE}: {origin} holds {_key_kind(key)} key; HSQ's RSA2 signatures need an RSA key"
    )


def _require_rsa_public(key: object, origin: str) -> rsa.RSAPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        return key
    raise ConfigurationError(
        f"{_PLATFORM}: {origin} holds {_key_kind(key)} key; HSQ's RSA2 signatures need an RSA key"
    )


def load_private_key(source: KeySource, password: str | bytes | None = None) -> rsa.RSAPrivateKey:
    """Load the merchant's RSA private key.

    Accepts PKCS#12 (``.pfx``/``.p12``, HSQ's legacy RC2-40 encryption included), PEM PKCS#1
    (``BEGIN RSA PRIVATE KEY``), PEM PKCS#8 (``BEGIN PRIVATE KEY`` or, with ``password``,
    ``BEGIN ENCRYPTED PRIVATE KEY``), or bare base64 DER (PKCS#8, PKCS#1 or PKCS#12), each given
    as a file path or as the text itself.
    """
    data, origin = _read_source(source, _PRIVATE)
    pw = _password_bytes(password)
    pem = _PEM_BLOCK.search(data)
    if pem:
        return _load_private_pem(data, pem.group(1).decode(), pw, origin)
    der = _der(data, origin, _PRIVATE, "PKCS#12, PEM nor base64 DER key data")
    return _load_private_der(der, pw, origin)


def _load_private_pem(data: bytes, label: str, pw: bytes | None, origin: str) -> rsa.RSAPrivateKey:
    if "PRIVATE KEY" not in label:
        raise ConfigurationError(
            f"{_PRIVATE}: {origin} holds a PEM {label.lower()}, not a private key "
            "(is this the platform certificate?)"
        )
    encrypted = "ENCRYPTED" in label or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and pw is None:
        raise ConfigurationError(f"{_PRIVATE}: {origin} is encrypted; give its password")
    if encrypted and _pem_envelope_is_sound(data):
        return _decrypt(serialization.load_pem_private_key, data, pw, origin)
    try:
        key = serialization.load_pem_private_key(data, password=pw if encrypted else None)
    except ValueError:
        raise ConfigurationError(
            f"{_PRIVATE}: {origin} is not a valid PEM private key (truncated or corrupted?)"
        ) from None
    except Exception:  # UnsupportedAlgorithm and the like; its text is not passed on
        raise ConfigurationError(
            f"{_PRIVATE}: {origin} holds a private key of an unsupported kind"
        ) from None
    return _require_rsa_private(key, origin)


def _pem_envelope_is_sound(data: bytes) -> bool:
    """Whether an encrypted PEM key is intact as far as can be told without its password.

    Asked for a key without the password, the library reads the PEM block and (PKCS#8) the
    ``EncryptedPrivateKeyInfo`` around the ciphertext, and only then finds that it needs one.
    """
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "password was not given": everything up to the ciphertext is readable
        return True
    except Exception:
        return False
    return False  # not encrypted after all: loaded as such by the caller


def _decrypt(
    load: Callable[..., object], data: bytes, pw: bytes | None, origin: str
) -> rsa.RSAPrivateKey:
    """Load an encrypted key whose envelope is sound: a failure now is the password's.

    With a wrong password, CBC decryption still ends in valid padding about once in 256
    tries; what it yields is then garbage that fails to parse as a key, not as a decryption.
    Either way the password is wrong (the ciphertext carries no checksum that could tell a
    corrupted one apart), so both are reported as that.
    """
    try:
        key = load(data, password=pw)
    except UnsupportedAlgorithm:  # the cipher, named before anything is decrypted
        raise ConfigurationError(
            f"{_PRIVATE}: {origin} is encrypted with an unsupported algorithm"
        ) from None
    except Exception:  # its text is not passed on
        raise ConfigurationError(f"{_PRIVATE}: wrong password for {origin}") from None
    return _require_rsa_private(key, origin)


def _load_private_der(der: bytes, pw: bytes | None, origin: str) -> rsa.RSAPrivateKey:
    if _der_is_truncated(der):
        raise ConfigurationError(f"{_PRIVATE}: {origin} is truncated")
    # PKCS#8 / PKCS#1 DER first: they are unambiguous and cheap.
    try:
        key = serialization.load_der_private_key(der, password=None)
    except TypeError:  # an encrypted PKCS#8 and no password was given
        if pw is None:
            raise ConfigurationError(
                f"{_PRIVATE}: {origin} is encrypted; give its password"
            ) from None
        return _load_encrypted_pkcs8_der(der, pw, origin)
    except Exception:  # noqa: S110 - not PKCS#8/PKCS#1; PKCS#12 is tried next
        pass
    else:
        return _require_rsa_private(key, origin)
    if _looks_like_pkcs12(der):
        return _load_pkcs12(der, pw, origin)
    if _looks_like_public(der):
        raise ConfigurationError(
            f"{_PRIVATE}: {origin} holds a public key or certificate, not a private key "
            "(is this the platform certificate?)"
        )
    raise ConfigurationError(
        f"{_PRIVATE}: {origin} is not a private key in any supported format "
        "(PKCS#12, PEM PKCS#1/PKCS#8, base64 DER); truncated or corrupted?"
    )


def _load_encrypted_pkcs8_der(der: bytes, pw: bytes, origin: str) -> rsa.RSAPrivateKey:
    # Its EncryptedPrivateKeyInfo was read already (the library asked for the password).
    return _decrypt(serialization.load_der_private_key, der, pw, origin)


def _load_pkcs12(der: bytes, pw: bytes | None, origin: str) -> rsa.RSAPrivateKey:
    try:
        key, _cert, _extra = pkcs12.load_key_and_certificates(der, pw)
    except ValueError as exc:
        reason = str(exc).lower()
        # "Could not deserialize PKCS12 data": the container itself, before any decryption.
        if "deserialize" in reason or (pw is None and "password" not in reason):
            raise ConfigurationError(
                f"{_PRIVATE}: the PKCS#12 data in {origin} is corrupted"
            ) from None
        if pw is None:
            raise ConfigurationError(
                f"{_PRIVATE}: the PKCS#12 data in {origin} is password-protected; give its password"
            ) from None
        # With a password, whatever failed past the container (its MAC, a decryption, what a
        # decryption produced) is the password's: see _decrypt.
        raise ConfigurationError(
            f"{_PRIVATE}: wrong password for the PKCS#12 data in {origin}"
        ) from None
    except Exception:
        raise ConfigurationError(
            f"{_PRIVATE}: the PKCS#12 data in {origin} could not be loaded"
        ) from None
    if key is None:
        raise ConfigurationError(f"{_PRIVATE}: the PKCS#12 data in {origin} holds no private key")
    return _require_rsa_private(key, origin)


def _looks_like_pkcs12(der: bytes) -> bool:
    # PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, ... }
    return len(der) > 8 and der[0] == 0x30 and b"\x02\x01\x03" in der[:8]


def _looks_like_public(der: bytes) -> bool:
    for loader in (x509.load_der_x509_certificate, serialization.load_der_public_key):
        try:
            loader(der)
        except Exception:  # noqa: S112 - try the next format
            continue
        return True
    return False


def load_platform_key(source: KeySource) -> rsa.RSAPublicKey:
    """Load HSQ's platform public key, with which responses are verified.

    Accepts an X.509 certificate (PEM or DER, as HSQ's ``MANDAO_<merchantNo>_pub.cer``) or a
    bare public key (PEM ``PUBLIC KEY`` / ``RSA PUBLIC KEY``, or base64 DER), as a file path
    or as the text itself.
    """
    data, origin = _read_source(source, _PLATFORM)
    pem = _PEM_BLOCK.search(data)
    if pem:
        return _load_platform_pem(data, pem.group(1).decode(), origin)
    der = _der(data, origin, _PLATFORM, "an X.509 certificate, a PEM public key nor base64 DER")
    return _load_platform_der(der, origin)


def _load_platform_pem(data: bytes, label: str, origin: str) -> rsa.RSAPublicKey:
    if "PRIVATE KEY" in label:
        raise ConfigurationError(f"{_PLATFORM}: {origin} holds a private key; {_PLATFORM_HINT}")
    key: object
    try:
        if label == "CERTIFICATE":
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except Exception:
        raise ConfigurationError(
            f"{_PLATFORM}: {origin} is not a valid PEM certificate or public key "
            "(truncated or corrupted?)"
        ) from None
    return _require_rsa_public(key, origin)


def _load_platform_der(der: bytes, origin: str) -> rsa.RSAPublicKey:
    if _der_is_truncated(der):
        raise ConfigurationError(f"{_PLATFORM}: {origin} is truncated")
    loaders: tuple[Callable[[bytes], object], ...] = (
        _der_certificate_key,
        serialization.load_der_public_key,
    )
    for load in loaders:
        try:
            key = load(der)
        except Exception:  # noqa: S112 - try the next format
            continue
        return _require_rsa_public(key, origin)
    if _holds_private_key(der):
        raise ConfigurationError(f"{_PLATFORM}: {origin} holds a private key; {_PLATFORM_HINT}")
    raise ConfigurationError(
        f"{_PLATFORM}: {origin} is not an X.509 certificate or public key (corrupted?)"
    )


def _der_certificate_key(der: bytes) -> object:
    return x509.load_der_x509_certificate(der).public_key()


def _holds_private_key(der: bytes) -> bool:
    if _looks_like_pkcs12(der):
        return True
    try:
        serialization.load_der_private_key(der, password=None)
    except TypeError:  # encrypted PKCS#8
        return True
    except Exception:
        return False
    return True
