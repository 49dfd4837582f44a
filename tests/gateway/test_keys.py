"""Key loading in every format merchants hold, and errors that name the problem safely."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from hsq_refunds.gateway import ConfigurationError, load_platform_key, load_private_key
from hsq_refunds.sandbox.credentials import self_signed_certificate

PASSWORD = "s3cret-Pässword"
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL
NO_ENCRYPTION = serialization.NoEncryption()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem_body(pem: bytes) -> str:
    """The base64 lines of a PEM block joined: what must never show in a message."""
    lines = pem.decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory, merchant_private, big_private) -> Path:
    """Every format, written once: the 1024-bit merchant key and one 2048-bit key."""
    directory = tmp_path_factory.mktemp("keys")
    cert = self_signed_certificate(merchant_private, "888000000001")
    key = merchant_private
    encrypted = serialization.BestAvailableEncryption(PASSWORD.encode())
    files = {
        "pkcs1.pem": key.private_bytes(PEM, PKCS1, NO_ENCRYPTION),
        "pkcs1-encrypted.pem": key.private_bytes(PEM, PKCS1, encrypted),
        "pkcs8.pem": key.private_bytes(PEM, PKCS8, NO_ENCRYPTION),
        "pkcs8-encrypted.pem": key.private_bytes(PEM, PKCS8, encrypted),
        "pkcs8.der": key.private_bytes(DER, PKCS8, NO_ENCRYPTION),
        "pkcs8-encrypted.der": key.private_bytes(DER, PKCS8, encrypted),
        "pkcs8.b64": _b64(key.private_bytes(DER, PKCS8, NO_ENCRYPTION)).encode(),
        "pkcs1.b64": _b64(key.private_bytes(DER, PKCS1, NO_ENCRYPTION)).encode(),
        "modern.pfx": pkcs12.serialize_key_and_certificates(
            b"merchant", key, cert, None, encrypted
        ),
        "cert.pem": cert.public_bytes(PEM),
        "cert.der": cert.public_bytes(DER),
        "big-pkcs8.pem": big_private.private_bytes(PEM, PKCS8, NO_ENCRYPTION),
        "ec.pem": ec.generate_private_key(ec.SECP256R1()).private_bytes(PEM, PKCS8, NO_ENCRYPTION),
    }
    files["modern.pfx.b64"] = _b64(files["modern.pfx"]).encode()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


@pytest.fixture(scope="session")
def legacy_pfx(key_dir: Path) -> Path:
    """A PKCS#12 file encrypted like HSQ's own (RC2-40), made with the openssl command line."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command line is not installed")
    target = key_dir / "legacy.pfx"
    command = [
        openssl, "pkcs12", "-export", "-legacy",
        "-keypbe", "PBE-SHA1-RC2-40", "-certpbe", "PBE-SHA1-RC2-40", "-macalg", "sha1",
        "-inkey", str(key_dir / "pkcs8.pem"), "-in", str(key_dir / "cert.pem"),
        "-passout", f"pass:{PASSWORD}", "-out", str(target),
    ]  # fmt: skip
    made = subprocess.run(command, capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"openssl cannot write legacy RC2-40 PKCS#12: {made.stderr.decode()[:200]}")
    info = subprocess.run(
        [openssl, "pkcs12", "-legacy", "-info", "-noout", "-in", str(target),
         "-passin", f"pass:{PASSWORD}"],
        capture_output=True, check=False, text=True,
    )  # fmt: skip
    assert "pbeWithSHA1And40BitRC2-CBC" in info.stderr + info.stdout
    return target


def _same_key(loaded: rsa.RSAPrivateKey, expected: rsa.RSAPrivateKey) -> bool:
    return loaded.private_numbers() == expected.private_numbers()


