"""The HSQ_REFUNDS setting (hsq_refunds.conf) and its system checks (hsq_refunds.checks)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.checks import run_checks
from django.test import override_settings

from hsq_refunds import conf
from hsq_refunds.gateway import ConfigurationError, HsqClient

DEMO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "hsq" / "demo"


@pytest.fixture
def merchant(hsq_sandbox_credentials) -> dict:
    """A merchant entry with real key files."""
    creds = hsq_sandbox_credentials
    return {
        "SIGN_KEY": creds.sign_key,
        "PRIVATE_KEY": creds.private_key,
        "PRIVATE_KEY_PASSWORD": creds.private_key_password,
        "PLATFORM_CERT": creds.platform_cert,
    }


def messages(setting: dict, *, debug: bool = False) -> list:
    with override_settings(HSQ_REFUNDS=setting, DEBUG=debug):
        return run_checks(tags=["hsq_refunds"])


def ids(found: list) -> list[str]:
    return sorted(message.id for message in found)


# --------------------------------------------------------------------------- settings


def test_every_key_has_its_documented_default(settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}}
    current = conf.get_settings()
    assert current.ENVIRONMENT == "production" and current.BASE_URL is None
    assert (current.CONNECT_TIMEOUT, current.READ_TIMEOUT) == (5.0, 15.0)
    assert (current.RETRIES, current.BACKOFF_FACTOR, current.RATE_LIMIT) == (2, 0.5, None)
    assert (current.CONCURRENCY, current.CHUNK_SIZE, current.CLAIM_LEASE) == (8, 100, 300.0)
    assert current.FIRST_QUERY_DELAY == 60.0
    assert current.NOT_FOUND_GRACE == 1800.0 and current.MAX_AGE == 14 * 86400.0
    assert current.QUERY_INTERVALS[0] == (600.0, 60.0)
    assert current.ERROR_BACKOFF[0] == 60.0
    assert current.QUERY_LOG_RETENTION_DAYS == 90
    assert (current.ADMIN_SYNC_LIMIT, current.TASK_BATCH_SIZE, current.SCHEDULE_MINUTES) == (
        20,
        100,
        1,
    )
    for key in conf.DEFAULTS:
        assert hasattr(current, key), key
    with pytest.raises(dataclasses.FrozenInstanceError):
        current.CONCURRENCY = 1  # type: ignore[misc]


def test_the_setting_is_read_lazily_and_again_after_it_changes(settings):
    settings.HSQ_REFUNDS = {"CONCURRENCY": 3}
    assert conf.get_settings().CONCURRENCY == 3
    with override_settings(HSQ_REFUNDS={"CONCURRENCY": 5, "CLAIM_LEASE": timedelta(minutes=1)}):
        assert conf.get_settings().CONCURRENCY == 5
        assert conf.get_settings().CLAIM_LEASE == 60.0
    assert conf.get_settings().CONCURRENCY == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CONCURRENCY", 0),
        ("CONCURRENCY", "8"),
        ("CHUNK_SIZE", True),
        ("CLAIM_LEASE", -1),
        ("READ_TIMEOUT", float("nan")),
        ("RATE_LIMIT", 0),
        ("QUERY_INTERVALS", [(600, 60), (300, 10)]),
        ("QUERY_INTERVALS", []),
        ("ERROR_BACKOFF", [60, 0]),
        ("QUERY_LOG_RETENTION_DAYS", 0),
        ("ENVIRONMENT", "staging"),
        ("BASE_URL", "ftp://example.invalid/api"),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_key(settings, key, value):
    settings.HSQ_REFUNDS = {key: value}
    with pytest.raises(ConfigurationError) as caught:
        conf.get_settings()
    assert f'HSQ_REFUNDS["{key}"]' in str(caught.value)
    found = messages({key: value})
    assert any(m.id.startswith("hsq_refunds.E") and f'["{key}"]' in m.msg for m in found), found


def test_clients_are_built_once_per_merchant_and_rebuilt_after_a_change(settings, merchant):
    settings.HSQ_REFUNDS = {"ENVIRONMENT": "test", "MERCHANTS": {"888000000001": merchant}}
    client = conf.get_client("888000000001")
    assert isinstance(client, HsqClient)
    assert conf.get_client() is client
    assert client.base_url == "https://test-api.huishouqian.com/api/acquiring"
    settings.HSQ_REFUNDS = {"ENVIRONMENT": "pre", "MERCHANTS": {"888000000001": merchant}}
    rebuilt = conf.get_client()
    assert rebuilt is not client
    assert rebuilt.base_url == "https://api-pre.huishouqian.com/api/acquiring"


def test_one_merchant_is_the_default_several_are_not(settings, merchant):
    settings.HSQ_REFUNDS = {"MERCHANTS": {"888000000001": merchant}}
    assert conf.merchant_numbers() == ["888000000001"]
    assert conf.default_merchant_no() == "888000000001"
    settings.HSQ_REFUNDS = {"MERCHANTS": {"888000000001": merchant, "888000000002": merchant}}
    assert conf.merchant_numbers() == ["888000000001", "888000000002"]
    assert conf.default_merchant_no() is None
    with pytest.raises(ConfigurationError, match="several merchants"):
        conf.get_client()


def test_an_unknown_merchant_is_named(settings, merchant):
    settings.HSQ_REFUNDS = {"MERCHANTS": {"888000000001": merchant}}
    with pytest.raises(ConfigurationError, match="'999'"):
        conf.get_client("999")


def test_per_merchant_environment_and_url_override_the_global_ones(settings, merchant):
    settings.HSQ_REFUNDS = {
        "ENVIRONMENT": "test",
        "MERCHANTS": {
            "1": {**merchant, "ENVIRONMENT": "production"},
            "2": {**merchant, "BASE_URL": "http://127.0.0.1:1/api/acquiring"},
            "3": merchant,
        },
    }
    assert conf.get_client("1").base_url == "https://api.huishouqian.com/api/acquiring"
    assert conf.get_client("2").base_url == "http://127.0.0.1:1/api/acquiring"
    assert conf.get_client("3").base_url == "https://test-api.huishouqian.com/api/acquiring"


def test_settings_take_timeouts_and_rate_limit_to_the_client(settings, merchant):
    settings.HSQ_REFUNDS = {
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": timedelta(seconds=7),
        "RATE_LIMIT": 4,
        "MERCHANTS": {"888000000001": merchant},
    }
    client = conf.get_client()
    assert client.timeout == (2.0, 7.0)
    assert client.rate_limit == 4.0


def test_a_key_that_cannot_be_loaded_names_the_merchant(settings, merchant):
    settings.HSQ_REFUNDS = {
        "MERCHANTS": {"888000000001": {**merchant, "PRIVATE_KEY_PASSWORD": "wrong"}}
    }
    with pytest.raises(ConfigurationError) as caught:
        conf.get_client()
    assert 'HSQ_REFUNDS["MERCHANTS"]["888000000001"]' in str(caught.value)
    assert "password" in str(caught.value)


def test_merchant_settings_repr_shows_no_secret(settings, merchant):
    settings.HSQ_REFUNDS = {"MERCHANTS": {"888000000001": merchant}}
    text = repr(conf.get_settings())
    assert merchant["SIGN_KEY"] not in text
    assert merchant["PRIVATE_KEY_PASSWORD"] not in text


# --------------------------------------------------------------------------- checks


def test_a_correct_setting_passes_the_checks(merchant):
    assert messages({"ENVIRONMENT": "test", "MERCHANTS": {"888000000001": merchant}}) == []


def test_no_merchants_is_a_warning():
    assert ids(messages({})) == ["hsq_refunds.W002"]
    assert ids(messages({"MERCHANTS": {}})) == ["hsq_refunds.W002"]


def test_not_a_dict_is_an_error():
    assert "hsq_refunds.E001" in ids(messages(["MERCHANTS"]))  # type: ignore[arg-type]


def test_unknown_setting_names_are_warnings(merchant):
    found = messages(
        {"CONCURENCY": 4, "MERCHANTS": {"888000000001": {**merchant, "PLATFORM_KEY": "x"}}}
    )
    assert ids(found) == ["hsq_refunds.W001", "hsq_refunds.W001"]
    texts = " ".join(m.msg for m in found)
    assert 'HSQ_REFUNDS["CONCURENCY"]' in texts
    assert 'HSQ_REFUNDS["MERCHANTS"]["888000000001"]["PLATFORM_KEY"]' in texts


@pytest.mark.parametrize("key", ["SIGN_KEY", "PRIVATE_KEY", "PLATFORM_CERT"])
def test_a_missing_key_is_named(merchant, key):
    entry = {k: v for k, v in merchant.items() if k != key}
    found = messages({"MERCHANTS": {"888000000001": entry}})
    assert ids(found) == ["hsq_refunds.E006"]
    assert found[0].msg.startswith(f'HSQ_REFUNDS["MERCHANTS"]["888000000001"]["{key}"]: ')


def test_a_wrong_password_names_the_password_setting(merchant):
    found = messages(
        {"MERCHANTS": {"888000000001": {**merchant, "PRIVATE_KEY_PASSWORD": "not-it"}}}
    )
    assert ids(found) == ["hsq_refunds.E008"]
    assert found[0].msg.startswith(
        'HSQ_REFUNDS["MERCHANTS"]["888000000001"]["PRIVATE_KEY_PASSWORD"]: wrong password'
    )


def test_the_demo_merchant_files_pass_with_their_password_and_fail_without():
    if not (DEMO_DIR / "814000473149_pri.pfx").is_file():
        pytest.skip(f"HSQ's public demo files are not at {DEMO_DIR}")
    entry = {
        "SIGN_KEY": "86a8eec5ae958e9948b7450439cc57e2",
        "PRIVATE_KEY": str(DEMO_DIR / "814000473149_pri.pfx"),
        "PRIVATE_KEY_PASSWORD": "123456",
        "PLATFORM_CERT": str(DEMO_DIR / "MANDAO_814000473149_pub.cer"),
    }
    assert messages({"ENVIRONMENT": "test", "MERCHANTS": {"814000473149": entry}}) == []
    wrong = messages(
        {
            "ENVIRONMENT": "test",
            "MERCHANTS": {"814000473149": {**entry, "PRIVATE_KEY_PASSWORD": "1"}},
        }
    )
    assert ids(wrong) == ["hsq_refunds.E008"]
    assert '["814000473149"]["PRIVATE_KEY_PASSWORD"]: wrong password' in wrong[0].msg


def test_an_unreadable_key_file_is_named(merchant, tmp_path):
    missing = str(tmp_path / "nope_pri.pfx")
    found = messages({"MERCHANTS": {"888000000001": {**merchant, "PRIVATE_KEY": missing}}})
    assert ids(found) == ["hsq_refunds.E009"]
    assert "does not exist" in found[0].msg
    assert "nope_pri.pfx" in found[0].msg


def test_swapped_keys_are_reported_on_each_setting(merchant):
    swapped = {
        **merchant,
        "PRIVATE_KEY": merchant["PLATFORM_CERT"],
        "PLATFORM_CERT": merchant["PRIVATE_KEY"],
    }
    found = messages({"MERCHANTS": {"888000000001": swapped}})
    assert ids(found) == ["hsq_refunds.E009", "hsq_refunds.E012"]


def test_an_unknown_environment_is_named_per_merchant(merchant):
    found = messages({"MERCHANTS": {"888000000001": {**merchant, "ENVIRONMENT": "prod"}}})
    assert ids(found) == ["hsq_refunds.E003"]
    assert '["888000000001"]["ENVIRONMENT"]: unknown environment' in found[0].msg


def test_a_bad_sign_key_is_reported(merchant):
    assert ids(messages({"MERCHANTS": {"888000000001": {**merchant, "SIGN_KEY": "abc"}}})) == [
        "hsq_refunds.W004"
    ]
    assert ids(messages({"MERCHANTS": {"888000000001": {**merchant, "SIGN_KEY": 123}}})) == [
        "hsq_refunds.E007"
    ]


def test_merchant_numbers_must_be_strings(merchant):
    assert ids(messages({"MERCHANTS": {888000000001: merchant}})) == ["hsq_refunds.E005"]


def test_a_sandbox_url_in_production_is_a_warning(merchant):
    setting = {"BASE_URL": "http://127.0.0.1:8765/api/acquiring", "MERCHANTS": {"1": merchant}}
    assert ids(messages(setting)) == ["hsq_refunds.W003"]
    assert messages(setting, debug=True) == []
    https_local = {**setting, "BASE_URL": "https://localhost:8443/api/acquiring"}
    assert ids(messages(https_local)) == ["hsq_refunds.W003"]


def test_checks_never_show_key_material(hsq_sandbox_credentials, merchant):
    creds = hsq_sandbox_credentials
    with open(creds.private_key, "rb") as handle:
        key, _cert, _ = pkcs12.load_key_and_certificates(
            handle.read(), creds.private_key_password.encode()
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"),
    ).decode()
    body_line = pem.splitlines()[3]
    found = messages(
        {
            "MERCHANTS": {
                "888000000001": {
                    **merchant,
                    "SIGN_KEY": "  " + creds.sign_key,
                    "PRIVATE_KEY": pem,
                    "PRIVATE_KEY_PASSWORD": "wrong-pass",
                    "PLATFORM_CERT": pem,
                }
            }
        }
    )
    assert ids(found) == ["hsq_refunds.E007", "hsq_refunds.E008", "hsq_refunds.E012"]
    text = "\n".join(f"{m.msg} {m.hint}" for m in found)
    for secret in (creds.sign_key, "wrong-pass", "secret-pass", body_line):
        assert secret not in text


def test_a_lease_shorter_than_a_slow_query_is_a_warning(merchant):
    setting = {"MERCHANTS": {"1": merchant}, "ENVIRONMENT": "test"}
    assert messages({**setting, "CLAIM_LEASE": 240}) == []
    found = messages({**setting, "CLAIM_LEASE": 100})
    assert ids(found) == ["hsq_refunds.W005"]
    assert found[0].msg.startswith('HSQ_REFUNDS["CLAIM_LEASE"]: 100 seconds is shorter')
    assert messages({**setting, "CLAIM_LEASE": 100, "RETRIES": 0, "READ_TIMEOUT": 10}) == []
