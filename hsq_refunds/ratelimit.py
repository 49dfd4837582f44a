"""One ``RATE_LIMIT`` for every process: a pace per merchant, shared through Django's cache.

The gateway client paces its queries with :class:`~hsq_refunds.gateway.RateLimiter`, which
knows only the threads of its own process: N workers would send N times the limit.
:class:`SharedRateLimiter` keeps the same even pace for every process and machine that reaches
one cache (``RATE_LIMIT_CACHE``; in production Redis, Memcached or the database cache).

How it works
------------
Time, on the wall clock that every process reads alike, is cut into slots, numbered from the
epoch. A query takes one slot: the first free slot that starts at or after the moment it asks,
up to ``max_wait`` seconds ahead, reserved with ``cache.add`` on a key named after the
merchant, the pace and the slot's number. ``add`` stores a key only if it is absent, atomically
on every Django cache backend (Redis ``SET NX``, Memcached ``add``, the database cache's
insert), so no two callers anywhere hold one slot. The caller then sleeps until its slot
starts. A slot that is over by the time the cache has answered (a slow round trip), or by the
time the caller wakes up (a busy machine), is given up and another taken, rather than used
late, where its query would go out together with the next slot's. Each query thus leaves
within a slot of its own, evenly paced, never in a burst. Slots are looked up a block at a time
(``get_many``) before they are reserved, so that a caller behind many others pays about two
cache round trips, not one per taken slot; each process also remembers where its last slot
was.

HSQ counts queries as they arrive, and some take longer on the way than others. So the slots
are ``(1 + spread) / rate`` seconds long: any ``1 + spread`` seconds hold at most ``rate``
slots, and HSQ receives at most ``rate`` queries in any second as long as the way there varies
by less than ``spread`` seconds (0.1 by default; the pace is then ``rate / 1.1``).

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

from .exceptions import RateLimitTimeout
from .gateway import RateLimiter

__all__ = ["RETAKES", "SPREAD", "SharedRateLimiter"]

logger = logging.getLogger("hsq_refunds.ratelimit")

#: Seconds by which the way to HSQ may vary without HSQ counting more than ``rate`` a second.
SPREAD = 0.1
#: How many times a caller woken up too late for its slot takes another before it goes anyway.
RETAKES = 3
#: Slots looked up with one ``get_many``.
_BLOCK = 32
#: Seconds a slot's key outlives the slot's start (clock differences between machines).
_KEY_MARGIN = 5
#: Merchant numbers used in cache keys as they are; others are hashed (Memcached's key rules).
_KEY_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
        spread: float = SPREAD,
        max_wait: float = 60.0,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, clock=clock, sleep=sleep)
        if not spread >= 0 or not math.isfinite(spread):
            raise ValueError("spread must be a number of seconds >= 0")
        if not max_wait > 0 or not math.isfinite(max_wait):
            raise ValueError("max_wait must be a positive number of seconds")
        if not retry_after >= 0 or not math.isfinite(retry_after):
            raise ValueError("retry_after must be a number of seconds >= 0")
        self.merchant_no = merchant_no
        self.cache_alias = cache_alias
        self.max_wait = float(max_wait)
        self.retry_after = float(retry_after)
        self.spread = float(spread)
        #: Slots per second; the per-process fallback keeps the same pace.
        self._per_second = self.rate / (1 + self.spread)
        self.interval = 1 / self._per_second
        merchant = (
            merchant_no
            if _KEY_SAFE.fullmatch(merchant_no)
            else hashlib.sha256(merchant_no.encode("utf-8")).hexdigest()[:32]
        )
        self._key_prefix = f"hsq_refunds:rate:{merchant}:{self._per_second:.6g}:"
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
        return self._take()[1]

    def acquire(self) -> None:
        """Wait for this caller's slot. A caller woken up after its slot is over (a busy
        machine) takes another instead of going late, at most :data:`RETAKES` times."""
        for _retake in range(RETAKES):
            start, wait = self._take()
            if wait > 0:
                self._sleep(wait)
            if start is None or self._clock() < start + self.interval:
                return
        start, wait = self._take()
        if wait > 0:
            self._sleep(wait)

    def _take(self) -> tuple[float | None, float]:
        """``(start, wait)`` of a shared slot, or ``(None, wait)`` by the per-process pace."""
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
                return start, max(0.0, start - self._clock())
        return None, super().reserve()

    def _reserve_shared(self, now: float) -> float | None:
        """Reserve the first free slot from now to ``max_wait`` ahead; its start, or ``None``.

        A slot that is over by the time the cache has answered (a slow round trip, the first
        connection) is not used: its query would go out together with the next slot's.
        """
        cache = caches[self.cache_alias]
        last = math.floor((now + self.max_wait) * self._per_second)
        slot = math.ceil(now * self._per_second)
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
                start = number / self._per_second
                timeout = math.ceil(max(0.0, start - now)) + _KEY_MARGIN
                if not cache.add(key, 1, timeout=timeout):
                    continue
                self._hint = number + 1
                current = self._clock()
                if current < start + self.interval:
                    self._follow(start)
                    return start
                slot = max(number + 1, math.ceil(current * self._per_second))
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
            f"cache_alias={self.cache_alias!r}, spread={self.spread!r})"
        )
