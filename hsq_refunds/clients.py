"""One gateway client per merchant, built from ``HSQ_REFUNDS`` on first use and rebuilt after the
setting changes (``override_settings`` works)."""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import (
    HsqRefundsSettings,
    MerchantSettings,
    default_merchant_no,
    get_settings,
    setting_path,
)
from .gateway import ConfigurationError, HsqClient
from .ratelimit import SharedRateLimiter

__all__ = ["get_client"]

_lock = threading.Lock()
_clients: dict[str, HsqClient] = {}


@receiver(setting_changed, dispatch_uid="hsq_refunds.clients.reset")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "HSQ_REFUNDS":
        with _lock:
            clients = list(_clients.values())
            _clients.clear()
        for client in clients:
            client.close()


def get_client(merchant_no: str | None = None) -> HsqClient:
    """The client of ``merchant_no`` (default: the only merchant), built once and cached.

    Its keys are parsed once and it holds one connection pool; it is safe to share between
    threads. Raises :class:`~hsq_refunds.gateway.ConfigurationError` for a merchant that is
    not configured or whose keys cannot be loaded, naming the setting.
    """
    current = get_settings()
    if merchant_no is None:
        merchant_no = default_merchant_no()
        if merchant_no is None:
            raise ConfigurationError(
                f"{setting_path('MERCHANTS')}: no merchants are configured"
                if not current.MERCHANTS
                else "several merchants are configured; say which merchant number to use"
            )
    with _lock:
        client = _clients.get(merchant_no)
        if client is not None:
            return client
        merchant = current.MERCHANTS.get(merchant_no)
        if merchant is None:
            raise ConfigurationError(
                f"merchant {merchant_no!r} is not configured in {setting_path('MERCHANTS')}"
            )
        client = _build_client(current, merchant)
        _clients[merchant_no] = client
        return client


def _rate_limiter(current: HsqRefundsSettings, merchant_no: str) -> SharedRateLimiter | None:
    """``RATE_LIMIT`` for one merchant, shared by every process through ``RATE_LIMIT_CACHE``.

    A query may wait for its turn as long as its claim (``CLAIM_LEASE``) still leaves it the
    whole ``QUERY_DEADLINE`` afterwards.
    """
    if current.RATE_LIMIT is None:
        return None
    return SharedRateLimiter(
        current.RATE_LIMIT,
        merchant_no=merchant_no,
        cache_alias=current.RATE_LIMIT_CACHE,
        max_wait=max(1.0, current.CLAIM_LEASE - current.QUERY_DEADLINE),
    )


def _build_client(current: HsqRefundsSettings, merchant: MerchantSettings) -> HsqClient:
    try:
        return HsqClient(
            merchant_no=merchant.merchant_no,
            sign_key=merchant.sign_key,
            private_key=merchant.private_key,
            private_key_password=merchant.private_key_password,
            platform_key=merchant.platform_cert,
            base_url=merchant.base_url,
            environment=merchant.environment,
            connect_timeout=current.CONNECT_TIMEOUT,
            read_timeout=current.READ_TIMEOUT,
            retries=current.RETRIES,
            backoff_factor=current.BACKOFF_FACTOR,
            deadline=current.QUERY_DEADLINE,
            rate_limit=_rate_limiter(current, merchant.merchant_no),
            pool_maxsize=max(32, current.CONCURRENCY),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{setting_path('MERCHANTS', merchant.merchant_no)}: {exc.message}"
        ) from None
