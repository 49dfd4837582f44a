"""Sandbox credentials are written as HSQ issues them and load with the gateway's own loaders."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from hsq_refunds.gateway import keys, signing
from hsq_refunds.sandbox import Credentials, CredentialsError, create_credentials


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    credentials = create_credentials(
        directory, merchant_no="888000000042", key_size=2048, platform_key_size=1024
    )
    return directory, credentials


def test_writes_the_files_hsq_issues_owner_only(made):
    directory, credentials = made
    names = {
        "888000000042_pri.pfx",
        "888000000042_pub.cer",
        "MANDAO_888000000042_pub.cer",
        "platform_private.pem",
        "credentials.json",
    }
    assert {p.name for p in directory.iterdir()} == names
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert credentials.private_key == str(directory / "888000000042_pri.pfx")
    assert credentials.platform_cert == str(directory / "MANDAO_888000000042_pub.cer")
    description = json.loads((directory / "credentials.json").read_text())
    assert description["private_key"] == "888000000042_pri.pfx"  # relative: the folder can move
    assert description["platform_private_key"] == "platform_private.pem"


def test_keys_load_with_the_gateway_loaders_and_pair_up(made):
    _directory, credentials = made
    merchant = keys.load_private_key(credentials.private_key, credentials.private_key_password)
    merchant_public = keys.load_platform_key(credentials.merchant_cert)  # a certificate is a cert
    platform_public = keys.load_platform_key(credentials.platform_cert)
    platform_private = serialization.load_pem_private_key(
        open(credentials.platform_private_key, "rb").read(), password=None
    )
    assert merchant.key_size == 2048
    assert platform_public.key_size == 1024
    message = "method=X&key=Y"
    assert signing.verify(merchant_public, message, signing.sign(merchant, message))
    assert signing.verify(platform_public, message, signing.sign(platform_private, message))
    assert not signing.verify(platform_public, message, signing.sign(merchant, message))
    assert len(credentials.sign_key) == 32
    int(credentials.sign_key, 16)


def test_pfx_needs_its_password_and_holds_key_and_certificate(made):
    _directory, credentials = made
    data = open(credentials.private_key, "rb").read()
    key, cert, _extra = pkcs12.load_key_and_certificates(
        data, credentials.private_key_password.encode()
    )
    assert key is not None and cert is not None
    assert "888000000042" in cert.subject.rfc4514_string()
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data, b"wrong password")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command line here")
def test_pfx_opens_with_openssl_without_legacy_provider(made):
    _directory, credentials = made
    completed = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            credentials.private_key,
            "-passin",
            "env:PFX_PASSWORD",
            "-nodes",
        ],
        capture_output=True,
        env={"PFX_PASSWORD": credentials.private_key_password, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert b"PRIVATE KEY" in completed.stdout


def test_load_round_trips(made):
    directory, credentials = made
    assert Credentials.load(directory) == credentials
    assert Credentials.load(str(directory)).directory == str(directory.resolve())


def test_repr_hides_sign_key_and_password(made):
    _directory, credentials = made
    for text in (repr(credentials), str(credentials), f"{credentials}"):
        assert credentials.sign_key not in text
        assert credentials.private_key_password not in text
        assert "888000000042" in text


def test_settings_dict_shape(made):
    _directory, credentials = made
    settings = credentials.settings_dict("http://127.0.0.1:1/api/acquiring")
    assert settings == {
        "BASE_URL": "http://127.0.0.1:1/api/acquiring",
        "MERCHANTS": {
            "888000000042": {
                "SIGN_KEY": credentials.sign_key,
                "PRIVATE_KEY": credentials.private_key,
                "PRIVATE_KEY_PASSWORD": credentials.private_key_password,
                "PLATFORM_CERT": credentials.platform_cert,
            }
        },
    }


def test_refuses_to_overwrite_unless_told(tmp_path):
    first = create_credentials(tmp_path, key_size=1024, platform_key_size=1024)
    with pytest.raises(FileExistsError, match="overwrite"):
        create_credentials(tmp_path, key_size=1024, platform_key_size=1024)
    assert Credentials.load(tmp_path) == first  # untouched
    second = create_credentials(tmp_path, key_size=1024, platform_key_size=1024, overwrite=True)
    assert second.sign_key != first.sign_key
    assert Credentials.load(tmp_path) == second


def test_refuses_when_only_a_key_file_exists(tmp_path):
    (tmp_path / "888000000001_pri.pfx").write_bytes(b"someone's real key")
    with pytest.raises(FileExistsError, match=r"888000000001_pri\.pfx"):
        create_credentials(tmp_path, key_size=1024, platform_key_size=1024)
    assert (tmp_path / "888000000001_pri.pfx").read_bytes() == b"someone's real key"


def test_given_sign_key_and_password_are_used(tmp_path):
    credentials = create_credentials(
        tmp_path,
        key_size=1024,
        platform_key_size=1024,
        sign_key="0123456789abcdef0123456789abcdef",
        password="123456",
    )
    assert credentials.sign_key == "0123456789abcdef0123456789abcdef"
    keys.load_private_key(credentials.private_key, "123456")


def test_load_explains_a_missing_directory(tmp_path):
    with pytest.raises(CredentialsError, match="init"):
        Credentials.load(tmp_path)


def test_load_rejects_incomplete_description(tmp_path):
    (tmp_path / "credentials.json").write_text('{"merchant_no": "1"}')
    with pytest.raises(CredentialsError, match="sign_key"):
        Credentials.load(tmp_path)


def test_rejects_merchant_numbers_unfit_for_file_names(tmp_path):
    with pytest.raises(CredentialsError):
        create_credentials(tmp_path, merchant_no="../evil", key_size=1024)