# --------------------------------------------------------------------------- private keys


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("pkcs1.pem", None),
        ("pkcs1-encrypted.pem", PASSWORD),
        ("pkcs8.pem", None),
        ("pkcs8-encrypted.pem", PASSWORD),
        ("pkcs8.der", None),
        ("pkcs8-encrypted.der", PASSWORD),
        ("pkcs8.b64", None),
        ("pkcs1.b64", None),
        ("modern.pfx", PASSWORD),
        ("modern.pfx.b64", PASSWORD),
    ],
)
@pytest.mark.parametrize("given_as", ["path", "str path", "text"])
def test_private_key_formats(key_dir, merchant_private, name, password, given_as):
    path = key_dir / name
    if given_as == "path":
        source = path
    elif given_as == "str path":
        source = str(path)
    elif name.endswith((".der", ".pfx")):
        source = path.read_bytes()
    else:
        source = path.read_text()
    assert _same_key(load_private_key(source, password), merchant_private)


def test_password_as_bytes(key_dir, merchant_private):
    loaded = load_private_key(key_dir / "modern.pfx", PASSWORD.encode())
    assert _same_key(loaded, merchant_private)


def test_one_line_base64_text_with_surrounding_whitespace(key_dir, merchant_private):
    text = "  " + (key_dir / "pkcs8.b64").read_text() + "\n"
    assert _same_key(load_private_key(text), merchant_private)


def test_2048_bit_key(key_dir, big_private):
    assert _same_key(load_private_key(key_dir / "big-pkcs8.pem"), big_private)


def test_legacy_rc2_40_pkcs12(legacy_pfx, merchant_private):
    assert _same_key(load_private_key(legacy_pfx, PASSWORD), merchant_private)
    assert _same_key(load_private_key(_b64(legacy_pfx.read_bytes()), PASSWORD), merchant_private)


def test_key_object_passes_through_the_client_unchanged(merchant_private):
    from hsq_refunds.gateway.client import _private_key

    assert _private_key(merchant_private, None) is merchant_private


# --------------------------------------------------------------------------- platform keys


@pytest.fixture(scope="session")
def platform_sources(key_dir: Path, merchant_private) -> dict[str, object]:
    public = merchant_private.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return {
        "cert pem path": key_dir / "cert.pem",
        "cert pem text": (key_dir / "cert.pem").read_text(),
        "cert der path": key_dir / "cert.der",
        "cert der str path": str(key_dir / "cert.der"),
        "cert der bytes": (key_dir / "cert.der").read_bytes(),
        "cert base64": _b64((key_dir / "cert.der").read_bytes()),
        "public pem": public.public_bytes(PEM, spki).decode(),
        "rsa public pem": public.public_bytes(PEM, serialization.PublicFormat.PKCS1).decode(),
        "public base64": _b64(public.public_bytes(DER, spki)),
        "rsa public base64": _b64(public.public_bytes(DER, serialization.PublicFormat.PKCS1)),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "cert pem path",
        "cert pem text",
        "cert der path",
        "cert der str path",
        "cert der bytes",
        "cert base64",
        "public pem",
        "rsa public pem",
        "public base64",
        "rsa public base64",
    ],
)
def test_platform_key_formats(platform_sources, merchant_private, kind):
    loaded = load_platform_key(platform_sources[kind])
    assert loaded.public_numbers() == merchant_private.public_key().public_numbers()


# --------------------------------------------------------------------------- errors


