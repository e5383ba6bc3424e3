"""Running the roles of a `Runtime`: the gate, the HTTP API, and the process life cycle.

`coffeebus gateway`, `coffeebus api` and `coffeebus run` (every role in one process) all go
through `serve`: start the roles, wait for SIGTERM / SIGINT (or a role ending on its own),
then stop them in reverse order — the gate drains its connections, consumers finish and
commit their in-flight batches — before the runtime closes the bus and the stores.

With ``[observability] metrics_port`` set, `serve` also runs the process's metrics and
health listener (`telemetry.http`): up before the first role starts and down after the
last one stopped, so ``/healthz`` answers throughout and ``/readyz`` says "ready" only
while every role runs and the runtime's stores answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from bus.base import DEFAULT_BATCH_MAX, BatchLinger, Consumer
from coffeebus.settings import ProcessSettings
from coffeebus.wiring import Runtime
from consumers.registry import factory
from gateway.server import Gate
from telemetry.http import ReadinessCheck, TelemetryServer

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["ApiRole", "ConsumerRole", "GateRole", "Role", "serve", "tune_process"]

log = logging.getLogger(__name__)


class Role(Protocol):
    """Something a process runs: started, then stopped gracefully."""

    name: str
    #: what the role runs on (every role of a process shares one)
    runtime: Runtime

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait(self) -> None:
        """Return if the role ended on its own (a crash raises)."""


class GateRole:
    """A gate (TCP + WebSocket listeners) on the runtime's bus and stores."""

    name = "gateway"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings.with_gate_id()
        self.gate = Gate(
            settings.gateway,
            bus=runtime.bus,
            user_store=runtime.users,
            route_store=runtime.routes,
            topology=runtime.topology,
            login_settings=settings.login,
            login_throttle=runtime.login_throttle,
            password_pool=runtime.passwords,
            room_store=runtime.rooms,
            room_settings=settings.rooms,
        )
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.gate.start()

    async def stop(self) -> None:
        await self.gate.stop()
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


