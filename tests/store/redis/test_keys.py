"""Redis key names: one namespace, hash tags where keys are used together."""

from __future__ import annotations

import pytest

from store.redis.keys import DEFAULT_NAMESPACE, RedisKeys


def test_every_key_is_inside_the_namespace() -> None:
    keys = RedisKeys(namespace="t1:")
    built = [
        keys.route(7),
        keys.user_cache(7),
        keys.gate_load(),
        keys.gate("g-1"),
        keys.group_members(9),
        keys.rate_limit("send", 7),
    ]
    assert all(key.startswith("t1:") for key in built)
    assert len(set(built)) == len(built)
    assert keys.route(7) == "t1:route:7"
    assert keys.pattern() == "t1:*"


def test_default_namespace() -> None:
    assert RedisKeys().route(1) == f"{DEFAULT_NAMESPACE}route:1" == "cb:route:1"


def test_namespaces_do_not_overlap() -> None:
    assert RedisKeys(namespace="a:").user_cache(1) != RedisKeys(namespace="b:").user_cache(1)


def test_gate_registry_keys_share_one_cluster_slot() -> None:
    keys = RedisKeys()
    assert "{gates}" in keys.gate_load()
    assert "{gates}" in keys.gate("g-1")
    # Per-user keys carry no hash tag, so they spread over a cluster.
    assert "{" not in keys.route(1)


@pytest.mark.parametrize("namespace", ["a b:", "x{y}:", "c*:", "c?:", "c[1]:"])
def test_namespace_must_not_break_slots_or_patterns(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisKeys(namespace=namespace)
