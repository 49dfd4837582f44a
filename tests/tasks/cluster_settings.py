"""Settings for the ``manage.py qcluster`` processes of the distributed test.

Everything from :mod:`tests.settings` (the test's database and ``HSQ_REFUNDS``, passed in the
environment by :func:`tests.processes.child_env`), with django-q2 on the throwaway Redis server
instead of the ORM broker, and out of sync mode.

Every cluster of one site shares ``Q_CLUSTER["name"]``: django-q2 uses it as the Redis queue's
name and to sign tasks, so clusters with different names would not share the work. The test
gives each run its own name (``HSQ_TEST_Q_NAME``) so that concurrent test runs on the one
Redis server never take each other's tasks.
"""

from __future__ import annotations

import os

from tests.services import CHECKOUT_KEY, REDIS_PORT
from tests.settings import *  # noqa: F403

Q_CLUSTER = {
    "name": os.environ.get("HSQ_TEST_Q_NAME", f"hsq_refunds_tests_{CHECKOUT_KEY}"),
    "redis": os.environ.get("HSQ_TEST_REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0"),
    "workers": int(os.environ.get("HSQ_TEST_Q_WORKERS", "4")),
    # A batch must finish before a broker that takes receipts would hand it out again.
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    # Each cluster takes few tasks ahead of its workers, leaving the rest to the others.
    "queue_limit": 2,
    # Keep every result: the test reads which process ran each batch.
    "save_limit": 0,
    "catch_up": False,
    "sync": False,
}

# The distributed rate test shares RATE_LIMIT through a cache on the same Redis server
# (``HSQ_REFUNDS["RATE_LIMIT_CACHE"] = "rate"``), its keys apart from other runs' by the
# queue's name.
if os.environ.get("HSQ_TEST_RATE_CACHE_URL"):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "rate": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["HSQ_TEST_RATE_CACHE_URL"],
            "KEY_PREFIX": Q_CLUSTER["name"],
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        },
    }
