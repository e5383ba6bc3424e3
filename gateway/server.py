"""The gate: listeners, logins, routes, uplink publishing and downlink delivery.

`Gate` is wired the same way in the embedded all-in-one process (MemoryBus, memory stores)
and in the real one (KafkaBus, Mongo/Redis stores)::

    gate = Gate(settings.gateway, bus=bus, user_store=users, route_store=routes,
                topology=topology)
    await gate.start()      # gate topic, downlink consumer, registry, listeners
    ...
    await gate.stop()       # SIGTERM: drain

Decisions, with their reasons:

- **Connection ids** start from the boot time in microseconds and count up, so they never
  repeat under one gate id across restarts (as `schemas.ids` requires): a record left in
  the gate topic for a connection of the previous process finds no connection here.
- **Downlink start position.** The gate consumes its own topic in its own consumer group,
  ``coffeebus.<topic>`` (one member; the topic is the gate's alone). The bus resets a new
  group to the earliest offset and has no "latest" reset, so a gate starts from its group's
  committed offset: a fresh gate id finds an empty topic, a restarted one reads only what
  arrived while it was down — all of it addressed to connections of its previous process,
  which the connection ids above make unknown, so it is dropped and counted
  (`GateStats.downlink_unknown`). Delivery checks the target's user as well as its id.
- **Route TTL refresh** is batched, not one write per heartbeat: every
  `heartbeat_interval_s` the gate re-arms the TTL of every user logged in here (one call
  per user, at most `REFRESH_CONCURRENCY` in flight), and routes live
  ``idle_timeout + heartbeat_interval``. A heartbeat keeps its connection (and so its
  route) alive through the core's idle timer; a silent connection is closed and its route
  removed. A route found lapsed (e.g. Redis restarted) is registered again. Measured on
  the 2-core dev box against local Redis: 10,000 users refresh in 1.0 s at 32 in flight
  (1.75 s one at a time), so 50,000 connections cost ~5 s of Redis calls per minute — the
  same number of writes as one per heartbeat, but without a write on the heartbeat path.
  A pipelined ``refresh_many`` in the route store would cut that further.
- **Multi-login** (settings.multi_login): ``kick_same_type`` (default) kicks the route that
  `RouteStore.register` replaced; ``kick_all`` also kicks and unregisters the user's routes
  of other client types; ``allow_all`` kicks nobody — but the route store keeps one route
  per client type, so only the newest connection of a type receives pushes (older ones
  still get replies to their own requests). A kick of a connection on this gate is local;
  on another gate it is a `Kick` record on that gate's topic.
- **Presence events.** A login publishes ``user.online`` and the end of a logged-in
  connection ``user.offline`` on ``biz.events.user`` (`schemas.bizevents`, keyed by user):
  online is durable before the route becomes the connection's, so its offline — published
  after the route is removed — always follows it. They are best effort: a bus failure is
  logged and counted (`GateStats.events_failed`), it does not refuse the login; a gate that
  dies without draining sends no offline (its routes lapse after their TTL).
- **Publishing** queues a connection's frames on the bus in the order it sent them
  (`Bus.enqueue`: per partition, that is the order they are stored in) and goes on to the
  next frame without waiting for the broker: up to `UPLINK_IN_FLIGHT` records of one
  connection may be on their way, beyond that its next frame waits for the oldest. A sender
  that sends ten messages at once so costs one round trip, not ten one after the other, and
  the msg group finds them together. A record that fails answers its frame with ErrorRsp
  INTERNAL_ERROR (retriable) so nothing is lost silently; a draining gate waits for what is
  in flight.
- **Logins** (docs/security.md, "Logins"). Before a credential is checked, the failed-login
  throttle (`store.login_throttle`, in Redis: shared by every gate) is asked about the
  address and, for a password login, the account; one that is backing off is refused at once
  with ErrorRsp RATE_LIMITED, and so is a password login when the user store's password pool
  is full (`store.passwords.PasswordPoolFull`). "Who are you" has one answer per login kind:
  an unknown user id and a wrong token are both LOGIN_INVALID_USER_TOKEN, an unknown name and
  a wrong password both LOGIN_INVALID_USER_OR_PWD (an unknown name still costs a hash); the
  reason is logged, never told. A failure counts against the address (and the account); a
  success resets the account. A banned user — whose credential checked out — gets ErrorRsp
  FORBIDDEN.
- **Session administration** (`producers.admin`). The server API sends `KickUser` to every
  live gate; the gate closes the user's connections it selects, each after a KickNotify
  (ADMIN, TOKEN_REVOKED, BANNED, ACCOUNT_DELETED). The API changed the user store first, so
  a login checked after the record arrived sees the change; a login whose check began
  before a `KickUser` for its user arrived is checked again before it is accepted, so none
  slips between the two.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import itertools
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple

import msgspec
from websockets.asyncio.server import Server as WsServer

from bus.base import Bus, Consumer, Record, RecordMeta
from bus.topology import Topology
from gateway.admission import ConnectionRateLimiter, peer_address
from gateway.core import (
    Connection,
    ConnectionClosed,
    ConnectionLimits,
    Event,
    LoginRequested,
    LogoutRequested,
    PasswordLoginRequested,
    TokenLoginRequested,
    UplinkFrame,
)
from gateway.rooms import GateRooms, Refused, RoomConnection
from gateway.session import GateConnection, Link
from gateway.settings import GatewaySettings, LoginSettings, MultiLoginPolicy
from gateway.tcp import serve_tcp
from gateway.topic import ensure_gate_topic
from gateway.uplink import InvalidRequest, build_envelope, record_key
from gateway.ws import serve_ws
from schemas import ids
from schemas.bizevents import (
    BizTopic,
    UserOffline,
    UserOnline,
    encode_event,
    event_id,
    event_type,
)
from schemas.codes import ErrorCode, ExtResultCode, KickReason
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import (
    Deliver,
    GateBatch,
    Kick,
    KickUser,
    Reply,
    RoomClose,
    RoomDeliver,
    Target,
    decode_gate_record,
    encode_envelope,
    encode_gate_record,
    now_ms,
    token_digest,
)
from schemas.errors import EnvelopeError
from schemas.ids import TraceId, new_trace_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2
from schemas.settings import RoomSettings
from store import ids as store_ids
from store.login_throttle import LoginThrottle, Subject, SubjectKind, address_subject
from store.memory.login_throttle import MemoryLoginThrottle
from store.memory.rooms import MemoryRoomStore
from store.passwords import PasswordPool, PasswordPoolFull
from store.rooms import RoomStore
from store.routes import Route, RouteStore
from store.users import TokenStatus, User, UserStore
from telemetry.metrics import (
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    KICKED_BY_ADMIN,
    LOGINS,
    UPLINK_PUBLISH_FAILED,
)

__all__ = ["Gate", "GateStats", "gate_group_id"]

log = logging.getLogger(__name__)

REFRESH_CONCURRENCY = 32
#: How often the gate reports itself to the live-gate registry, and the report's TTL.
REGISTRY_INTERVAL_S = 10.0
REGISTRY_TTL_S = 30.0
#: Uplink records one connection may have queued and not yet durable; its next frame waits
#: for the oldest beyond that (a bound on what a fast sender holds in the producer).
UPLINK_IN_FLIGHT = 16
#: Background tasks named so are awaited by `Gate.stop` (the others are cancelled).
_DRAIN_PREFIX = "gate-drain-"
_TRANSPORTS = ("tcp", "ws")
_OPEN = {t: CONNECTIONS.labels(transport=t) for t in _TRANSPORTS}
_REFUSED = {t: CONNECTIONS_REFUSED.labels(transport=t) for t in _TRANSPORTS}
_LOGINS = {
    r: LOGINS.labels(result=r) for r in ("ok", "failed", "throttled", "busy", "banned", "error")
}
#: How long a connection refused because the password pool was full waits before its next
#: login (an earlier one is refused by the core, unchecked).
BUSY_RETRY_S = 1.0
#: How long a gate remembers that a `KickUser` arrived for a user: longer than any login
#: takes from its check to its answer (the login timeout bounds that).
KICK_MEMORY_S = 60.0


class _Sent(NamedTuple):
    """An uplink frame whose record is on its way: what its outcome is logged and answered
    with."""

    conn: GateConnection
    seq: int
    command_id: int
    command: str
    topic: str
    trace_id: TraceId


def _on_their_way(conn: GateConnection) -> int:
    """How many uplink records of `conn` are not durable yet, once those that landed at the
    head of its queue are dropped (an emptied queue is freed: an idle connection holds
    none)."""
    pending = conn.publishing
    if pending is None:
        return 0
    while pending and pending[0].done():
        pending.popleft()
    if not pending:
        conn.publishing = None
    return len(pending)


def gate_group_id(topic: str) -> str:
    """The consumer group a gate reads its topic `topic` (``im.gate.<id>``) with."""
    return f"coffeebus.{topic}"


class GateStats(msgspec.Struct, kw_only=True):
    """Counters for logs and tests."""

    accepted: int = 0
    refused: int = 0
    #: of `refused`: above the per-address connection rate (gateway/admission.py)
    refused_rate: int = 0
    published: int = 0
    publish_failed: int = 0
    downlink_frames: int = 0
    downlink_unknown: int = 0
    downlink_bad_records: int = 0
    kicks_sent: int = 0
    route_refreshes: int = 0
    events_failed: int = 0
    #: logins refused for a wrong or unknown credential
    logins_failed: int = 0
    #: logins refused unchecked: the failed-login back-off, the password pool full
    logins_throttled: int = 0
    logins_busy: int = 0
    #: connections closed by `KickUser` records (session administration)
    admin_kicks: int = 0
    #: room requests refused by the gate (ErrorRsp)
    room_refused: int = 0


class Gate:
    """One gate process's logic; see the module docstring."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        bus: Bus,
        user_store: UserStore,
        route_store: RouteStore,
        topology: Topology,
        registry_interval_s: float = REGISTRY_INTERVAL_S,
        login_settings: LoginSettings | None = None,
        login_throttle: LoginThrottle | None = None,
        password_pool: PasswordPool | None = None,
        room_store: RoomStore | None = None,
        room_settings: RoomSettings | None = None,
    ) -> None:
        """`login_throttle`: where failed logins are counted (Redis on the real services,
        shared by every gate; default: this gate's memory). `password_pool`: the user
        store's, asked first so that a password login it cannot verify costs nothing more.
        `room_store`: the chat rooms (Redis on the real services, shared by every gate and
        the room group; default: this gate's memory)."""
        self.settings = settings
        if not settings.gate_id:
            raise ValueError("the gate needs a gate_id (Settings.with_gate_id() makes one)")
        self.gate_id = ids.gate_id(settings.gate_id)
        self._bus = bus
        self._users = user_store
        self._routes = route_store
        self._topology = topology
        self._topic = topology.gate_topic(self.gate_id)
        # Resolve every uplink topic now: a topology without one fails at start, not later.
        self._uplink = {t: topology.topic(t.value).name for t in UplinkTopic}
        self._presence_topic = topology.topic(BizTopic.USERS).name
        self._limits = ConnectionLimits(
            max_frame_size=settings.max_frame_size,
            login_timeout_s=settings.login_timeout_s,
            idle_timeout_s=settings.idle_heartbeats * settings.heartbeat_interval_s,
            rate_per_s=settings.rate_limit_per_s,
            rate_burst=settings.rate_limit_burst,
            frame_timeout_s=settings.frame_timeout_s,
        )
        self._admission = ConnectionRateLimiter(
            rate=settings.conn_rate_per_ip,
            burst=settings.conn_burst_per_ip,
            exempt=settings.conn_rate_exempt,
        )
        login = login_settings or LoginSettings()
        self._throttle = login_throttle or MemoryLoginThrottle()
        self._passwords = password_pool
        self._login_exempt = tuple(
            ipaddress.ip_network(n, strict=False) for n in login.address_exempt
        )
        #: user id -> when (loop time) a `KickUser` for the user last arrived
        self._kicked_at: dict[int, float] = {}
        self.route_ttl_s = self._limits.idle_timeout_s + settings.heartbeat_interval_s
        self._registry_interval_s = registry_interval_s
        self._conn_ids = itertools.count(time.time_ns() // 1000)
        self._conns: dict[int, GateConnection] = {}
        self._by_user: dict[int, set[GateConnection]] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Uplink records queued and not yet durable (`_publish`), which a drain waits for.
        self._in_flight: set[asyncio.Future[RecordMeta]] = set()
        self._consumer: Consumer | None = None
        self._tcp: asyncio.Server | None = None
        #: (TCP, WebSocket) ports bound at start
        self._ports: tuple[int, int] | None = None
        self._ws: WsServer | None = None
        self._accepting = False
        self._last_refusal_log = 0.0
        self.stats = GateStats()
        self._room_settings = room_settings or RoomSettings()
        self.rooms = GateRooms(
            gate_id=self.gate_id,
            store=room_store or MemoryRoomStore(),
            settings=self._room_settings,
            spawn=self._spawn,
        )

    # -- life cycle --------------------------------------------------------------------------

    @property
    def topic(self) -> str:
        """This gate's downlink topic."""
        return self._topic.name

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def tcp_port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        assert self._ports is not None, "gate not started"
        return self._ports[0]

    @property
    def ws_port(self) -> int:
        """The bound WebSocket port."""
        assert self._ports is not None, "gate not started"
        return self._ports[1]

    async def start(self) -> None:
        """Create and consume the gate topic, then listen; returns once serving."""
        await ensure_gate_topic(self._bus, self._topic)
        await self.rooms.start()
        self._consumer = self._bus.consumer(
            gate_group_id(self._topic.name), [self._topic.name], self._on_records
        )
        await self._consumer.start()
        tls = self._ssl_context()
        s = self.settings
        self._accepting = True
        self._tcp = await serve_tcp(
            self,
            host=s.host,
            port=s.tcp_port,
            ssl_context=tls,
            send_queue_frames=s.send_queue_frames,
        )
        self._ws = await serve_ws(
            self,
            host=s.host,
            port=s.ws_port,
            ssl_context=tls,
            max_frame_size=s.max_frame_size,
            send_queue_frames=s.send_queue_frames,
        )
        # Read once while listening: a registry report racing stop() must not find the
        # servers' socket lists already emptied.
        self._ports = (
            int(self._tcp.sockets[0].getsockname()[1]),
            int(self._ws.sockets[0].getsockname()[1]),
        )
        await self._report()
        self._spawn(self._every(self._registry_interval_s, self._report), "gate-registry")
        self._spawn(self._every(s.heartbeat_interval_s, self._refresh_routes), "gate-refresh")
        self._spawn(
            self._every(self._room_settings.presence_interval_s, self.rooms.check_presence),
            "gate-room-presence",
        )
        log.info(
            "gate %s: TCP %s:%d, WebSocket %s:%d%s, topic %s",
            self.gate_id,
            s.host,
            self.tcp_port,
            s.host,
            self.ws_port,
            " (TLS)" if tls else "",
            self._topic.name,
        )

    async def stop(self) -> None:
        """Drain: stop accepting, stop the downlink (commit), close every connection with a
        KickNotify (SERVER_SHUTDOWN), remove their routes, leave the registry."""
        self._accepting = False
        if self._tcp is not None:
            self._tcp.close()
        if self._ws is not None:
            self._ws.close(close_connections=False)
        if self._consumer is not None:
            await self._consumer.stop()
        for conn in list(self._conns.values()):
            conn.kick(KickReason.SERVER_SHUTDOWN, text="gate shutting down")
        # Closed connections leave through `connection_closed`, which starts their route
        # removal; wait for those, for requests still being handled and for uplink records
        # still on their way.
        pending: set[asyncio.Future[Any]] = {
            t for t in self._background if t.get_name().startswith(_DRAIN_PREFIX)
        }
        pending |= {c.worker for c in self._conns.values() if c.worker is not None}
        pending |= self._in_flight
        if pending:
            await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.rooms.stop()
        with contextlib.suppress(Exception):
            await self._routes.gate_down(store_ids.GateId(self.gate_id))
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._ws is not None:
            await self._ws.wait_closed()
        log.info("gate %s stopped: %s", self.gate_id, self.stats)

    # -- connections -------------------------------------------------------------------------

    def accept(self, link: Link) -> GateConnection | None:
        """A new client connection, or None when draining, full, or its address opens
        connections too fast (the shell hangs up)."""
        now = time.monotonic()
        why = ""
        if not self._accepting:
            why = "draining"
        elif len(self._conns) >= self.settings.max_connections:
            why = f"{len(self._conns)} connections"
        elif not self._admission.allow(peer_address(link.peer), now):
            why = "its address opens connections too fast"
            self.stats.refused_rate += 1
        if why:
            self.stats.refused += 1
            _REFUSED[link.transport].inc()
            if now - self._last_refusal_log >= 1.0:  # a flood of refusals logs once a second
                self._last_refusal_log = now
                log.warning(
                    "gate %s: refused %s (%s; %d refused so far)",
                    self.gate_id,
                    link.peer,
                    why,
                    self.stats.refused,
                )
            return None
        conn = GateConnection(
            self, link, next(self._conn_ids), limits=self._limits, loop=asyncio.get_running_loop()
        )
        self._conns[conn.conn_id] = conn
        self.stats.accepted += 1
        _OPEN[link.transport].inc()
        return conn

    def connection_closed(self, conn: GateConnection, event: ConnectionClosed) -> None:
        """Forget the connection and remove its route (compare-and-delete, in background)."""
        if self._conns.pop(conn.conn_id, None) is not None:
            _OPEN[conn.transport].dec()
        user_id = conn.core.user_id
        peers = self._by_user.get(user_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_user[user_id]
        self.rooms.connection_closed(conn.conn_id, user_id, user_id not in self._by_user)
        route = conn.route
        if route is None:  # never logged in, or logged out (route already removed)
            return
        conn.route = None
        self._spawn(
            self._unregister(user_id, route, offline="closed"),
            f"{_DRAIN_PREFIX}unroute-{conn.conn_id}",
        )

    async def handle(self, conn: GateConnection, event: Event) -> None:
        """Handle one event of `conn` that needs the stores or the bus."""
        if isinstance(event, UplinkFrame):
            if event.spec.topic is None or event.spec.cmd == Cmd.ROOM_SEND_REQ:
                await self._room_request(conn, event)
            else:
                await self._publish(conn, event)
        elif isinstance(event, LogoutRequested):
            await self._logout(conn, event)
        elif isinstance(event, TokenLoginRequested | PasswordLoginRequested):
            await self._login(conn, event)

    # -- login / logout ----------------------------------------------------------------------

    async def _check(self, event: LoginRequested) -> tuple[User | None, str]:
        """The user the credential proves, or None and why not (for the log only)."""
        if isinstance(event, TokenLoginRequested):
            if not 0 < event.user_id <= store_ids.MAX_USER_ID:
                return None, f"user id {event.user_id} out of range"
            check = await self._users.check_token(store_ids.UserId(event.user_id), event.token)
            if check.status is TokenStatus.OK:
                return check.user, ""
            if check.status is TokenStatus.UNKNOWN_USER:
                return None, f"no user {event.user_id}"
            return None, f"wrong token for user {event.user_id}"
        user = await self._users.check_password(event.user_name, event.password)
        if user is None:
            return None, f"unknown name or wrong password for {event.user_name!r}"
        return user.without_password(), ""

    def _subjects(self, conn: GateConnection, event: LoginRequested) -> list[Subject]:
        """What a failure of this login counts against: its address (unless exempt) and, for
        a password login, its account (docs/security.md: why not a token login's)."""
        subjects = []
        if isinstance(event, PasswordLoginRequested):
            subjects.append(Subject(SubjectKind.ACCOUNT, event.user_name[:256]))
        address = peer_address(conn.peer)
        try:
            exempt = any(ipaddress.ip_address(address) in n for n in self._login_exempt)
        except ValueError:
            exempt = False
        if not exempt:
            subjects.append(address_subject(address))
        return subjects

    async def _login(self, conn: GateConnection, event: LoginRequested) -> None:
        core = conn.core
        if not 0 <= event.client_type <= 0xFFFF_FFFF:
            core.login_rejected(
                event, ErrorCode.USER_INVALID_PARAMETER, "bad client type", server_time=_now_s()
            )
            return
        started = asyncio.get_running_loop().time()
        subjects = self._subjects(conn, event)
        pool = self._passwords
        if isinstance(event, PasswordLoginRequested) and pool is not None and pool.full:
            self._busy(event, core)  # refused before a throttle or store round trip
            return
        try:
            wait = await self._throttle.wait_s(subjects)
            if wait > 0:
                self.stats.logins_throttled += 1
                _LOGINS["throttled"].inc()
                core.login_refused(
                    event,
                    ExtResultCode.RATE_LIMITED,
                    f"too many failed logins: retry in {math.ceil(wait)} s",
                    retry_at=asyncio.get_running_loop().time() + wait,
                )
                return
            user, why = await self._check(event)
        except PasswordPoolFull:
            self._busy(event, core)
            return
        except Exception:
            log.exception("gate %s: user store failed during a login", self.gate_id)
            _LOGINS["error"].inc()
            core.login_rejected(
                event, ErrorCode.INTERNAL_ERROR, "internal_error", server_time=_now_s()
            )
            return
        if user is None:
            await self._failed_login(conn, event, subjects, why)
            return
        if isinstance(event, PasswordLoginRequested):
            with contextlib.suppress(Exception):  # a reset that fails only delays a later one
                await self._throttle.succeeded(subjects[0])
        if user.banned:
            _LOGINS["banned"].inc()
            log.info("conn %d: login of banned user %d refused", core.conn_id, user.user_id)
            core.login_refused(event, ExtResultCode.FORBIDDEN, _banned_text(user))
            return
        route = Route(
            gate_id=store_ids.GateId(self.gate_id),
            conn_id=store_ids.ConnId(core.conn_id),
            client_type=event.client_type,
            login_ms=now_ms(),
        )
        try:
            replaced = await self._routes.register(user.user_id, route, ttl=self.route_ttl_s)
        except Exception:
            log.exception("gate %s: route store failed during a login", self.gate_id)
            core.login_rejected(
                event, ErrorCode.INTERNAL_ERROR, "internal_error", server_time=_now_s()
            )
            return
        if core.closed:  # gone while we registered: take the route back out
            self._spawn(self._unregister(user.user_id, route), f"{_DRAIN_PREFIX}unroute-late")
            return
        await self._publish_presence(
            UserOnline(
                id=event_id(UserOnline, self.gate_id, core.conn_id),
                ts=route.login_ms,
                user_id=user.user_id,
                client_type=route.client_type,
                gate_id=self.gate_id,
                conn_id=core.conn_id,
            )
        )
        if not core.closed and self._kicked_at.get(user.user_id, -math.inf) >= started:
            # A KickUser arrived while this login was checked: check again against what the
            # server API changed (module docstring, "Session administration").
            current = await self._recheck(event, user)
            if current is None or current.banned:
                self._spawn(
                    self._unregister(user.user_id, route, offline="closed"),
                    f"{_DRAIN_PREFIX}unroute-late",
                )
                log.info(
                    "conn %d: login of user %d revoked while checked", core.conn_id, user.user_id
                )
                if current is not None:
                    _LOGINS["banned"].inc()
                    core.login_refused(event, ExtResultCode.FORBIDDEN, _banned_text(current))
                else:
                    _LOGINS["failed"].inc()
                    code = _who_are_you(event)
                    core.login_rejected(event, code, code.name.lower(), server_time=_now_s())
                return
        if core.closed:  # gone while announced: its offline follows the online
            self._spawn(
                self._unregister(user.user_id, route, offline="closed"),
                f"{_DRAIN_PREFIX}unroute-late",
            )
            return
        conn.route = route
        conn.token_digest = (
            token_digest(event.token) if isinstance(event, TokenLoginRequested) else b""
        )
        self._by_user.setdefault(user.user_id, set()).add(conn)
        _LOGINS["ok"].inc()
        core.login_accepted(
            event, _user_info(user), now=asyncio.get_running_loop().time(), server_time=_now_s()
        )
        await self._apply_multi_login(user.user_id, route, replaced)
        log.debug("conn %d: user %d logged in", core.conn_id, user.user_id)

    def _busy(self, event: LoginRequested, core: Connection) -> None:
        self.stats.logins_busy += 1
        _LOGINS["busy"].inc()
        core.login_refused(
            event,
            ExtResultCode.RATE_LIMITED,
            f"too many logins at once: retry in {BUSY_RETRY_S:g} s",
            retry_at=asyncio.get_running_loop().time() + BUSY_RETRY_S,
        )

    async def _failed_login(
        self, conn: GateConnection, event: LoginRequested, subjects: list[Subject], why: str
    ) -> None:
        """One answer for "who are you" per login kind; the reason goes to the log."""
        self.stats.logins_failed += 1
        _LOGINS["failed"].inc()
        try:
            wait = await self._throttle.failed(subjects)
        except Exception as exc:
            log.warning("gate %s: could not count a failed login: %r", self.gate_id, exc)
            wait = 0.0
        log.info(
            "conn %d (%s): login refused: %s%s",
            conn.conn_id,
            conn.peer,
            why,
            f"; backing off {wait:g} s" if wait else "",
        )
        code = _who_are_you(event)
        conn.core.login_rejected(event, code, code.name.lower(), server_time=_now_s())

    async def _recheck(self, event: LoginRequested, user: User) -> User | None:
        """The user as a login that raced a `KickUser` now finds it: None when its token is
        no longer the user's or the user is gone (a password login is not verified again:
        a password change closes no session); a banned user is returned, for the caller to
        refuse. A store that fails counts as gone: refusing a login is safe."""
        try:
            if isinstance(event, TokenLoginRequested):
                return (await self._check(event))[0]
            found = await self._users.list_users([store_ids.UserId(user.user_id)])
        except Exception:
            log.exception("gate %s: user store failed re-checking a login", self.gate_id)
            return None
        return found[0] if found else None

    async def _apply_multi_login(self, user_id: int, route: Route, replaced: Route | None) -> None:
        policy = self.settings.multi_login
        if policy is MultiLoginPolicy.ALLOW_ALL:
            return
        victims = [replaced] if replaced is not None else []
        if policy is MultiLoginPolicy.KICK_ALL:
            try:
                others = await self._routes.get(store_ids.UserId(user_id))
            except Exception:
                log.exception("gate %s: route store failed listing user %d", self.gate_id, user_id)
                others = []
            for other in others:
                if not other.same_connection(route) and other.client_type != route.client_type:
                    victims.append(other)
                    await self._unregister(user_id, other)
        for victim in victims:
            await self._kick(user_id, victim, route.client_type)

    async def _kick(self, user_id: int, victim: Route, new_client_type: int) -> None:
        self.stats.kicks_sent += 1
        if str(victim.gate_id) == str(self.gate_id):
            conn = self._conns.get(victim.conn_id)
            if conn is not None and conn.core.user_id == user_id:
                conn.kick(
                    KickReason.DUPLICATE_LOGIN,
                    new_client_type=new_client_type,
                    text="logged in on another device",
                )
            return
        record = Kick(
            target=Target(conn_id=ids.ConnId(victim.conn_id), user_id=ids.UserId(user_id)),
            reason=KickReason.DUPLICATE_LOGIN,
            new_client_type=new_client_type,
            text="logged in on another device",
            trace_id=new_trace_id(),
            ts_ms=now_ms(),
        )
        try:
            topic = self._topology.gate_topic(victim.gate_id).name
            await self._bus.publish(topic, encode_gate_record(record), key=b"%d" % victim.conn_id)
        except Exception as exc:
            # A gate that is gone took its connections with it; its route will lapse.
            log.warning(
                "gate %s: could not kick conn %d of user %d on gate %s: %r",
                self.gate_id,
                victim.conn_id,
                user_id,
                victim.gate_id,
                exc,
            )

    async def _logout(self, conn: GateConnection, event: LogoutRequested) -> None:
        route = conn.route
        if route is not None:
            conn.route = None
            await self._unregister(conn.core.user_id, route, offline="logout")
        conn.core.logout_done(event)

    async def _unregister(
        self, user_id: int, route: Route, *, offline: Literal["logout", "closed"] | None = None
    ) -> None:
        """Remove `route`; with `offline`, then publish the connection's ``user.offline``."""
        try:
            await self._routes.unregister(store_ids.UserId(user_id), route)
        except Exception as exc:
            log.warning(
                "gate %s: could not remove a route of user %d (it will lapse): %r",
                self.gate_id,
                user_id,
                exc,
            )
        if offline is not None:
            await self._publish_presence(
                UserOffline(
                    id=event_id(UserOffline, self.gate_id, route.conn_id),
                    ts=now_ms(),
                    user_id=user_id,
                    client_type=route.client_type,
                    gate_id=self.gate_id,
                    conn_id=route.conn_id,
                    reason=offline,
                )
            )

    async def _publish_presence(self, event: UserOnline | UserOffline) -> None:
        """Publish a presence event, durably; a failure is logged, not raised (module doc)."""
        try:
            await self._bus.publish(self._presence_topic, encode_event(event), key=event.key())
        except Exception as exc:
            self.stats.events_failed += 1
            log.warning(
                "gate %s: could not publish %s of user %d: %r",
                self.gate_id,
                event_type(event),
                event.user_id,
                exc,
            )

    # -- uplink ------------------------------------------------------------------------------

    async def _publish(self, conn: GateConnection, event: UplinkFrame) -> None:
        core, frame, spec = conn.core, event.frame, event.spec
        user_id = ids.UserId(core.user_id)
        assert spec.topic is not None
        try:
            key = record_key(spec, event.message, user_id)
        except InvalidRequest as exc:
            core.send_error(frame.seq, frame.command_id, ExtResultCode.INVALID_PARAMETER, str(exc))
            return
        envelope = build_envelope(
            frame,
            gate_id=self.gate_id,
            conn_id=ids.ConnId(core.conn_id),
            user_id=user_id,
            client_type=core.client_type,
        )
        topic = self._uplink[spec.topic]
        sent = _Sent(conn, frame.seq, frame.command_id, spec.cmd.name, topic, envelope.trace_id)
        try:
            durable = await self._bus.enqueue(topic, encode_envelope(envelope), key=key)
        except Exception as exc:
            self._not_published(sent, exc)
            return
        self._in_flight.add(durable)
        pending = conn.publishing
        if pending is None:
            pending = conn.publishing = collections.deque()
        pending.append(durable)
        durable.add_done_callback(functools.partial(self._published, sent))
        # The connection's next frame waits while too many of its records are on their way.
        while _on_their_way(conn) >= UPLINK_IN_FLIGHT and not core.closed:
            await asyncio.wait((pending[0],))

    def _published(self, sent: _Sent, durable: asyncio.Future[RecordMeta]) -> None:
        """An uplink record is durable, or failed: count it, answer a failure."""
        self._in_flight.discard(durable)
        conn = sent.conn
        _on_their_way(conn)
        exc = asyncio.CancelledError() if durable.cancelled() else durable.exception()
        if exc is not None:
            self._not_published(sent, exc)
            conn.pump()
            return
        self.stats.published += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "conn %d: %s seq %d published to %s",
                conn.conn_id,
                sent.command,
                sent.seq,
                sent.topic,
                extra={"trace_id": sent.trace_id},
            )

    def _not_published(self, sent: _Sent, exc: BaseException) -> None:
        """ErrorRsp INTERNAL_ERROR (retriable) for a frame whose record the bus refused."""
        self.stats.publish_failed += 1
        UPLINK_PUBLISH_FAILED.labels(topic=sent.topic).inc()
        log.warning(
            "gate %s: publish of %s to %s failed: %r",
            self.gate_id,
            sent.command,
            sent.topic,
            exc,
            extra={"trace_id": sent.trace_id},
        )
        core = sent.conn.core
        if not core.closed:
            core.send_error(
                sent.seq, sent.command_id, ExtResultCode.INTERNAL_ERROR, "not accepted, retry"
            )

    async def _room_request(self, conn: GateConnection, event: UplinkFrame) -> None:
        """A chat room request (`gateway.rooms`): join, leave and member count are answered
        here; a send is checked here, then published like any uplink frame."""
        frame, message = event.frame, event.message
        try:
            if isinstance(message, ext_pb2.RoomSendReq):
                self.rooms.check_send(conn, message, asyncio.get_running_loop().time())
                await self._publish(conn, event)
            elif isinstance(message, ext_pb2.RoomJoinReq):
                await self.rooms.join(conn, frame.seq, message)
            elif isinstance(message, ext_pb2.RoomLeaveReq):
                await self.rooms.leave(conn, frame.seq, message)
            elif isinstance(message, ext_pb2.RoomMemberCountReq):
                await self.rooms.member_count(conn, frame.seq, message)
            else:  # a gate-handled command the table added without a handler here
                raise Refused(ExtResultCode.UNKNOWN_COMMAND, "not served by this gate")
        except Refused as exc:
            self.stats.room_refused += 1
            conn.core.send_error(frame.seq, frame.command_id, exc.code, exc.text)
        except Exception:
            log.exception("gate %s: room request 0x%04X failed", self.gate_id, frame.command_id)
            conn.core.send_error(
                frame.seq, frame.command_id, ExtResultCode.INTERNAL_ERROR, "internal error, retry"
            )

    # -- downlink ----------------------------------------------------------------------------

    async def _on_records(self, records: Sequence[Record]) -> None:
        # Frames are queued on their connections first and written once per connection at
        # the end: a connection with several frames in a batch costs one write, not one each.
        touched: dict[int, RoomConnection] = {}
        # A room's messages in this batch, merged into one delivery: written to each member
        # at once (behind what is queued for it), one write per member per batch.
        rooms: dict[int, RoomDeliver] = {}
        try:
            for record in records:
                self._on_record(record, touched, rooms)
            for delivery in rooms.values():
                self.rooms.deliver(delivery, touched)
        finally:
            for conn in touched.values():
                conn.pump()

    def _on_record(
        self,
        record: Record,
        touched: dict[int, RoomConnection],
        rooms: dict[int, RoomDeliver],
    ) -> None:
        try:
            item = decode_gate_record(record.value)
        except EnvelopeError as exc:
            # The gate topic has no DLQ (topology.yaml): log and drop.
            self.stats.downlink_bad_records += 1
            log.warning(
                "gate %s: bad record at %s[%d]@%d: %s",
                self.gate_id,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        if isinstance(item, GateBatch):
            for one in item.items:
                self._apply(one, touched)
        elif isinstance(item, KickUser):
            self._kick_user(item)
        elif isinstance(item, RoomDeliver):
            held = rooms.get(item.room_id)
            rooms[item.room_id] = (
                item
                if held is None
                else msgspec.structs.replace(held, items=held.items + item.items)
            )
        elif isinstance(item, RoomClose):
            held = rooms.pop(item.room_id, None)
            if held is not None:  # its messages before its close, in the room's order
                self.rooms.deliver(held, touched)
            self.rooms.close_room(item, touched)
        else:
            self._apply(item, touched)

    def _apply(self, item: Deliver | Reply | Kick, touched: dict[int, RoomConnection]) -> None:
        """Queue one downlink record's frames on the connections it names (a kick acts at
        once); `touched` collects the connections to pump."""
        if isinstance(item, Deliver):
            for target in item.targets:
                conn = self._target(target)
                if conn is not None:
                    conn.queue(item.cmd, item.body)
                    touched[target.conn_id] = conn
                    self._log_downlink(item.cmd, target, item.trace_id)
        elif isinstance(item, Reply):
            conn = self._target(item.target)
            if conn is not None:
                conn.queue(item.cmd, item.body, item.seq)
                touched[item.target.conn_id] = conn
                self._log_downlink(item.cmd, item.target, item.trace_id)
        else:
            conn = self._target(item.target)
            if conn is not None:
                reason = _kick_reason(item.reason)
                conn.kick(reason, new_client_type=item.new_client_type, text=item.text)
                self._log_downlink(Cmd.KICK_NOTIFY, item.target, item.trace_id)

    def _kick_user(self, item: KickUser) -> None:
        """Close the connections of a user that `item` selects (`schemas.envelope.KickUser`),
        and remember that it came, for the logins being checked (`_login`)."""
        now = asyncio.get_running_loop().time()
        if len(self._kicked_at) > 10_000:  # forget the old ones; a login takes seconds
            self._kicked_at = {u: t for u, t in self._kicked_at.items() if now - t < KICK_MEMORY_S}
        self._kicked_at[item.user_id] = now
        reason = _kick_reason(item.reason)
        closed = 0
        for conn in list(self._by_user.get(item.user_id, ())):
            if item.client_types and conn.core.client_type not in item.client_types:
                continue
            if item.keep_token and (not conn.token_digest or conn.token_digest == item.keep_token):
                continue  # a password login, or one with the current token
            conn.kick(reason, text=item.text)
            closed += 1
        if closed:
            self.stats.admin_kicks += closed
            KICKED_BY_ADMIN.labels(reason=reason.name.lower()).inc(closed)
        log.info(
            "gate %s: closed %d connection(s) of user %d (%s: %s)",
            self.gate_id,
            closed,
            item.user_id,
            reason.name,
            item.text,
            extra={"user_id": item.user_id, "trace_id": item.trace_id},
        )

    def _log_downlink(self, cmd: int, target: Target, trace_id: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "conn %d: sent 0x%04X",
                target.conn_id,
                cmd,
                extra={"conn_id": target.conn_id, "user_id": target.user_id, "trace_id": trace_id},
            )

    def _target(self, target: Target) -> GateConnection | None:
        conn = self._conns.get(target.conn_id)
        if conn is None or not conn.core.authenticated or conn.core.user_id != target.user_id:
            self.stats.downlink_unknown += 1
            return None
        self.stats.downlink_frames += 1
        return conn

    # -- periodic work -----------------------------------------------------------------------

    async def _report(self) -> None:
        s = self.settings
        host = s.advertised_host or (
            s.host if s.host not in ("", "0.0.0.0", "::") else socket.gethostname()
        )
        scheme = "wss" if s.tls_cert else "ws"
        try:
            await self._routes.gate_heartbeat(
                store_ids.GateId(self.gate_id),
                tcp_addr=f"{host}:{self.tcp_port}",
                ws_addr=f"{scheme}://{host}:{self.ws_port}",
                connections=len(self._conns),
                ttl=max(REGISTRY_TTL_S, 3 * self._registry_interval_s),
            )
        except Exception as exc:
            log.warning("gate %s: registry heartbeat failed: %r", self.gate_id, exc)

    async def _refresh_routes(self) -> None:
        """Re-arm the route TTL of every user logged in here (see the module docstring)."""
        users = iter(list(self._by_user))

        # A few workers sharing one iterator: bounded concurrency (and Redis connections)
        # without a task per user.
        async def worker() -> None:
            for user_id in users:
                try:
                    alive = await self._routes.refresh(
                        store_ids.UserId(user_id), ttl=self.route_ttl_s
                    )
                    if not alive:
                        await self._reregister(user_id)
                except Exception as exc:
                    log.warning(
                        "gate %s: route refresh of user %d failed: %r", self.gate_id, user_id, exc
                    )
                self.stats.route_refreshes += 1

        await asyncio.gather(*(worker() for _ in range(REFRESH_CONCURRENCY)))

    async def _reregister(self, user_id: int) -> None:
        for conn in list(self._by_user.get(user_id, ())):
            if conn.route is not None and not conn.core.closed:
                log.info(
                    "gate %s: route of user %d had lapsed; registering it again",
                    self.gate_id,
                    user_id,
                )
                await self._routes.register(
                    store_ids.UserId(user_id), conn.route, ttl=self.route_ttl_s
                )

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            await job()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(s.tls_cert, s.tls_key or None)
        return context


def _now_s() -> int:
    return int(time.time())


def _who_are_you(event: LoginRequested) -> ErrorCode:
    """The one answer of a login kind to a credential that proves nobody: an unknown user
    and a wrong token (or an unknown name and a wrong password) look the same."""
    if isinstance(event, TokenLoginRequested):
        return ErrorCode.LOGIN_INVALID_USER_TOKEN
    return ErrorCode.LOGIN_INVALID_USER_OR_PWD


def _banned_text(user: User) -> str:
    return f"banned: {user.ban_reason}" if user.ban_reason else "banned"


def _kick_reason(value: int) -> KickReason:
    try:
        return KickReason(value)
    except ValueError:
        return KickReason.UNSPECIFIED


def _user_info(user: User) -> base_pb2.UserInfo:
    return base_pb2.UserInfo(
        user_id=user.user_id,
        nick_name=user.nick_name,
        nick_name_spell=user.nick_name_spell,
        phone=user.phone,
        avatar_url=user.avatar_url,
        attach_info=user.attach_info,
    )
