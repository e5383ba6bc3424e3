"""Fault tests (`make chaos`): fixtures, and the run's last line.

Every fault test checks its load with `tests.chaos.checker` and hands the report to
`record_fault_result(report, faults=N)`. When the run selected any test marked ``chaos``,
the very last line pytest prints is the sum over all of them::

    faults=N lost=0 duplicated=0 out_of_order=0

It is printed from `pytest_unconfigure`, after pytest's own summary line, so scripts can take
``tail -1``.

Fixtures:

- `real_system` (tests/consumers/conftest.py) on the shared services;
- `private_kafka`: a Kafka broker of this pytest session (tests.chaos.services), for tests
  that run `coffeebus consume` / `coffeebus gateway` processes. Such a process handles every
  record of its topics — it has no notion of "this test's records" — so on the shared broker
  it would answer other tests' clients (with refusals: their users are not in its database)
  and replay their records, with replies to gate topics long deleted, each stalling its
  partition. On a broker of its own it sees only its test's traffic;
- `chaos_system`: a `ChaosSystem` — the `System` of the consumer tests (runtime, in-process
  gates, users) on `private_kafka` plus the shared Redis and FerretDB (own database and key
  namespace), and role processes on the same settings, stopped at teardown.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from bus.admin import apply
from bus.topology import load_topology
from coffeebus.settings import KafkaSettings, MongoSettings, RedisSettings, Settings
from coffeebus.wiring import Mode, Runtime, open_runtime
from store.mongo.groups import GROUP_ID_TIMELINE
from tests.chaos.checker import tally
from tests.chaos.processes import RoleProcess, role_env, write_topology
from tests.chaos.services import PrivateServices
from tests.consumers.conftest import (
    System,
    _cleanup,
    commit_ends,
    real_system,
)

__all__ = ["ChaosSystem", "chaos_system", "private_kafka", "real_system"]

_ran_chaos = pytest.StashKey[bool]()


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_ran_chaos] = any(
        item.get_closest_marker("chaos") is not None for item in session.items
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if not config.stash.get(_ran_chaos, False):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(tally.line())
    else:  # -p no:terminal
        print(tally.line(), flush=True)


@pytest.fixture(scope="session")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a one-node Kafka of this session (killed at the end)."""
    services = PrivateServices(tmp_path_factory.mktemp("private-kafka"), kafka_nodes=1)
    # A session fixture outlives every test's event loop: run its coroutines on their own.
    try:
        asyncio.run(services.start())
        yield services.kafka_bootstrap
    finally:
        asyncio.run(services.close())


class ChaosSystem(System):
    """A `System` whose consumer groups (and extra gates) run as processes."""

    def __init__(
        self, runtime: Runtime, *, kafka_bootstrap: str, topology_file: Path, logs: Path
    ) -> None:
        super().__init__("real", runtime, kafka_bootstrap=kafka_bootstrap)
        self.bootstrap = kafka_bootstrap
        self.topology_file = topology_file
        self.logs = logs
        self.processes: list[RoleProcess] = []

    def process(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_level: str | None = None,
        env_overrides: Mapping[str, str] | None = None,
    ) -> RoleProcess:
        """A `coffeebus ARGS…` process on this system's settings (not started yet);
        `env_overrides` adds settings of its own (``COFFEEBUS_GATEWAY__TCP_PORT``, ...).

        Its log level is `log_level`, else ``CHAOS_ROLE_LOG_LEVEL`` (``INFO`` to see what a
        process did before it stalled), else WARNING."""
        level = log_level or os.environ.get("CHAOS_ROLE_LOG_LEVEL", "WARNING")
        env = role_env(self.runtime.settings, self.topology_file, log_level=level)
        env.update(env_overrides or {})
        process = RoleProcess(name, args, env, self.logs)
        self.processes.append(process)
        return process

    def consumer(self, group: str, *, member: str = "k1") -> RoleProcess:
        """A `coffeebus consume GROUP` process with static member id `member`."""
        return self.process(f"{group}-{member}", ["consume", group, "--static-member-id", member])

    def tracebacks(self) -> list[str]:
        """Tracebacks in any role process's stderr."""
        return [t for p in self.processes for t in p.tracebacks()]

    async def close(self) -> None:
        await super().close()
        for process in self.processes:
            process.stop()


@pytest.fixture
async def chaos_system(
    private_kafka: str, redis_url: str, mongo_url: str, tmp_path: Path
) -> AsyncIterator[ChaosSystem]:
    suffix = uuid.uuid4().hex[:12]
    topology_file = write_topology(tmp_path / "topology.yaml", suffix)
    topology = load_topology(topology_file)
    await apply(topology, private_kafka)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=private_kafka, linger_ms=1),
        mongo=MongoSettings(url=mongo_url, database=f"cbchaos_{suffix}"),
        redis=RedisSettings(url=redis_url, key_prefix=f"cbchaos:{suffix}:"),
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        async with open_runtime(
            settings, Mode.REAL, client_id=f"chaos-{suffix}", topology=topology
        ) as runtime:
            # Role processes handle every record of their topics, and the private broker
            # is the whole session's: they start at the ends, not at earlier tests' records
            # (whose group conversations, g:1 and up, would collide with this test's).
            await commit_ends(
                private_kafka,
                topology,
                [(spec.group_id, spec.topics) for spec in topology.groups.values()],
            )
            await runtime.sections.reserve(GROUP_ID_TIMELINE, random.randrange(1 << 40, 1 << 47))
            system = ChaosSystem(
                runtime, kafka_bootstrap=private_kafka, topology_file=topology_file, logs=logs
            )
            try:
                yield system
            finally:
                await system.close()
    finally:
        await _cleanup(settings, [])
