"""``RATE_LIMIT`` shared through Django's cache: the pacing, threads, real processes over Redis.

The pacing logic runs on an injected clock (a reservation's wait is read, not slept), with no
``spread`` where exact slot times make the test clearer. Threads share a local-memory cache,
and separate processes the throwaway Redis server, each with a limiter of its own as every
worker process has; they record when each of their calls was let through, and no one-second
window holds more than ``RATE`` of them.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.core.cache import caches

from hsq_refunds import clients
from hsq_refunds.exceptions import RateLimitTimeout
from hsq_refunds.gateway import RateLimiter, TransportError
from hsq_refunds.ratelimit import RETAKES, SharedRateLimiter

REPO = Path(__file__).resolve().parents[2]
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
REDIS = "django.core.cache.backends.redis.RedisCache"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def most_in_a_second(times: list[float]) -> int:
    """The most calls in any window ``[t, t + 1)``."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + 1) - index for index, start in enumerate(ordered)),
        default=0,
    )


@pytest.fixture
def rate_cache(settings) -> str:
    """A local-memory cache of its own, alias ``"rate"``."""
    settings.CACHES = {
        "default": {"BACKEND": LOCMEM, "LOCATION": "default"},
        "rate": {"BACKEND": LOCMEM, "LOCATION": f"rate-{uuid.uuid4().hex}"},
    }
    return "rate"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the pacing, on a clock of the test's


def test_processes_sharing_a_cache_take_consecutive_slots(rate_cache):
    clock = FakeClock(1000.0)
    limiters = [
        SharedRateLimiter(10, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock)
        for _process in range(3)
    ]

    starts = [clock.now + limiter.reserve() for _ in range(10) for limiter in limiters]

    assert sorted(starts) == pytest.approx([1000 + slot / 10 for slot in range(30)])
    assert most_in_a_second(starts) == 10


def test_the_shared_pace_is_even_and_full_under_contention(rate_cache):
    """Six workers in three processes, each query taking a random time: one query per slot,
    no slot left empty while a worker waits, and never more than RATE in a second."""
    rate, queries = 20, 400
    clock = FakeClock(5000.03)
    limiters = [
        SharedRateLimiter(rate, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock)
        for _process in range(3)
    ]
    workers = [limiters[number % 3] for number in range(6)]
    ready = [clock.now] * len(workers)
    chance = random.Random(7)
    sent: list[float] = []
    while len(sent) < queries:
        worker = min(range(len(workers)), key=ready.__getitem__)
        clock.now = ready[worker]
        start = clock.now + workers[worker].reserve()
        sent.append(start)
        ready[worker] = start + chance.uniform(0.001, 0.4)

    sent.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / rate - 1e-6
    assert most_in_a_second(sent) == rate
    assert sent[-1] - sent[0] < queries / rate + 1  # no slot wasted beyond the first second


def test_the_spread_keeps_a_second_within_the_rate_when_the_way_varies(rate_cache):
    """Slots of 1.1 / RATE seconds: with each query up to 0.1 s longer on its way than
    another, no second at HSQ's end holds more than RATE."""
    rate = 20
    clock = FakeClock(1000.0)
    limiters = [
        SharedRateLimiter(rate, merchant_no="M1", cache_alias=rate_cache, clock=clock)
        for _process in range(3)
    ]
    chance = random.Random(3)

    starts = [clock.now + limiter.reserve() for _ in range(100) for limiter in limiters]
    arrivals = [start + chance.uniform(0, 0.1) for start in starts]

    assert limiters[0].interval == pytest.approx(1.1 / rate)
    assert min(b - a for a, b in itertools.pairwise(sorted(starts))) == pytest.approx(1.1 / rate)
    assert most_in_a_second(arrivals) <= rate
    exact = [1000 + slot / rate for slot in range(len(starts))]  # the slots without a spread
    assert most_in_a_second([t + chance.uniform(0, 0.1) for t in exact]) > rate


def test_an_idle_limiter_lets_a_query_go_at_the_next_slot(rate_cache):
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(4, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock)

    assert limiter.reserve() == pytest.approx(0)
    clock.now = 1060.1  # idle for a minute: no debt, no burst
    waits = [limiter.reserve() for _ in range(3)]

    assert waits == pytest.approx([0.15, 0.4, 0.65])


