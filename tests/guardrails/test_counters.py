"""Window counters (apps/guardrails/counters.py): on the embedded default's local-memory
cache and, in the services suite, on Redis in one round trip."""

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from apps.guardrails import counters

on_redis = isinstance(caches["default"], RedisCache)


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_each_window_counts_on_its_own():
    assert counters.increment([("a", 60), ("b", 60)]) == [1, 1]
    assert counters.increment([("a", 60)]) == [2]
    assert counters.increment([("b", 60), ("a", 60), ("c", 60)]) == [2, 3, 1]
    assert counters.increment([]) == []
    assert cache.get("a") == 3  # the cache API reads the same counters


def test_a_give_back_lowers_the_count_and_never_creates_a_window():
    counters.increment([("a", 60), ("a", 60)])

    counters.decrement(["a", "never-counted"])

    assert cache.get("a") == 1
    assert cache.get("never-counted") is None
    assert counters.increment([("never-counted", 60)]) == [1]


@pytest.mark.skipif(not on_redis, reason="the window's expiry is Redis's (REDIS_URL set: make test-services)")
def test_a_window_expires_after_its_time_to_live_set_once():
    client = caches["default"]._cache.get_client()
    key = cache.make_and_validate_key("w")

    counters.increment([("w", 60)])
    first_ttl = client.ttl(key)
    counters.increment([("w", 3600)])  # a later count does not stretch the window

    assert 0 < first_ttl <= 60
    assert 0 < client.ttl(key) <= 60


@pytest.mark.skipif(not on_redis, reason="round trips are Redis's (REDIS_URL set: make test-services)")
def test_several_windows_take_one_round_trip(monkeypatch):
    import redis

    round_trips = []
    original = redis.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        round_trips.append(len(self.command_stack))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)

    counters.increment([("a", 60), ("b", 60), ("c", 60)])

    assert round_trips == [6]
