"""The ``push`` group: offline push requests from ``im.push`` to the users' devices.

The timer group publishes a `schemas.events.PushRequest` (keyed by user) when no device of
the user acked a message in time. Per batch:

1. decode the requests (undecodable → `Reject` → DLQ);
2. read the devices of the batch's users in one query (`store.push_tokens`);
3. claim each request that has a device in the push log (`store.push_log`, one bulk insert by
   ``_id`` = ``"<user>|<conversation>|<seq>"``): a request claimed before — a replayed
   record, or the same message's timer fired twice — is dropped. Claiming only after the
   device read means a transient store error before it leaves nothing claimed, so the retried
   batch still pushes; claiming *before* sending makes a push at most once per device;
4. send every (request, device) through the device's provider, concurrently (at most
   `MAX_CONCURRENT_SENDS` in flight); a provider retries transient failures a bounded
   number of times, then the push counts as failed — a dead provider never stalls the
   partition for longer than its retries;
5. remove the tokens a provider reported as invalid (`PushTokenStore.discard_invalid`).

Devices of a provider that is not configured are skipped. `PushStats` counts outcomes per
provider (metrics-friendly: monotonic counters), and so does ``coffeebus_pushes_total``
(`telemetry.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from bus.base import Record, Reject, TopicPartition
from consumers.push_providers.base import Outcome, Provider, notification_for
from consumers.push_providers.configured import configured_providers
from consumers.registry import consumer_group
from schemas.errors import EnvelopeError
from schemas.events import PushRequest, decode_push_request
from schemas.ids import UserId
from store.clock import Clock, SystemClock
from store.push_log import PushLog
from store.push_tokens import PushDevice, PushTokenStore
from telemetry.metrics import PUSHES

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["MAX_CONCURRENT_SENDS", "PushHandler", "PushStats", "build"]

log = logging.getLogger(__name__)

#: provider requests one member has in flight at most
MAX_CONCURRENT_SENDS: Final = 64


class PushStats:
    """Counters of one push member (monotonic; for metrics and tests)."""

    def __init__(self) -> None:
        #: requests handled (counted once their pushes are sent), and those dropped as
        #: already pushed or without devices
        self.requests = 0
        self.duplicates = 0
        self.no_device = 0
        #: (provider, outcome) → pushes
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()
        #: tokens removed because their provider reported them invalid
        self.tokens_removed = 0


class PushHandler:
    """Handles batches of ``im.push`` (see the module docstring)."""

    def __init__(
        self,
        *,
        tokens: PushTokenStore,
        push_log: PushLog,
        providers: Mapping[str, Provider],
        clock: Clock | None = None,
    ) -> None:
        self._tokens = tokens
        self._log = push_log
        self._providers = dict(providers)
        self._clock = clock or SystemClock()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        self.stats = PushStats()

    async def handle(self, records: Sequence[Record]) -> None:
        """Push the batch's requests (module docstring)."""
        requests = [_decode(record) for record in records]
        devices = await self._tokens.devices_of({r.user_id for r in requests})
        wanted = [r for r in requests if devices.get(r.user_id)]
        self.stats.no_device += len(requests) - len(wanted)
        if wanted:
            await self._push(wanted, devices)
        self.stats.requests += len(requests)

    async def _push(
        self, wanted: Sequence[PushRequest], devices: Mapping[UserId, Sequence[PushDevice]]
    ) -> None:
        claimed = await self._log.claim([r.dedupe_key for r in wanted], self._clock.now_ms())
        sends = [
            (request, device)
            for request, mine in zip(wanted, claimed, strict=True)
            if mine
            for device in devices[request.user_id]
        ]
        self.stats.duplicates += claimed.count(False)
        outcomes = await asyncio.gather(*(self._send(r, d) for r, d in sends))
        invalid = [
            device
            for (_, device), o in zip(sends, outcomes, strict=True)
            if o is Outcome.INVALID_TOKEN
        ]
        for device in {d.key: d for d in invalid}.values():
            if await self._tokens.discard_invalid(device):
                self.stats.tokens_removed += 1
                log.info(
                    "push: removed user %d's %s token (the provider says it is invalid)",
                    device.user_id,
                    device.provider.value,
                )

    async def _send(self, request: PushRequest, device: PushDevice) -> Outcome:
        provider = self._providers.get(device.provider.value)
        if provider is None:
            outcome = Outcome.SKIPPED
        else:
            async with self._slots:
                outcome = await provider.send(device, notification_for(request))
        self.stats.outcomes[(device.provider.value, outcome)] += 1
        PUSHES.labels(provider=device.provider.value, result=outcome.value).inc()
        return outcome

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Close the providers' HTTP clients."""
        for provider in self._providers.values():
            await provider.aclose()


def _decode(record: Record) -> PushRequest:
    try:
        return decode_push_request(record.value)
    except EnvelopeError as exc:
        raise Reject(str(exc)) from exc


@consumer_group("push")
def build(runtime: Runtime) -> PushHandler:
    """The push handler on the runtime's token store and push log, with the providers the
    ``[push]`` settings enable."""
    providers = configured_providers(runtime.settings.push)
    if not providers:
        log.warning("push: no provider is configured ([push] settings): pushes are skipped")
    return PushHandler(tokens=runtime.push_tokens, push_log=runtime.push_log, providers=providers)