def test_merchants_and_rates_have_slots_of_their_own(rate_cache):
    clock = FakeClock(1000.0)
    one = SharedRateLimiter(10, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock)
    other = SharedRateLimiter(10, merchant_no="M2", cache_alias=rate_cache, spread=0, clock=clock)
    odd = SharedRateLimiter(
        10, merchant_no="8140 00/weird", cache_alias=rate_cache, spread=0, clock=clock
    )

    assert [one.reserve(), other.reserve(), odd.reserve()] == pytest.approx([0, 0, 0])
    assert " " not in odd.slot_key(1) and "/" not in odd.slot_key(1)
    assert one.slot_key(1) != SharedRateLimiter(5, merchant_no="M1").slot_key(1)


def test_the_wait_is_bounded(rate_cache):
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(
        4, merchant_no="M1", cache_alias=rate_cache, max_wait=1.0, spread=0, clock=clock
    )

    waits = [limiter.reserve() for _ in range(5)]  # the slots at 1000.0, 1000.25 ... 1001.0
    with pytest.raises(RateLimitTimeout, match=r"within 1 seconds; nothing was sent") as caught:
        limiter.reserve()

    assert waits == [0, 0.25, 0.5, 0.75, 1.0]
    assert isinstance(caught.value, TransportError)
    clock.now += 0.25  # a slot further on comes within reach
    assert limiter.reserve() == 1.0


def test_a_clock_set_back_does_not_block_the_limiter(rate_cache):
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(
        5, merchant_no="M1", cache_alias=rate_cache, max_wait=2.0, spread=0, clock=clock
    )
    limiter.reserve()

    clock.now = 900.0

    assert limiter.reserve() == pytest.approx(0)


def test_acquire_sleeps_until_the_slot(rate_cache):
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(
        2, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock, sleep=clock.sleep
    )

    for _ in range(3):
        limiter.acquire()

    assert clock.now == pytest.approx(1001.0)
    assert isinstance(limiter, RateLimiter)  # what HsqClient(rate_limit=...) takes as it is


def test_a_caller_woken_up_after_its_slot_takes_another(rate_cache):
    clock = FakeClock(1000.0)
    late = [0.3]  # the first sleep overruns by 0.3 s: a busy machine

    def sleep(seconds: float) -> None:
        clock.now += seconds + (late.pop() if late else 0)

    limiter = SharedRateLimiter(
        4, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock, sleep=sleep
    )
    limiter.acquire()  # the slot at 1000.0

    limiter.acquire()  # the slot at 1000.25, woken at 1000.55: the one at 1000.75 instead

    assert clock.now == 1000.75
    taken = caches[rate_cache].get_many([limiter.slot_key(slot) for slot in range(4000, 4004)])
    assert sorted(taken) == [limiter.slot_key(4000), limiter.slot_key(4001), limiter.slot_key(4003)]


def test_a_caller_always_woken_up_late_goes_after_a_few_tries(rate_cache):
    clock = FakeClock(1000.0)
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds + 0.3

    limiter = SharedRateLimiter(
        4, merchant_no="M1", cache_alias=rate_cache, spread=0, clock=clock, sleep=sleep
    )
    limiter.acquire()
    limiter.acquire()

    assert len(sleeps) == RETAKES + 1


# -- the cache out of reach


def test_an_unreachable_cache_falls_back_to_the_process_pace_and_warns_once(settings, caplog):
    caplog.set_level(logging.INFO, logger="hsq_refunds.ratelimit")
    url = f"redis://127.0.0.1:{closed_port()}/0"
    down = {"default": {"BACKEND": LOCMEM}, "rate": {"BACKEND": REDIS, "LOCATION": url}}
    up = {"default": {"BACKEND": LOCMEM}, "rate": {"BACKEND": LOCMEM, "LOCATION": url}}
    settings.CACHES = down
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(
        10, merchant_no="M1", cache_alias="rate", retry_after=30, spread=0, clock=clock
    )

    waits = [limiter.reserve() for _ in range(3)]
    clock.now += 31  # the cache is tried again, and is still down
    waits.append(limiter.reserve())

    assert waits == pytest.approx([0, 0.1, 0.2, 0])

    def logged(level: int) -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "hsq_refunds.ratelimit" and r.levelno == level
        ]

    warnings = logged(logging.WARNING)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "merchant M1" in message and "'rate'" in message and "ConnectionError" in message
    assert url not in message

    # The cache comes back: shared again, said once; a later outage is warned about again.
    settings.CACHES = up
    clock.now += 31
    assert [limiter.reserve(), limiter.reserve()] == pytest.approx([0, 0.1])
    assert [r.getMessage() for r in logged(logging.INFO)] == [
        "RATE_LIMIT of merchant M1: the cache 'rate' works again; the pace is shared"
    ]
    settings.CACHES = down
    limiter.reserve()
    assert len(logged(logging.WARNING)) == 2


