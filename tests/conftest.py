"""Shared fixtures: where the real services are.

Tests that need Kafka, Redis or MongoDB talk to real servers. By default these are the ones
`make services-up` starts on loopback; `KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL` and `MONGO_URL`
point the tests at other servers instead. A missing server is a test *error* naming the
service and the command that starts it, never a silent skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
from urllib.parse import urlsplit

import pytest

from bus.admin import forget, groups_and_gates
from bus.topology import load_topology
from store.redis.client import CLUSTER_SCHEMES, parse_cluster_url

KAFKA_DEFAULT = "127.0.0.1:9092"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
MONGO_DEFAULT = "mongodb://127.0.0.1:27017"


def _require_tcp(service: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return
    except OSError as exc:
        pytest.fail(
            f"{service} is not reachable at {host}:{port} ({exc}); "
            "run `make services-up` or point the tests at a server with the environment "
            "variable for it",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a real Kafka broker (KAFKA_BOOTSTRAP_SERVERS)."""
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", KAFKA_DEFAULT)
    host, _, port = servers.split(",")[0].rpartition(":")
    _require_tcp("Kafka", host, int(port))
    return servers


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis server or Redis Cluster (REDIS_URL; ``redis+cluster://…`` for a
    cluster: `make test-redis-cluster`)."""
    url = os.environ.get("REDIS_URL", REDIS_DEFAULT)
    if url.partition("://")[0] in CLUSTER_SCHEMES:
        for host, port in parse_cluster_url(url)[0]:
            _require_tcp("Redis Cluster", host, port)
        return url
    parts = urlsplit(url)
    _require_tcp("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)
    return url


@pytest.fixture(scope="session")
def mongo_url() -> str:
    """URL of a real MongoDB wire-protocol server (MONGO_URL)."""
    url = os.environ.get("MONGO_URL", MONGO_DEFAULT)
    parts = urlsplit(url)
    _require_tcp("MongoDB", parts.hostname or "127.0.0.1", parts.port or 27017)
    return url


# --- what a session leaves on the broker ----------------------------------------------------
#
# Every test that consumes uses consumer group ids of its own, and every gate a topic of its
# own (``im.gate.<id>``). Kafka keeps both after the test, and the shared test broker had
# gathered 27,084 empty groups and 271 gate topics. So the session deletes, when it ends,
# the groups that have no members and the gate topics that appeared while it ran.

_SWEEP_TIMEOUT_S = 5.0
_BEFORE = pytest.StashKey[tuple[str, set[str], set[str]] | None]()


def _names(bootstrap: str) -> tuple[set[str], set[str]]:
    return asyncio.run(
        groups_and_gates(load_topology(), bootstrap, request_timeout=_SWEEP_TIMEOUT_S)
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", KAFKA_DEFAULT)
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        groups, topics = _names(bootstrap)
    except Exception:  # no broker (unit tests alone): nothing to sweep afterwards
        session.stash[_BEFORE] = None
        return
    session.stash[_BEFORE] = (bootstrap, groups, topics)


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.stash.get(_BEFORE, None)
    if before is None:
        return
    bootstrap, groups, topics = before
    try:
        groups_now, topics_now = _names(bootstrap)
        asyncio.run(forget(bootstrap, groups=groups_now - groups, topics=topics_now - topics))
    except Exception as exc:  # the tests' outcome stands; say what was left behind
        print(f"\nconftest: could not delete this session's consumer groups: {exc!r}")
