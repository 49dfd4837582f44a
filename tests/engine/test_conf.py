"""The HSQ_REFUNDS setting (hsq_refunds.conf) and its system checks (hsq_refunds.checks)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core import checks
from django.core.checks import run_checks
from django.http import HttpResponse
from django.test import override_settings
from django.urls import include, path
from django.utils import translation

from hsq_refunds import clients, conf
from hsq_refunds.check_ids import (
    E004_BASE_URL,
    E005_MERCHANTS,
    E010_VALUE,
    E013_RATE_LIMIT_CACHE,
    W002_NO_MERCHANTS,
    W005_CLAIM_LEASE,
    W006_NOTIFY_URL_NOT_HTTPS,
    W007_NOTIFY_URL_VIEW,
    W008_RATE_LIMIT_CACHE_LOCAL,
    W009_NOTIFY_URL_SSL_REDIRECT,
)
from hsq_refunds.gateway import ConfigurationError, HsqClient, query_deadline

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
    client = clients.get_client("888000000001")
    assert isinstance(client, HsqClient)
    assert clients.get_client() is client
    assert client.base_url == "https://test-api.huishouqian.com/api/acquiring"
    settings.HSQ_REFUNDS = {"ENVIRONMENT": "pre", "MERCHANTS": {"888000000001": merchant}}
    rebuilt = clients.get_client()
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
        clients.get_client()


def test_an_unknown_merchant_is_named(settings, merchant):
    settings.HSQ_REFUNDS = {"MERCHANTS": {"888000000001": merchant}}
    with pytest.raises(ConfigurationError, match="'999'"):
        clients.get_client("999")


def test_per_merchant_environment_and_url_override_the_global_ones(settings, merchant):
    settings.HSQ_REFUNDS = {
        "ENVIRONMENT": "test",
        "MERCHANTS": {
            "1": {**merchant, "ENVIRONMENT": "production"},
            "2": {**merchant, "BASE_URL": "http://127.0.0.1:1/api/acquiring"},
            "3": merchant,
        },
    }
    assert clients.get_client("1").base_url == "https://api.huishouqian.com/api/acquiring"
    assert clients.get_client("2").base_url == "http://127.0.0.1:1/api/acquiring"
    assert clients.get_client("3").base_url == "https://test-api.huishouqian.com/api/acquiring"


def test_settings_take_timeouts_and_rate_limit_to_the_client(settings, merchant):
    settings.HSQ_REFUNDS = {
        "CONNECT_TIMEOUT": 2,
        "READ_TIMEOUT": timedelta(seconds=7),
        "RATE_LIMIT": 4,
        "MERCHANTS": {"888000000001": merchant},
    }
    client = clients.get_client()
    assert client.timeout == (2.0, 7.0)
    assert client.rate_limit == 4.0


def test_a_key_that_cannot_be_loaded_names_the_merchant(settings, merchant):
    settings.HSQ_REFUNDS = {
        "MERCHANTS": {"888000000001": {**merchant, "PRIVATE_KEY_PASSWORD": "wrong"}}
    }
    with pytest.raises(ConfigurationError) as caught:
        clients.get_client()
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


def test_a_misspelt_setting_name_gets_the_nearest_known_one(merchant):
    found = messages({"CONCURENCY": 4, "MERCHANTS": {"888000000001": merchant}, "ZZZ": 1})
    by_path = {m.msg.split(":")[0]: m.msg for m in found if m.id == "hsq_refunds.W001"}
    assert "did you mean 'CONCURRENCY'?" in by_path['HSQ_REFUNDS["CONCURENCY"]']
    assert "did you mean" not in by_path['HSQ_REFUNDS["ZZZ"]']


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


def test_every_wrong_password_of_an_encrypted_pem_is_an_e008(hsq_sandbox_credentials, merchant):
    """A wrong password passes the CBC padding check about once in 256 tries and decrypts to
    garbage: that is still the password's fault (E008), never an unreadable key (E009).

    2,000 distinct wrong passwords make that case happen every run (all but 1 in ~2,500 runs).
    """
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
    for attempt in range(2000):
        wrong = f"wrong-pass-{attempt}"
        found = messages(
            {
                "MERCHANTS": {
                    "888000000001": {
                        **merchant,
                        "PRIVATE_KEY": pem,
                        "PRIVATE_KEY_PASSWORD": wrong,
                    }
                }
            }
        )
        assert ids(found) == ["hsq_refunds.E008"], (wrong, found)
        assert "wrong password" in found[0].msg
        assert wrong not in found[0].msg and body_line not in found[0].msg


def test_a_lease_shorter_than_a_slow_query_is_a_warning(merchant):
    setting = {"MERCHANTS": {"1": merchant}, "ENVIRONMENT": "test"}
    assert messages({**setting, "CLAIM_LEASE": 240}) == []
    found = messages({**setting, "CLAIM_LEASE": 100})
    assert ids(found) == ["hsq_refunds.W005"]
    assert found[0].msg.startswith('HSQ_REFUNDS["CLAIM_LEASE"]: 100 seconds is shorter')
    assert messages({**setting, "CLAIM_LEASE": 100, "RETRIES": 0, "READ_TIMEOUT": 10}) == []


# --------------------------------------------------------------------------- the gateway's rules


def test_a_base_url_with_a_trailing_space_is_an_e004():
    url = "https://api.huishouqian.com/api/acquiring "
    found = messages({"BASE_URL": url})
    assert ids(found) == [E004_BASE_URL, "hsq_refunds.W002"]
    (problem,) = [m for m in found if m.id == E004_BASE_URL]
    assert problem.msg.startswith('HSQ_REFUNDS["BASE_URL"]: ')
    assert "whitespace" in problem.msg and "at its start or end" in problem.msg
    with override_settings(HSQ_REFUNDS={"BASE_URL": url}), pytest.raises(ConfigurationError) as e:
        conf.get_settings()
    assert 'HSQ_REFUNDS["BASE_URL"]' in str(e.value)


def test_a_merchant_base_url_with_a_space_names_the_merchant(merchant):
    found = messages({"MERCHANTS": {"1": {**merchant, "BASE_URL": " http://127.0.0.1:1/api"}}})
    assert ids(found) == [E004_BASE_URL]
    assert found[0].msg.startswith('HSQ_REFUNDS["MERCHANTS"]["1"]["BASE_URL"]: ')


@pytest.mark.parametrize(
    "url", ["ftp://ops:hunter2@example.invalid/api", "https://ops:hunter2@example.invalid/api"]
)
def test_a_url_message_never_shows_the_url_it_refuses(url):
    for key in ("BASE_URL", "NOTIFY_URL"):
        found = [m for m in messages({key: url}) if m.id.startswith("hsq_refunds.E")]
        assert len(found) == 1 and f'HSQ_REFUNDS["{key}"]' in found[0].msg
        assert "hunter2" not in f"{found[0].msg} {found[0].hint}"


@pytest.mark.parametrize("merchant_no", ["8140 ", " 8140", "1" * 17, "81\x0040", ""])
def test_merchant_numbers_follow_the_gateway_rule(merchant, merchant_no):
    found = messages({"MERCHANTS": {merchant_no: merchant}})
    assert E005_MERCHANTS in ids(found)
    assert "merchant number" in " ".join(m.msg for m in found if m.id == E005_MERCHANTS)


def test_a_sixteen_character_merchant_number_is_fine(merchant):
    settings = {"ENVIRONMENT": "test", "MERCHANTS": {"8" * 16: merchant}}
    assert messages(settings) == []


# --------------------------------------------------------------------------- new keys


def test_the_new_keys_have_their_documented_defaults(settings):
    settings.HSQ_REFUNDS = {"MERCHANTS": {}}
    current = conf.get_settings()
    assert current.QUERY_DEADLINE == (5 + 15) * 3 + 2 * 30
    assert current.ATTENTION_AFTER_ERRORS == 5
    assert current.REFUND_TYPE == 2
    assert current.TRANS_NO_PREFIX == "RF"
    assert current.NOTIFY_URL is None
    assert current.NOTIFY_FIRST_QUERY_DELAY == 300.0
    assert current.TRACK_UNKNOWN_NOTIFICATIONS is True
    assert current.ALLOW_ADMIN_DELETE is False
    assert current.CYCLE_LIMIT == 60 * 8 * 10
    assert current.RATE_LIMIT_CACHE == "default"
    assert (current.HEALTH.WINDOW, current.HEALTH.OVERDUE_WARNING) == (3600.0, 900.0)
    assert (current.HEALTH.ATTENTION_CRITICAL, current.HEALTH.RUN_RETENTION_DAYS) == (None, 30)


@pytest.mark.parametrize(
    ("key", "value", "parsed"),
    [
        ("QUERY_DEADLINE", 30, 30.0),
        ("QUERY_DEADLINE", timedelta(seconds=45), 45.0),
        ("ATTENTION_AFTER_ERRORS", 1, 1),
        ("ATTENTION_AFTER_ERRORS", 12, 12),
        ("REFUND_TYPE", 1, 1),
        ("REFUND_TYPE", 0, 0),
        ("TRANS_NO_PREFIX", "R", "R"),
        ("TRANS_NO_PREFIX", "Shop2024Refund00", "Shop2024Refund00"),
        (
            "NOTIFY_URL",
            "https://shop.example.com/hsq/notify/",
            "https://shop.example.com/hsq/notify/",
        ),
        ("NOTIFY_URL", "http://127.0.0.1:8000/n/?shop=1", "http://127.0.0.1:8000/n/?shop=1"),
        ("NOTIFY_FIRST_QUERY_DELAY", 0, 0.0),
        ("NOTIFY_FIRST_QUERY_DELAY", timedelta(minutes=10), 600.0),
        ("TRACK_UNKNOWN_NOTIFICATIONS", False, False),
        ("ALLOW_ADMIN_DELETE", True, True),
        ("CYCLE_LIMIT", 500, 500),
        ("CYCLE_LIMIT", 1, 1),
        ("RATE_LIMIT_CACHE", "shared", "shared"),
    ],
)
def test_a_new_key_reads_good_values(settings, key, value, parsed):
    settings.HSQ_REFUNDS = {key: value}
    assert getattr(conf.get_settings(), key) == parsed


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("QUERY_DEADLINE", 0),
        ("QUERY_DEADLINE", "120"),
        ("QUERY_DEADLINE", float("inf")),
        ("ATTENTION_AFTER_ERRORS", 0),
        ("ATTENTION_AFTER_ERRORS", "5"),
        ("ATTENTION_AFTER_ERRORS", True),
        ("ATTENTION_AFTER_ERRORS", 2.5),
        ("REFUND_TYPE", "2"),
        ("REFUND_TYPE", 2.0),
        ("REFUND_TYPE", True),
        ("REFUND_TYPE", -1),
        ("REFUND_TYPE", None),
        ("TRANS_NO_PREFIX", ""),
        ("TRANS_NO_PREFIX", "RF-"),
        ("TRANS_NO_PREFIX", "退款"),
        ("TRANS_NO_PREFIX", "R" * 17),
        ("TRANS_NO_PREFIX", "RF\n"),
        ("TRANS_NO_PREFIX", None),
        ("NOTIFY_URL", "shop.example.com/notify"),
        ("NOTIFY_URL", "https://shop.example.com/notify "),
        ("NOTIFY_URL", "mailto:ops@example.com"),
        ("NOTIFY_URL", 8000),
        ("NOTIFY_FIRST_QUERY_DELAY", -1),
        ("NOTIFY_FIRST_QUERY_DELAY", "300"),
        ("TRACK_UNKNOWN_NOTIFICATIONS", 1),
        ("TRACK_UNKNOWN_NOTIFICATIONS", "yes"),
        ("TRACK_UNKNOWN_NOTIFICATIONS", None),
        ("ALLOW_ADMIN_DELETE", 0),
        ("ALLOW_ADMIN_DELETE", "False"),
        ("CYCLE_LIMIT", 0),
        ("CYCLE_LIMIT", 2.5),
        ("CYCLE_LIMIT", True),
        ("RATE_LIMIT_CACHE", ""),
        ("RATE_LIMIT_CACHE", None),
        ("RATE_LIMIT_CACHE", 3),
        ("HEALTH", []),
        ("HEALTH", "QUEUE_AGE=60"),
        ("HEALTH", None),
    ],
)
def test_a_bad_new_value_is_an_e010_naming_the_key(settings, key, value):
    settings.HSQ_REFUNDS = {key: value}
    with pytest.raises(ConfigurationError) as caught:
        conf.get_settings()
    assert str(caught.value).startswith(f'HSQ_REFUNDS["{key}"]: ')
    found = [m for m in messages({key: value}) if m.level >= checks.ERROR]
    assert [m.id for m in found] == [E010_VALUE]
    assert found[0].msg.startswith(f'HSQ_REFUNDS["{key}"]: ')


def test_health_is_read_into_read_only_thresholds(settings):
    given = {"OVERDUE_WARNING": 600, "FAILED_SHARE_WARNING": 0.2}
    settings.HSQ_REFUNDS = {"HEALTH": given}
    health = conf.get_settings().HEALTH
    assert (health.OVERDUE_WARNING, health.FAILED_SHARE_WARNING) == (600.0, 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.OVERDUE_WARNING = 1  # type: ignore[misc]
    given["OVERDUE_WARNING"] = 5
    assert health.OVERDUE_WARNING == 600  # a copy: changing the setting's dict changes nothing


def test_the_query_deadline_is_computed_from_the_timeouts_and_retries(settings):
    settings.HSQ_REFUNDS = {"CONNECT_TIMEOUT": 2, "READ_TIMEOUT": 10, "RETRIES": 0}
    assert conf.get_settings().QUERY_DEADLINE == 12.0
    settings.HSQ_REFUNDS = {"CONNECT_TIMEOUT": 2, "READ_TIMEOUT": 10, "RETRIES": 1}
    assert conf.get_settings().QUERY_DEADLINE == query_deadline(2, 10, 1, 0.5) == 54.0
    settings.HSQ_REFUNDS = {"RETRIES": 1, "QUERY_DEADLINE": 20}
    assert conf.get_settings().QUERY_DEADLINE == 20.0


def test_the_lease_must_be_twice_the_query_deadline(merchant):
    setting = {"MERCHANTS": {"1": merchant}, "ENVIRONMENT": "test"}
    assert messages({**setting, "CLAIM_LEASE": 100, "QUERY_DEADLINE": 50}) == []
    found = messages({**setting, "CLAIM_LEASE": 100, "QUERY_DEADLINE": 51})
    assert ids(found) == [W005_CLAIM_LEASE]
    assert 'HSQ_REFUNDS["QUERY_DEADLINE"]: 51 seconds' in found[0].msg
    # The default lease (300 s) is too short for a deadline of 200 s.
    assert ids(messages({**setting, "QUERY_DEADLINE": 200})) == [W005_CLAIM_LEASE]


@pytest.mark.parametrize(
    ("keys", "limit"),
    [
        ({}, 4800),  # 60 s at 8 queries in flight, each 0.1 s
        ({"SCHEDULE_MINUTES": 5, "CONCURRENCY": 4}, 300 * 40),
        ({"RATE_LIMIT": 2}, 120),  # 60 s at 2 queries a second
        ({"RATE_LIMIT": 0.5}, 100),  # 30, but never below TASK_BATCH_SIZE
        ({"RATE_LIMIT": 0.5, "TASK_BATCH_SIZE": 10}, 30),
        ({"RATE_LIMIT": 1000}, 4800),  # the concurrency is the tighter bound
        ({"CYCLE_LIMIT": 7}, 7),  # given: taken as it is
    ],
)
def test_the_cycle_limit_is_what_one_cycle_can_work_through(settings, keys, limit):
    settings.HSQ_REFUNDS = keys
    assert conf.get_settings().CYCLE_LIMIT == limit


# --------------------------------------------------------------------------- NOTIFY_URL checks


def notify_view(request):  # the view a project routes HSQ's notifications to (stand-in)
    return HttpResponse("OK")


def other_view(request):
    return HttpResponse("not this one")


# This module is also the URLconf of the NOTIFY_URL tests (ROOT_URLCONF=__name__).
urlpatterns = [
    path(
        "hsq/",
        include(
            ([path("refund-notify/", notify_view, name="refund_notify")], "hsq_refunds"),
            namespace="hsq_refunds",
        ),
    ),
    path("other/", other_view, name="other"),
    path("plain/refund-notify/", notify_view, name="refund_notify"),
]


def notify_messages(url: str, *, debug: bool = False, urlconf=__name__, **django_settings) -> list:
    with override_settings(ROOT_URLCONF=urlconf, **django_settings):
        return [m for m in messages({"NOTIFY_URL": url}, debug=debug) if m.id != W002_NO_MERCHANTS]


def test_a_notify_url_that_reaches_the_notification_view_passes():
    assert notify_messages("https://shop.example.com/hsq/refund-notify/") == []
    assert notify_messages("https://shop.example.com/hsq/refund-notify/?from=hsq") == []


def test_a_plain_http_notify_url_is_a_warning_unless_debug():
    url = "http://shop.example.com/hsq/refund-notify/"
    found = notify_messages(url)
    assert ids(found) == [W006_NOTIFY_URL_NOT_HTTPS]
    assert found[0].msg.startswith('HSQ_REFUNDS["NOTIFY_URL"]: ')
    assert notify_messages(url, debug=True) == []


@pytest.mark.parametrize(
    ("url", "found"),
    [
        ("https://shop.example.com/other/", "the view 'other'"),
        ("https://shop.example.com/nowhere/", "no view"),
        ("https://shop.example.com/plain/refund-notify/", "the view 'refund_notify'"),
        ("https://shop.example.com", "no view"),
    ],
)
def test_a_notify_url_that_leads_elsewhere_is_a_warning(url, found):
    (message,) = notify_messages(url)
    assert message.id == W007_NOTIFY_URL_VIEW
    assert message.msg.startswith('HSQ_REFUNDS["NOTIFY_URL"]: ')
    assert found in message.msg and "hsq_refunds:refund_notify" in message.msg


def test_a_notify_url_is_resolved_without_the_sites_script_prefix():
    url = "https://shop.example.com/shop/hsq/refund-notify/"
    assert ids(notify_messages(url)) == [W007_NOTIFY_URL_VIEW]
    assert notify_messages(url, FORCE_SCRIPT_NAME="/shop/") == []


def test_no_notify_url_no_notify_checks():
    with override_settings(ROOT_URLCONF=__name__):
        assert ids(messages({})) == [W002_NO_MERCHANTS]


SECURITY = "django.middleware.security.SecurityMiddleware"


def test_a_plain_http_notify_url_that_ssl_redirect_would_redirect_is_a_warning():
    url = "http://shop.example.com/hsq/refund-notify/"
    found = notify_messages(url, debug=True, SECURE_SSL_REDIRECT=True, MIDDLEWARE=[SECURITY])
    (message,) = found
    assert message.id == W009_NOTIFY_URL_SSL_REDIRECT  # DEBUG or not: it redirects either way
    assert message.msg.startswith('HSQ_REFUNDS["NOTIFY_URL"]: ')
    assert "SECURE_SSL_REDIRECT" in message.msg and "'/hsq/refund-notify/'" in message.msg
    assert "'https://shop.example.com/hsq/refund-notify/'" in message.hint
    assert "SECURE_REDIRECT_EXEMPT" in message.hint and "SECURE_PROXY_SSL_HEADER" in message.hint
    assert ids(notify_messages(url, SECURE_SSL_REDIRECT=True, MIDDLEWARE=[SECURITY])) == [
        W006_NOTIFY_URL_NOT_HTTPS,
        W009_NOTIFY_URL_SSL_REDIRECT,
    ]


@pytest.mark.parametrize(
    ("url", "django_settings"),
    [
        ("https://shop.example.com/hsq/refund-notify/", {}),
        ("http://shop.example.com/hsq/refund-notify/", {"SECURE_SSL_REDIRECT": False}),
        ("http://shop.example.com/hsq/refund-notify/", {"MIDDLEWARE": []}),
        ("http://shop.example.com/hsq/refund-notify/", {"SECURE_REDIRECT_EXEMPT": [r"^hsq/"]}),
        (
            "http://shop.example.com/shop/hsq/refund-notify/",
            {
                "FORCE_SCRIPT_NAME": "/shop",
                "SECURE_REDIRECT_EXEMPT": [r"^shop/hsq/refund-notify/$"],
            },
        ),
    ],
)
def test_a_notify_url_ssl_redirect_leaves_alone_is_not(url, django_settings):
    django_settings = {"SECURE_SSL_REDIRECT": True, "MIDDLEWARE": [SECURITY], **django_settings}
    assert notify_messages(url, debug=True, **django_settings) == []


@pytest.mark.parametrize(
    ("url", "path", "fixed", "django_settings"),
    [
        (
            "https://shop.example.com/hsq/refund-notify",
            "/hsq/refund-notify",
            "https://shop.example.com/hsq/refund-notify/",
            {},
        ),
        (
            "https://shop.example.com/shop/hsq/refund-notify?from=hsq",
            "/hsq/refund-notify",
            "https://shop.example.com/shop/hsq/refund-notify/?from=hsq",
            {"FORCE_SCRIPT_NAME": "/shop/"},
        ),
    ],
)
def test_a_notify_url_without_its_trailing_slash_is_a_warning_that_says_add_it(
    url, path, fixed, django_settings
):
    (message,) = notify_messages(url, APPEND_SLASH=True, **django_settings)
    assert message.id == W007_NOTIFY_URL_VIEW
    assert f"its path {path!r} leads to no view, only '{path}/'" in message.msg
    assert "APPEND_SLASH" in message.msg
    assert message.hint == f'Add the trailing slash: set HSQ_REFUNDS["NOTIFY_URL"] to {fixed!r}.'


@pytest.mark.parametrize(
    ("url", "there", "fixed"),
    [
        (
            "https://shop.example.com/hsq/refund-notify/",
            "/en/hsq/refund-notify/",
            "https://shop.example.com/en/hsq/refund-notify/",
        ),
        (
            "https://shop.example.com/hsq/refund-notify",
            "/en/hsq/refund-notify/",
            "https://shop.example.com/en/hsq/refund-notify/",
        ),
    ],
)
def test_a_notify_url_only_under_a_language_prefix_is_a_warning_that_says_so(url, there, fixed):
    (message,) = notify_messages(url, urlconf="tests.notify.urls_i18n_inside")
    assert message.id == W007_NOTIFY_URL_VIEW
    assert f"only {there!r} leads to 'hsq_refunds:refund_notify'" in message.msg
    assert "language prefix" in message.msg and "LocaleMiddleware" in message.msg
    assert "outside i18n_patterns()" in message.hint and repr(fixed) in message.hint


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize(
    ("url", "urlconf"),
    [
        ("https://shop.example.com/en/hsq/refund-notify/", "tests.notify.urls_i18n_inside"),
        ("https://shop.example.com/zh-hans/hsq/refund-notify/", "tests.notify.urls_i18n_inside"),
        ("https://shop.example.com/hsq/refund-notify/", "tests.notify.urls_i18n"),
    ],
)
def test_a_notify_url_with_its_language_prefix_or_outside_i18n_patterns_passes(
    url, urlconf, language
):
    """Resolved in the language of its prefix, as LocaleMiddleware does, whatever is active."""
    with translation.override(language):
        assert notify_messages(url, urlconf=urlconf) == []


# --------------------------------------------------------------------------- RATE_LIMIT_CACHE

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
DATABASE = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "hsq_cache"}


def cache_messages(keys: dict, caches: dict) -> list:
    with override_settings(CACHES=caches):
        return [m for m in messages(keys) if m.id != W002_NO_MERCHANTS]


def test_a_rate_limit_counted_in_a_process_local_cache_is_a_warning():
    found = cache_messages({"RATE_LIMIT": 5}, {"default": LOCMEM})
    assert ids(found) == [W008_RATE_LIMIT_CACHE_LOCAL]
    assert found[0].msg.startswith('HSQ_REFUNDS["RATE_LIMIT_CACHE"]: ')
    assert "LocMemCache" in found[0].msg and 'HSQ_REFUNDS["RATE_LIMIT"]' in found[0].msg
    dummy = cache_messages(
        {"RATE_LIMIT": 5, "RATE_LIMIT_CACHE": "d"}, {"default": DATABASE, "d": DUMMY}
    )
    assert ids(dummy) == [W008_RATE_LIMIT_CACHE_LOCAL]
    assert "DummyCache" in dummy[0].msg


def test_a_rate_limit_in_a_shared_cache_passes():
    shared = {"default": LOCMEM, "shared": DATABASE}
    assert cache_messages({"RATE_LIMIT": 5, "RATE_LIMIT_CACHE": "shared"}, shared) == []
    assert cache_messages({"RATE_LIMIT": 5}, {"default": DATABASE}) == []


def test_no_rate_limit_no_cache_check():
    assert cache_messages({}, {"default": LOCMEM}) == []
    assert cache_messages({"RATE_LIMIT_CACHE": "missing"}, {"default": LOCMEM}) == []


def test_a_rate_limit_cache_that_is_not_in_caches_is_an_error():
    found = cache_messages({"RATE_LIMIT": 5, "RATE_LIMIT_CACHE": "shared"}, {"default": DATABASE})
    assert ids(found) == [E013_RATE_LIMIT_CACHE]
    assert found[0].msg.startswith('HSQ_REFUNDS["RATE_LIMIT_CACHE"]: ')
    assert "'shared'" in found[0].msg and "'default'" in found[0].hint
