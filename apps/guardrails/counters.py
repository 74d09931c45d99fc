"""Window counters for rate limits, in the cache (Redis in production).

``increment`` counts several windows at once: on Redis in one round trip (a pipeline of
``SET key 0 EX ttl NX`` + ``INCR key`` per counter, which any Redis version runs), where
``cache.add`` + ``cache.incr`` per counter would take three commands each. Values are plain
integers, as Django's Redis cache stores them, so ``cache.get`` reads the same counters.
Other caches (the embedded default's local memory) count through the cache API.
"""

import contextlib

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache


def _redis():
    """The Redis client behind the default cache, or None when the cache is not Redis. Kept
    on the cache backend (one per thread): it shares the backend's connection pool, and
    making one per call was a tenth of the gateway's Python time."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    client = getattr(backend, "_counters_client", None)
    if client is None:
        client = backend._counters_client = backend._cache.get_client(write=True)
    return client


def increment(counters: list[tuple[str, int]]) -> list[int]:
    """Count one more in each ``(key, ttl_seconds)`` window (created at 0 with that expiry
    if absent); returns the new values, in order."""
    if not counters:
        return []
    client = _redis()
    if client is None:
        values = []
        for key, ttl in counters:
            cache.add(key, 0, timeout=ttl)
            values.append(cache.incr(key))
        return values
    pipeline = client.pipeline(transaction=False)
    for key, ttl in counters:
        stored = cache.make_and_validate_key(key)
        pipeline.set(stored, 0, ex=ttl, nx=True)
        pipeline.incr(stored)
    replies = pipeline.execute()
    return [int(value) for value in replies[1::2]]


def decrement(keys) -> None:
    """Give back one count in each window (a refused call does not use up a limit)."""
    keys = list(keys)
    if not keys:
        return
    client = _redis()
    if client is None:
        for key in keys:
            with contextlib.suppress(ValueError):  # expired meanwhile
                cache.decr(key)
        return
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        # Only where the window still exists: DECR on an expired key would start a new,
        # never-expiring counter at -1.
        pipeline.eval(_DECR_IF_EXISTS, 1, cache.make_and_validate_key(key))
    pipeline.execute()


_DECR_IF_EXISTS = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return nil"
