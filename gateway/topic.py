"""Creating a gate's own topic, on whichever bus the gate runs.

The gate topic is the one topic created at run time (from the ``gate`` template of
topology.yaml). On Kafka it is created with `bus.admin.apply_topics`, which is idempotent and
tolerates another process creating it at the same moment; on the in-memory bus it is
declared with `MemoryBus.create_topic`. Any other bus must already have it.
"""

from __future__ import annotations

import logging

from bus.admin import apply_topics
from bus.base import Bus
from bus.kafka import KafkaBus
from bus.memory import MemoryBus
from bus.topology import TopicSpec

__all__ = ["ensure_gate_topic"]

log = logging.getLogger(__name__)


async def ensure_gate_topic(bus: Bus, spec: TopicSpec) -> None:
    """Make sure the topic `spec` exists on `bus` with its declared partitions and configs."""
    if isinstance(bus, MemoryBus):
        bus.create_topic(spec.name, spec.partitions)
        return
    if isinstance(bus, KafkaBus):
        for action in await apply_topics([spec], bus.bootstrap_servers):
            log.info("gate topic %s: %s %s", spec.name, action.kind, action.detail)
        return
    await bus.partitions_for(spec.name)  # raises UnknownTopicError if it is not there