def test_a_missing_cache_alias_falls_back_too(rate_cache, caplog):
    clock = FakeClock(1000.0)
    limiter = SharedRateLimiter(10, merchant_no="M1", cache_alias="nowhere", spread=0, clock=clock)

    assert [limiter.reserve(), limiter.reserve()] == pytest.approx([0, 0.1])
    assert ["InvalidCacheBackendError" in r.getMessage() for r in caplog.records] == [True]


# -- the settings build the shared limiter into each merchant's client


def test_the_client_of_each_merchant_paces_through_the_shared_cache(
    configure, sandbox, rate_cache, merchant_no
):
    configure(RATE_LIMIT=4, RATE_LIMIT_CACHE=rate_cache)
    sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])
    client = clients.get_client()
    limiter = SharedRateLimiter(4, merchant_no=merchant_no, cache_alias=rate_cache)
    before = time.time()

    client.query_refund("R1")
    client.query_refund("R1")

    every = limiter.interval
    slots = range(math.floor(before / every), math.ceil(time.time() / every) + 1)
    taken = caches[rate_cache].get_many([limiter.slot_key(slot) for slot in slots])
    assert len(taken) == 2
    assert client.rate_limit == 4
    assert sandbox.query_counts() == {"R1": 2}


def test_without_rate_limit_nothing_is_counted(configure, sandbox, rate_cache):
    configure(RATE_LIMIT=None, RATE_LIMIT_CACHE=rate_cache)

    assert clients.get_client().rate_limit is None


def test_a_query_goes_through_when_the_cache_is_unreachable(configure, sandbox, settings, caplog):
    settings.CACHES = {
        "default": {"BACKEND": LOCMEM},
        "rate": {"BACKEND": REDIS, "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"},
    }
    configure(RATE_LIMIT=50, RATE_LIMIT_CACHE="rate")
    sandbox.add_refund("R1", timeline=[{"status": "SUCCESS"}])

    result = clients.get_client().query_refund("R1")

    assert result.status.value == "SUCCESS"
    assert any("cannot be used" in r.getMessage() for r in caplog.records)


# -- real threads and processes


def run_threads(limiters: list[SharedRateLimiter], threads: int, each: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()

    def work(limiter: SharedRateLimiter) -> None:
        for _ in range(each):
            limiter.acquire()
            now = time.time()
            with lock:
                times.append(now)

    workers = [
        threading.Thread(target=work, args=(limiter,))
        for limiter in limiters
        for _thread in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return times


def test_threads_of_several_limiters_sharing_a_local_memory_cache(rate_cache):
    rate = 12
    limiters = [
        SharedRateLimiter(rate, merchant_no="M1", cache_alias=rate_cache) for _process in range(3)
    ]

    times = run_threads(limiters, threads=3, each=4)

    assert len(times) == 36
    assert most_in_a_second(times) <= rate


def child(argv: list[str]) -> None:
    """One process of the Redis test: ``url merchant rate threads each start_at``."""
    from django.conf import settings

    url, merchant, rate, threads, each, start_at = argv
    settings.configure(CACHES={"default": {"BACKEND": REDIS, "LOCATION": url}})
    limiter = SharedRateLimiter(float(rate), merchant_no=merchant)
    time.sleep(max(0.0, float(start_at) - time.time()))
    print(json.dumps(run_threads([limiter], int(threads), int(each))))


@pytest.mark.redis
def test_processes_sharing_redis_never_exceed_the_rate():
    from tests.services import ServiceUnavailable, ensure_redis

    try:
        url = ensure_redis()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    rate, processes, threads, each = 12, 4, 2, 6
    merchant = f"T{uuid.uuid4().hex[:12]}"
    start_at = time.time() + 3
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tasks.test_rate_limit",
                url,
                merchant,
                str(rate),
                str(threads),
                str(each),
                str(start_at),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    times: list[float] = []
    for process in children:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        times.extend(json.loads(out))

    assert len(times) == processes * threads * each
    assert most_in_a_second(times) <= rate


if __name__ == "__main__":
    child(sys.argv[1:])
