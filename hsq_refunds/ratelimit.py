"""One ``RATE_LIMIT`` for every process: a pace per merchant, shared through Django's cache.

The gateway client paces its queries with :class:`~hsq_refunds.gateway.RateLimiter`, which
knows only the threads of its own process: N workers would send N times the limit.
:class:`SharedRateLimiter` keeps the same even pace for every process and machine that reaches
one cache (``RATE_LIMIT_CACHE``; in production Redis, Memcached or the database cache).

How it works
------------
Time, on the wall clock that every process reads alike, is cut into slots of ``1 / rate``
seconds, numbered from the epoch. A query takes one slot: the first free slot that starts at
or after the moment it asks, up to ``max_wait`` seconds ahead, reserved with ``cache.add`` on
a key named after the merchant, the rate and the slot's number. ``add`` stores a key only if
it is absent, atomically on every Django cache backend (Redis ``SET NX``, Memcached ``add``,
the database cache's insert), so no two callers anywhere hold one slot. The caller then sleeps
until its slot starts; a slot that is over by the time the cache has answered (a slow round
trip) is given up, not used late. Each query thus starts within a slot of its own: across every
process, at most ``rate`` queries in a second of the slots' grid (a calendar second, for a
whole-number rate), at most one more in a one-second window placed anywhere, and never a
burst. Slots are looked up a block at a time (``get_many``) before they are reserved, so that a
caller behind many others pays about two cache round trips, not one per taken slot; each
process also remembers where its last slot was.

Slot keys expire a few seconds after their slot has started. Processes on several machines
need clocks kept within milliseconds of each other (NTP does that).

When no slot is free within ``max_wait`` (far more callers than the rate serves), the query
fails with :class:`RateLimitTimeout` before anything is sent, like any other transport error
of that refund. When the cache cannot be reached (or its alias is not in ``CACHES``), the
limiter falls back to pacing this process alone at ``rate``, logs one warning, and tries the
cache again after ``retry_after`` seconds: a cache outage never fails a query.

``clock`` and ``sleep`` are injectable, so that the pacing can be tested without waiting.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable

from django.core.cache import caches

from .gateway import RateLimiter, TransportError

__all__ = ["RateLimitTimeout", "SharedRateLimiter"]

logger = logging.getLogger("hsq_refunds.ratelimit")

#: Slots looked up with one ``get_many``.
_BLOCK = 32
#: Seconds a slot's key outlives the slot's start (clock differences between machines).
_KEY_MARGIN = 5
#: Merchant numbers used in cache keys as they are; others are hashed (Memcached's key rules).
_KEY_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class RateLimitTimeout(TransportError):
    """No slot of the shared pace is free within the wait allowed; nothing was sent."""


class SharedRateLimiter(RateLimiter):
    """At most ``rate`` queries per second of ``merchant_no``, counted in ``caches[cache_alias]``.

    Hand it to :class:`~hsq_refunds.gateway.HsqClient` as ``rate_limit``; it is a
    :class:`~hsq_refunds.gateway.RateLimiter` whose slots are shared through the cache (see the
    module's documentation), and whose own per-process pace is the fallback while the cache
    cannot be reached. Safe to share between threads.
    """

    def __init__(
        self,
        rate: float,
        *,
        merchant_no: str,
        cache_alias: str = "default",
        max_wait: float = 60.0,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, clock=clock, sleep=sleep)
        if not max_wait > 0 or not math.isfinite(max_wait):
            raise ValueError("max_wait must be a positive number of seconds")
        if not retry_after >= 0 or not math.isfinite(retry_after):
            raise ValueError("retry_after must be a number of seconds >= 0")
        self.merchant_no = merchant_no
        self.cache_alias = cache_alias
        self.max_wait = float(max_wait)
        self.retry_after = float(retry_after)
        merchant = (
            merchant_no
            if _KEY_SAFE.fullmatch(merchant_no)
            else hashlib.sha256(merchant_no.encode("utf-8")).hexdigest()[:32]
        )
        self._key_prefix = f"hsq_refunds:rate:{merchant}:{self.rate:g}:"
        self._shared_lock = threading.Lock()
        #: The slot after the last one this process reserved: where its next search starts.
        self._hint = 0
        #: Until this time (``clock``), the cache is not tried again after a failure.
        self._local_until = -math.inf
        #: Whether the cache failed and has not worked since (the warning is logged once).
        self._degraded = False

    def slot_key(self, slot: int) -> str:
        """The cache key (before the cache's own prefix) that holds slot number ``slot``."""
        return f"{self._key_prefix}{slot}"

    def reserve(self) -> float:
        """Take the next free shared slot; return how many seconds to wait for it.

        Raises :class:`RateLimitTimeout` when none is free within ``max_wait``. While the
        cache cannot be reached, this process's own pace decides instead.
        """
        now = self._clock()
        if now >= self._local_until:
            try:
                with self._shared_lock:
                    start = self._reserve_shared(now)
            except Exception as exc:  # whatever the cache raises, the query goes on
                self._cache_failed(exc)
            else:
                self._cache_worked()
                if start is None:
                    raise RateLimitTimeout(
                        f"no free slot of the shared rate limit ({self.rate:g} per second) "
                        f"within {self.max_wait:g} seconds; nothing was sent"
                    )
                return max(0.0, start - self._clock())
        return super().reserve()

    def _reserve_shared(self, now: float) -> float | None:
        """Reserve the first free slot from now to ``max_wait`` ahead; its start, or ``None``.

        A slot that is over by the time the cache has answered (a slow round trip, the first
        connection) is not used: its query would go out together with the next slot's.
        """
        cache = caches[self.cache_alias]
        last = math.floor((now + self.max_wait) * self.rate)
        slot = math.ceil(now * self.rate)
        if slot <= self._hint <= last:
            slot = self._hint
        while slot <= last:
            block = range(slot, min(slot + _BLOCK, last + 1))
            keys = [self.slot_key(number) for number in block]
            taken = cache.get_many(keys)
            slot = block.stop
            for number, key in zip(block, keys, strict=True):
                if key in taken:
                    continue
                start = number / self.rate
                timeout = math.ceil(max(0.0, start - now)) + _KEY_MARGIN
                if not cache.add(key, 1, timeout=timeout):
                    continue
                self._hint = number + 1
                current = self._clock()
                if current < start + self.interval:
                    self._follow(start)
                    return start
                slot = max(number + 1, math.ceil(current * self.rate))
                break
        return None

    def _follow(self, start: float) -> None:
        """Keep the per-process fallback pace behind the slots taken, should it take over."""
        with self._lock:
            self._next_slot = max(self._next_slot, start + self.interval)

    def _cache_failed(self, exc: Exception) -> None:
        with self._shared_lock:
            self._local_until = self._clock() + self.retry_after
            first = not self._degraded
            self._degraded = True
        if first:
            # The type only: a cache's message can hold its URL, and a URL its password.
            logger.warning(
                "RATE_LIMIT of merchant %s: the cache %r cannot be used (%s); this process "
                "keeps the pace on its own, so several processes together may go faster, "
                "until the cache works again",
                self.merchant_no,
                self.cache_alias,
                type(exc).__name__,
            )

    def _cache_worked(self) -> None:
        if self._degraded:
            with self._shared_lock:
                recovered, self._degraded = self._degraded, False
            if recovered:
                logger.info(
                    "RATE_LIMIT of merchant %s: the cache %r works again; the pace is shared",
                    self.merchant_no,
                    self.cache_alias,
                )

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter(rate={self.rate!r}, merchant_no={self.merchant_no!r}, "
            f"cache_alias={self.cache_alias!r})"
        )