def _assert_safe(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message
        # Not even a recognisable piece of it.
        assert secret[:24] not in message


def _load_error(loader, *args) -> str:
    with pytest.raises(ConfigurationError) as caught:
        loader(*args)
    return str(caught.value)


@pytest.mark.parametrize("name", ["modern.pfx", "pkcs8-encrypted.pem", "pkcs1-encrypted.pem"])
def test_wrong_password(key_dir, name):
    wrong = "not-the-Password-123"
    message = _load_error(load_private_key, key_dir / name, wrong)
    assert "wrong password" in message
    assert name in message
    assert "file file" not in message
    _assert_safe(message, wrong, PASSWORD)


def test_wrong_password_legacy(legacy_pfx):
    message = _load_error(load_private_key, legacy_pfx, "wrong-Password-456")
    assert "wrong password for the PKCS#12 data in file" in message
    _assert_safe(message, "wrong-Password-456", PASSWORD)


def test_wrong_password_encrypted_der(key_dir):
    message = _load_error(load_private_key, key_dir / "pkcs8-encrypted.der", "nope-nope-nope")
    assert "wrong password" in message
    _assert_safe(message, "nope-nope-nope")


def _lucky(load, data: bytes, password: bytes) -> bool:
    """Whether the library itself fails on something other than the password: CBC padding that
    happened to be valid under a wrong password, and garbage after it."""
    try:
        load(data, password)
    except ValueError as exc:
        return "password" not in str(exc).lower()
    return False


@pytest.mark.parametrize(
    ("name", "raw_load"),
    [
        ("pkcs8-encrypted.pem", serialization.load_pem_private_key),
        ("pkcs1-encrypted.pem", serialization.load_pem_private_key),
        ("pkcs8-encrypted.der", serialization.load_der_private_key),
        ("modern.pfx", None),
        ("legacy.pfx", None),
    ],
)
def test_every_wrong_password_is_a_wrong_password(request, key_dir, name, raw_load):
    """At least 2,000 distinct wrong passwords, and for the CBC-encrypted PEM and DER keys as
    many more as it takes for one to pass the padding check (about 1 in 256 do): each is
    reported as a wrong password, never as a corrupted key. (A PKCS#12 file's MAC fails first.)
    """
    path = request.getfixturevalue("legacy_pfx") if name == "legacy.pfx" else key_dir / name
    data = path.read_bytes()
    lucky = 0
    attempt = 0
    while attempt < 2000 or (raw_load is not None and lucky == 0 and attempt < 50_000):
        wrong = f"wrong-{attempt}"
        if raw_load is not None:
            lucky += _lucky(raw_load, data, wrong.encode())
        message = _load_error(load_private_key, data, wrong)
        assert "wrong password" in message, (wrong, message)
        assert wrong not in message
        attempt += 1
    assert raw_load is None or lucky > 0, f"no wrong password passed the padding in {attempt}"


@pytest.mark.parametrize("name", ["pkcs8-encrypted.pem", "pkcs8-encrypted.der"])
def test_a_broken_encrypted_envelope_is_not_a_password_problem(key_dir, name):
    """A wrong password is only blamed once the envelope around the ciphertext reads well."""
    data = (key_dir / name).read_bytes()
    if name.endswith(".pem"):
        lines = data.splitlines(keepends=True)
        broken = b"".join([*lines[:1], b"AAAA" * 16 + b"\n", *lines[2:]])
    else:
        broken = data[:4] + b"\x05" + data[5:]  # the envelope's first tag is no SEQUENCE
    message = _load_error(load_private_key, broken, PASSWORD)
    assert "password" not in message
    assert "corrupted" in message


@pytest.mark.parametrize(
    "name", ["modern.pfx", "pkcs8-encrypted.pem", "pkcs1-encrypted.pem", "pkcs8-encrypted.der"]
)
@pytest.mark.parametrize("password", [None, ""])
def test_missing_password(key_dir, name, password):
    message = _load_error(load_private_key, key_dir / name, password)
    assert "password" in message
    assert "give its password" in message


@pytest.mark.parametrize("name", ["modern.pfx", "pkcs8.der", "pkcs8.pem"])
def test_truncated_private_key(key_dir, tmp_path, name):
    data = (key_dir / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    message = _load_error(load_private_key, cut, PASSWORD)
    assert "truncated" in message
    _assert_safe(message, _pem_body((key_dir / "pkcs8.pem").read_bytes()), PASSWORD)


@pytest.mark.parametrize("extra", [0, 1], ids=["whole base64 quads", "broken quad"])
@pytest.mark.parametrize("loader", [load_private_key, load_platform_key])
def test_truncated_base64_text(key_dir, platform_sources, loader, extra):
    if loader is load_private_key:
        text = (key_dir / "pkcs8.b64").read_text()
    else:
        text = platform_sources["cert base64"]
    half = text[: len(text) // 8 * 4 + extra]
    message = _load_error(loader, half)
    assert "truncated" in message
    _assert_safe(message, half)


def test_short_base64_fragment_is_not_echoed(key_dir):
    fragment = (key_dir / "pkcs8.b64").read_text()[40:120]
    message = _load_error(load_private_key, fragment)
    assert "does not exist" in message
    _assert_safe(message, fragment)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 this is not a key \xff\xfe",
        b"0\x82\x01\x00" + bytes(range(256)),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "-----BEGIN WHATEVER-----\nAAAA\n-----END WHATEVER-----\n",
    ],
)
def test_garbage_private(garbage):
    message = _load_error(load_private_key, garbage)
    assert "merchant private key" in message


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pem"
    path.write_bytes(b"hello, this is a text file and no key at all")
    message = _load_error(load_private_key, path)
    assert "garbage.pem" in message
    assert "neither PKCS#12, PEM nor base64" in message


@pytest.mark.parametrize("name", ["cert.pem", "cert.der"])
def test_public_where_private_belongs(key_dir, name):
    message = _load_error(load_private_key, key_dir / name)
    assert "not a private key" in message
    assert "platform certificate" in message


def test_public_key_text_where_private_belongs(platform_sources):
    message = _load_error(load_private_key, platform_sources["public base64"])
    assert "not a private key" in message
    _assert_safe(message, platform_sources["public base64"])


@pytest.mark.parametrize("name", ["pkcs8.pem", "pkcs1.pem", "pkcs8.der", "pkcs8.b64", "modern.pfx"])
@pytest.mark.parametrize("given_as", ["path", "text"])
def test_private_where_public_belongs(key_dir, name, given_as):
    path = key_dir / name
    if given_as == "path":
        source: object = path
    elif name.endswith((".der", ".pfx")):
        source = _b64(path.read_bytes())
    else:
        source = path.read_text()
    message = _load_error(load_platform_key, source)
    assert "holds a private key" in message
    assert "MANDAO_<merchantNo>_pub.cer" in message
    _assert_safe(message, _pem_body((key_dir / "pkcs8.pem").read_bytes()))
    _assert_safe(message, (key_dir / "pkcs8.b64").read_text())


def test_ec_private_key(key_dir):
    message = _load_error(load_private_key, key_dir / "ec.pem")
    assert "an EC key" in message
    assert "RSA" in message
    _assert_safe(message, _pem_body((key_dir / "ec.pem").read_bytes()))


def test_ec_public_key_as_platform_key(key_dir):
    ec_key = serialization.load_pem_private_key((key_dir / "ec.pem").read_bytes(), None)
    pem = ec_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    message = _load_error(load_platform_key, pem.decode())
    assert "an EC key" in message


@pytest.mark.parametrize("loader", [load_private_key, load_platform_key])
def test_missing_file(tmp_path, loader):
    missing = tmp_path / "nowhere" / "key.pem"
    for source in (missing, str(missing)):
        message = _load_error(loader, source)
        assert "does not exist" in message
        assert str(missing) in message


@pytest.mark.parametrize("loader", [load_private_key, load_platform_key])
@pytest.mark.parametrize("source", ["", "   ", b"", None, 42])
def test_empty_or_wrong_type(loader, source):
    message = _load_error(loader, source)
    assert "empty" in message or "expected a file path or key text" in message


def test_truncated_certificate(key_dir, tmp_path):
    for name in ("cert.der", "cert.pem"):
        data = (key_dir / name).read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        message = _load_error(load_platform_key, cut)
        assert "truncated" in message


def test_garbage_platform_key():
    message = _load_error(load_platform_key, "not a certificate.cer")
    assert "does not exist" in message
    message = _load_error(load_platform_key, b"\x30\x03\x02\x01\x05")
    assert "not an X.509 certificate or public key" in message


def test_directory_is_not_a_key(tmp_path):
    message = _load_error(load_private_key, tmp_path)
    assert "not a file" in message