class ApiRole:
    """The HTTP server API (uvicorn) on the runtime's stores and bus."""

    name = "api"

    def __init__(self, runtime: Runtime) -> None:
        # Imported here, not at module level: the web framework is a second or more of
        # import time that gate and consumer processes would pay at every (re)start.
        from producers.app import Pipeline, create_app  # noqa: PLC0415

        self.runtime = runtime
        self._settings = runtime.settings.api
        self._app: Litestar = create_app(
            runtime.settings.api,
            runtime.users,
            runtime.routes,
            pipeline=Pipeline(
                bus=runtime.bus,
                topology=runtime.topology,
                groups=runtime.groups,
                messages=runtime.messages,
                max_msg_data_bytes=runtime.settings.messaging.max_msg_data_bytes,
                group_limits=runtime.group_limits,
                rooms=runtime.rooms,
                room_settings=runtime.settings.rooms,
            ),
            idempotency=runtime.idempotency,
            push_tokens=runtime.push_tokens,
            readiness_checks=runtime.readiness,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from producers.app import serve_api  # noqa: PLC0415

        ready = asyncio.Event()
        self._task = asyncio.create_task(
            serve_api(self._app, self._settings, ready=ready), name="api"
        )
        # Started means answering: wait for the server's start-up (a port in use, or an
        # application that fails to start, ends the task instead).
        waiting = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if self._task.done():
            self._task.result()
            raise RuntimeError("the HTTP API ended while starting")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


class ConsumerRole:
    """One member of a consumer group (topology.yaml names its group id and topics)."""

    def __init__(
        self, runtime: Runtime, group: str, *, static_member_id: str | None = None
    ) -> None:
        self.runtime = runtime
        self.group = group
        self.name = f"consumer {group}"
        spec = runtime.topology.group(group)
        self.handler = factory(group)(runtime)
        # The handler hears of partition changes: it forgets what it cached for partitions
        # it may no longer own (seq sections above all, DESIGN invariant 2).
        # A handler may ask for larger batches than the bus's default (the projection),
        # and to let the broker fill them (`bus.base.BatchLinger`).
        batch_max: int = getattr(self.handler, "batch_max", DEFAULT_BATCH_MAX)
        batch_linger: BatchLinger | None = getattr(self.handler, "batch_linger", None)
        # The groups of the message path gather their batches (`[kafka] gather_ms`).
        gather: bool = getattr(self.handler, "gather", False)
        self.consumer: Consumer = runtime.bus.consumer(
            spec.group_id,
            spec.topics,
            self.handler.handle,
            batch_max=batch_max,
            batch_linger=batch_linger,
            gather=gather,
            static_member_id=static_member_id,
            listener=self.handler,
        )

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.handler.close()

    async def wait(self) -> None:
        await self.consumer.join()


@contextlib.asynccontextmanager
async def _signals() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


class _Running:
    """The readiness check "every role has started and none has ended"."""

    def __init__(self, roles: Sequence[Role]) -> None:
        self._roles = roles
        self.started = False
        self.waiters: Sequence[asyncio.Future[None]] = ()

    async def __call__(self) -> None:
        if not self.started:
            raise RuntimeError("starting")
        ended = [r.name for r, w in zip(self._roles, self.waiters, strict=True) if w.done()]
        if ended:
            raise RuntimeError(f"ended: {', '.join(ended)}")


@contextlib.asynccontextmanager
async def _telemetry(roles: Sequence[Role], running: _Running) -> AsyncIterator[None]:
    """The metrics and health listener when ``[observability] metrics_port`` is set."""
    if not roles or not roles[0].runtime.settings.observability.metrics_port:
        yield
        return
    runtime = roles[0].runtime
    observability = runtime.settings.observability
    checks: list[tuple[str, ReadinessCheck]] = [("roles", running), *runtime.readiness]
    server = TelemetryServer(observability.metrics_host, observability.metrics_port, checks=checks)
    await server.start()
    try:
        yield
    finally:
        await server.stop()


def tune_process(settings: ProcessSettings) -> None:
    """Apply ``[process]``: lower the process's CPU priority by `nice`; collect and freeze
    what the process holds now (its modules, clients, caches), then set the generation
    thresholds. Called once the roles have started, so what they built at start-up is never
    walked again."""
    if settings.nice:
        os.nice(settings.nice)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*settings.gc_thresholds)
    log.debug(
        "collector: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )


#: Called before each role starts: (the role, how many started before it, how many in all).
Progress = Callable[[Role, int, int], None]


async def serve(
    roles: Sequence[Role],
    *,
    ready: Callable[[], str] | None = None,
    progress: Progress | None = None,
) -> None:
    """Start `roles` in order, run until a signal or until one ends, stop them in reverse.

    `ready()` is printed (to stdout) once every role has started. `progress`, when given, is
    told of each role as it starts (and the per-role "started" lines are logged at DEBUG
    instead of INFO: the caller shows progress its own way). With ``[observability]
    metrics_port`` set, the metrics and health listener runs around them (module doc).
    """
    running = _Running(roles)
    async with _telemetry(roles, running):
        await _serve(roles, running, ready, progress)


async def _serve(
    roles: Sequence[Role],
    running: _Running,
    ready: Callable[[], str] | None,
    progress: Progress | None,
) -> None:
    started: list[Role] = []
    level = logging.INFO if progress is None else logging.DEBUG
    async with _signals() as stop:
        try:
            for role in roles:
                if progress is not None:
                    progress(role, len(started), len(roles))
                await role.start()
                started.append(role)
                log.log(level, "%s started", role.name)
            if ready:
                print(ready(), flush=True)
            if started:
                tune_process(started[0].runtime.settings.process)
            waiters = [asyncio.ensure_future(role.wait()) for role in started]
            running.waiters, running.started = waiters, True
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            for task in [stopper, *waiters]:
                task.cancel()
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    log.error("a role ended with an error", exc_info=task.exception())
            log.info("stopping: %s", ", ".join(r.name for r in reversed(started)))
        finally:
            running.started = False
            for role in reversed(started):
                try:
                    await role.stop()
                except Exception:
                    log.exception("%s did not stop cleanly", role.name)
