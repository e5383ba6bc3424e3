"""The consumer groups: one module per group, named after it, registered by a decorator.

A group module defines a class with a ``handle(records)`` coroutine and registers a factory::

    @consumer_group("msg")
    def build(runtime: Runtime) -> Handler: ...

The factory takes what the group is built from (`consumers.runtime.Runtime`, a protocol the
composition root's runtime satisfies). `coffeebus consume msg fanout` (and `coffeebus run`)
look the factories up here; the group's Kafka group id and topics come from topology.yaml,
never from the module. Handlers decode, call domain code and publish their `Effects`; the bus
runner owns commit, retry and dead-letter (bus.runner).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from bus.base import Record, TopicPartition

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = [
    "GROUP_MODULES",
    "GroupHandler",
    "available_groups",
    "consumer_group",
    "factory",
    "known_groups",
]

#: Every group and the module implementing it (imported on demand).
GROUP_MODULES: dict[str, str] = {
    "msg": "consumers.msg",
    "fanout": "consumers.fanout",
    "ack": "consumers.ack",
    "query": "consumers.query",
    "group": "consumers.group",
    "timer": "consumers.timer",
    "push": "consumers.push",
    "biz": "consumers.biz",
    "call": "consumers.call",
    "room": "consumers.room",
    "webhook": "consumers.webhooks",
    "projection": "consumers.projection",
}


class GroupHandler(Protocol):
    """What one member of a consumer group runs."""

    async def handle(self, records: Sequence[Record]) -> None:
        """Handle a batch of records of one partition (raise to retry or dead-letter)."""

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """This member now owns `partitions` (it must forget cached state of others)."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """This member no longer owns `partitions` (their batches are committed)."""

    async def close(self) -> None:
        """Flush what the handler buffers (e.g. batched ack times) before the member leaves."""


Factory = Callable[["Runtime"], GroupHandler]
_FACTORIES: dict[str, Factory] = {}


def consumer_group(name: str) -> Callable[[Factory], Factory]:
    """Register the factory of group `name` (a key of `GROUP_MODULES`)."""
    if name not in GROUP_MODULES:
        raise ValueError(f"unknown consumer group {name!r}: add it to GROUP_MODULES")

    def register(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return register


def known_groups() -> Sequence[str]:
    """The groups a process can run, in pipeline order."""
    return tuple(GROUP_MODULES)


def available_groups() -> Sequence[str]:
    """The known groups whose module exists in this installation, in pipeline order
    (`coffeebus run` runs these; a group still being written is left out)."""
    return tuple(g for g in GROUP_MODULES if importlib.util.find_spec(GROUP_MODULES[g]))


def factory(name: str) -> Factory:
    """The factory of group `name`, importing its module; `KeyError` for an unknown name."""
    module = GROUP_MODULES[name]
    if name not in _FACTORIES:
        importlib.import_module(module)
    try:
        return _FACTORIES[name]
    except KeyError:
        raise KeyError(f"module {module} does not register group {name!r}") from None
