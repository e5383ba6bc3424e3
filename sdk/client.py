"""`Client`: an asyncio client of a CoffeeBus (or CoffeeChat) gate over TCP or WebSocket.

One `Client` holds one connection: a reader task, a heartbeat task once logged in, and a
`ClientProtocol` (seqs and pending requests). Requests are matched to responses by seq;
pushes go to `events()` (and to `on_event` if given). When the connection drops the client
reconnects with exponential backoff and full jitter and logs in again with the same
credentials, unless reconnecting is off, the client was closed or logged out, or the server
kicked it. Given other gates (`connect(..., alternates=...)`, e.g. the API's gate list), it
moves on to the next gate after each failed attempt, so a client of a gate that died ends up
on a live one; it then catches up with `sync`. docs/sdk.md has a runnable example.

Sketch::

    async with Client() as client:
        await client.connect("127.0.0.1", 8000)
        await client.login(1001, token)
        ack = await client.send_text(1002, "hello")
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Final, NamedTuple, Self, TypeVar

from google.protobuf.message import Message

from schemas.codes import (
    ClientType,
    GroupBeInviteMode,
    GroupJoinModel,
    GroupMuteModel,
    MsgType,
    SessionType,
)
from schemas.commands import Cmd, build_frame
from schemas.frame import DEFAULT_MAX_FRAME_SIZE
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import (
    base_pb2,
    friend_pb2,
    group_pb2,
    list_pb2,
    login_pb2,
    message_pb2,
    voip_pb2,
)
from sdk.errors import (
    ConnectionLostError,
    LoginError,
    NotConnectedError,
    RequestTimeoutError,
    SdkError,
    ServerProtocolError,
)
from sdk.events import Disconnected, Event, Kicked, Reconnected
from sdk.protocol import ClientProtocol, Push, msg_data_ack_for
from sdk.transport import Transport, TransportKind, open_transport

__all__ = ["Client"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
LoginResponse = login_pb2.AuthTokenRsp | login_pb2.AuthRsp

DEFAULT_CLIENT_VERSION: Final = "coffeebus-sdk/0.1"


class _Endpoint(NamedTuple):
    host: str
    port: int
    kind: TransportKind
    ssl: ssl_module.SSLContext | None
    path: str
    local_addr: tuple[str, int] | None


class Client:
    """A client connection to a gate.

    Args:
        heartbeat_interval: seconds between heartbeats once logged in (None: never; the
            gate closes connections idle for a few intervals of its own setting).
        request_timeout: default seconds a request waits for its response.
        connect_timeout: seconds a connect (TCP/TLS/WebSocket handshake) may take.
        auto_ack: answer pushed MsgData with MsgDataAck and S2CPush with S2CPushAck.
        reconnect: reconnect and log in again when a logged-in connection drops.
        reconnect_min_delay / reconnect_max_delay: backoff bounds (seconds); attempt n
            waits a random time in [0, min(max, min * 2**(n-1))].
        max_reconnect_attempts: give up after this many failed attempts (None: never).
        event_queue_size: events kept for `events()` before the oldest are dropped
            (0: no queue, e.g. benchmarks that do not read events).
        on_event: called synchronously with every event (in addition to the queue).
        max_frame_size: largest frame accepted from the server.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: float | None = 30.0,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        auto_ack: bool = True,
        reconnect: bool = True,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        max_reconnect_attempts: int | None = None,
        event_queue_size: int = 1024,
        on_event: Callable[[Event], None] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        client_version: str = DEFAULT_CLIENT_VERSION,
    ) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive or None")
        if not 0 < reconnect_min_delay <= reconnect_max_delay:
            raise ValueError("need 0 < reconnect_min_delay <= reconnect_max_delay")
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.auto_ack = auto_ack
        self.reconnect = reconnect
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.max_reconnect_attempts = max_reconnect_attempts
        self.max_frame_size = max_frame_size
        self.client_version = client_version
        self._on_event = on_event
        self._queue: asyncio.Queue[Event | None] | None = (
            asyncio.Queue(event_queue_size) if event_queue_size > 0 else None
        )
        #: Events dropped because the queue was full.
        self.dropped_events = 0
        self.user_id = 0
        self.client_type: int = ClientType.DEFAULT
        self.user_info: Message | None = None
        self._endpoints: list[_Endpoint] = []
        self._endpoint_index = 0
        self._transport: Transport | None = None
        self._protocol = ClientProtocol(auto_ack=auto_ack)
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._relogin: Callable[[], Awaitable[LoginResponse]] | None = None
        self._kicked = False
        self._closed = False

    # -- connection --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open (logged in or not)."""
        return self._transport is not None

    @property
    def pending_requests(self) -> int:
        """Requests waiting for their response on the current connection."""
        return self._protocol.pending

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """Host and port of the gate the client uses (or last used, or will try next)."""
        if not self._endpoints:
            return None
        current = self._endpoints[self._endpoint_index]
        return current.host, current.port

    async def connect(
        self,
        host: str,
        port: int,
        *,
        transport: TransportKind = "tcp",
        ssl: ssl_module.SSLContext | None = None,
        path: str = "/",
        local_addr: tuple[str, int] | None = None,
        alternates: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Open the connection (raises `OSError` or `TimeoutError` if it cannot be made).

        `alternates` are other gates (host, port; same transport, TLS and path) of the same
        system: `connect` tries them in order when `host:port` does not answer, and each
        failed reconnect attempt moves on to the next one, round the list.
        """
        if self._closed:
            raise NotConnectedError("the client is closed")
        if self._transport is not None:
            raise RuntimeError("already connected")
        first = _Endpoint(host, port, transport, ssl, path, local_addr)
        self._endpoints = [first, *(first._replace(host=h, port=p) for h, p in alternates)]
        for index in range(len(self._endpoints)):
            self._endpoint_index = index
            try:
                await self._open()
                return
            except (OSError, TimeoutError) as exc:
                if index == len(self._endpoints) - 1:
                    raise
                tried = self._endpoints[index]
                logger.info("gate %s:%d: %r; trying the next", tried.host, tried.port, exc)

    async def _open(self) -> None:
        endpoint = self._endpoints[self._endpoint_index]
        transport = await asyncio.wait_for(
            open_transport(
                endpoint.host,
                endpoint.port,
                kind=endpoint.kind,
                ssl=endpoint.ssl,
                path=endpoint.path,
                max_frame_size=self.max_frame_size,
                local_addr=endpoint.local_addr,
            ),
            self.connect_timeout,
        )
        protocol = ClientProtocol(auto_ack=self.auto_ack)
        protocol.user_id = self.user_id
        self._transport, self._protocol, self._kicked = transport, protocol, False
        self._reader = asyncio.create_task(self._read_loop(transport, protocol))

    async def _read_loop(self, transport: Transport, protocol: ClientProtocol) -> None:
        reason = "closed by the client"
        try:
            while True:
                for frame in await transport.receive():
                    push, replies = protocol.receive(frame)
                    for reply in replies:
                        await transport.send(reply)
                    if push is not None:
                        self._on_push(push)
        except (ConnectionLostError, ServerProtocolError) as exc:
            reason = str(exc)
        finally:
            # The peer is gone or broke the protocol: release the socket now (close() has
            # already closed it cleanly when it is the one ending this loop).
            transport.abort()
            protocol.fail_all(ConnectionLostError(reason))
            self._connection_lost(transport, reason)

    def _on_push(self, push: Push) -> None:
        if isinstance(push.message, ext_pb2.KickNotify):
            self._kicked = push.message.reason != ext_pb2.KICK_REASON_SERVER_SHUTDOWN
            self._emit(Kicked(push.message))
        else:
            self._emit(push)

    def _connection_lost(self, transport: Transport, reason: str) -> None:
        if transport is not self._transport:
            return  # an older connection, already replaced
        self._transport = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._reconnecting is not None and not self._reconnecting.done():
            return  # the reconnect loop notices the failure of its own attempt
        again = (
            self.reconnect and not self._closed and not self._kicked and self._relogin is not None
        )
        logger.info("connection lost (%s)%s", reason, "; reconnecting" if again else "")
        self._emit(Disconnected(reason, again))
        if again:
            self._reconnecting = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self._closed:
            attempt += 1
            if self.max_reconnect_attempts is not None and attempt > self.max_reconnect_attempts:
                self._emit(Disconnected(f"gave up after {attempt - 1} attempts", False))
                return
            ceiling = min(self.reconnect_max_delay, self.reconnect_min_delay * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(0, ceiling))
            relogin = self._relogin
            if relogin is None:  # logged out meanwhile
                return
            try:
                await self._open()
                login = await relogin()
            except LoginError as exc:
                logger.warning("reconnected but the login was refused: %s", exc)
                await self._drop()
                self._emit(Disconnected(f"re-login refused: {exc}", False))
                return
            except (OSError, TimeoutError, SdkError) as exc:
                logger.debug("reconnect attempt %d failed: %r", attempt, exc)
                await self._drop()
                # The gate may be gone for good: the next attempt tries the next one.
                self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
                continue
            logger.info("reconnected after %d attempt(s)", attempt)
            self._emit(Reconnected(attempt, login))
            return

    async def _drop(self) -> None:
        transport, self._transport = self._transport, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        if transport is not None:
            transport.abort()
            await transport.close()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def close(self) -> None:
        """Close the connection and stop reconnecting; pending requests fail with
        `ConnectionLostError`; `events()` ends after the events already queued."""
        if self._closed:
            return
        self._closed = True
        for task in (self._heartbeat, self._reconnecting):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        transport, reader = self._transport, self._reader
        self._transport = self._reader = None
        if reader is not None:
            reader.cancel()
        if transport is not None:
            with contextlib.suppress(OSError, SdkError):
                await transport.close()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._protocol.fail_all(ConnectionLostError("closed by the client"))
        self._emit(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- events ------------------------------------------------------------------------------

    def _emit(self, event: Event | None) -> None:
        if event is not None and self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("on_event callback failed")
        queue = self._queue
        if queue is None:
            return
        if queue.full():
            queue.get_nowait()
            self.dropped_events += 1
            if self.dropped_events & (self.dropped_events - 1) == 0:  # 1, 2, 4, 8, ...
                logger.warning("event queue full: %d events dropped so far", self.dropped_events)
        queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        """Server pushes and connection changes, in arrival order, until `close()`.

        One consumer only: events are not copied to several iterators.
        """
        while True:
            try:
                yield await self.next_event()
            except NotConnectedError:
                return

    async def next_event(self) -> Event:
        """The next event; `NotConnectedError` once the client is closed and drained."""
        if self._queue is None:
            raise RuntimeError("the event queue is disabled (event_queue_size=0)")
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # keep later calls from blocking
            raise NotConnectedError("the client is closed")
        return event

    # -- requests ----------------------------------------------------------------------------

    async def _session_back(self, wait: float) -> bool:
        """While a reconnect is under way, wait (up to `wait` s) until it has logged in again.

        The new connection exists before its re-login is answered; a request sent on it in
        between would reach the gate unauthenticated and be refused NOT_AUTHENTICATED. So
        every request but the reconnect loop's own (the re-login) waits for the loop to end.
        False when it did not end in time; when it ended without a session, `_live` says so.
        """
        task = self._reconnecting
        if task is None or task.done() or task is asyncio.current_task():
            return True
        done, _ = await asyncio.wait({task}, timeout=wait)
        return bool(done)

    def _live(self) -> tuple[Transport, ClientProtocol]:
        if self._transport is None:
            raise NotConnectedError("not connected" if not self._closed else "the client is closed")
        return self._transport, self._protocol

    async def request(
        self,
        command: Cmd,
        message: Message,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request deadline, as in aiohttp
    ) -> Message:
        """Send a request and wait for its response (matched by seq).

        Raises `ServerError` for an ErrorRsp, `RequestTimeoutError`, `ConnectionLostError`,
        `NotConnectedError`. A command without a response is a `ValueError` (use `send`).
        """
        wait = self.request_timeout if timeout is None else timeout
        if not await self._session_back(wait):
            raise RequestTimeoutError(command, 0, wait)
        transport, protocol = self._live()
        seq, data, future = protocol.request(command, message)
        if future is None:
            raise ValueError(f"{command.name} has no response: use send()")
        try:
            # asyncio.timeout costs one timer; wait_for (3.11) also a waiter future and two
            # callbacks, for every request a client makes.
            async with asyncio.timeout(wait):
                await transport.send(data)
                return await future
        except TimeoutError:
            if future.done() and not future.cancelled():
                raise  # a RequestTimeoutError of our own would not be a plain timeout
            raise RequestTimeoutError(command, seq, wait) from None
        finally:
            protocol.forget(seq)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: asyncio must not report it as lost

    async def _call(self, command: Cmd, message: Message, response: type[M]) -> M:
        result = await self.request(command, message)
        if not isinstance(result, response):  # the command table says otherwise: a bug
            raise ServerProtocolError(f"expected {response.__name__}, got {type(result).__name__}")
        return result

    async def send(self, command: Cmd, message: Message) -> None:
        """Send a frame that gets no response (read ack, typing, a receipt)."""
        if not await self._session_back(self.request_timeout):
            raise NotConnectedError("still reconnecting")
        transport, protocol = self._live()
        _, data, _ = protocol.request(command, message, expect_response=False)
        await transport.send(data)

    # -- login -------------------------------------------------------------------------------

    async def login(
        self,
        user_id: int,
        token: str,
        *,
        client_type: int = ClientType.DEFAULT,
        nick_name: str = "",
    ) -> login_pb2.AuthTokenRsp:
        """Log in by token (0x0101); raises `LoginError` unless the result is SUCCESS.

        On success the heartbeat starts and the credentials are kept for re-login after a
        reconnect.
        """
        req = login_pb2.AuthTokenReq(
            user_id=user_id,
            nick_name=nick_name,
            user_token=token,
            client_type=client_type,  # type: ignore[arg-type]
            client_version=self.client_version,
        )

        async def by_token() -> login_pb2.AuthTokenRsp:
            rsp = await self._call(Cmd.AUTH_TOKEN_REQ, req, login_pb2.AuthTokenRsp)
            self._logged_in(rsp, client_type)
            return rsp

        rsp = await by_token()
        self._relogin = by_token
        return rsp

    async def login_password(
        self, user_name: str, password: str, *, client_type: int = ClientType.DEFAULT
    ) -> login_pb2.AuthRsp:
        """Log in by user name and password (0x0107); raises `LoginError` on failure."""
        req = login_pb2.AuthReq(
            user_name=user_name,
            user_pwd=password,
            client_type=client_type,  # type: ignore[arg-type]
            client_version=self.client_version,
        )

        async def by_password() -> login_pb2.AuthRsp:
            rsp = await self._call(Cmd.AUTH_REQ, req, login_pb2.AuthRsp)
            self._logged_in(rsp, client_type)
            return rsp

        rsp = await by_password()
        self._relogin = by_password
        return rsp

    def _logged_in(self, rsp: LoginResponse, client_type: int) -> None:
        if rsp.result_code != base_pb2.ERROR_CODE_SUCCESS:
            raise LoginError(rsp.result_code, rsp.result_string)
        self.user_id = rsp.user_info.user_id
        self.user_info = rsp.user_info
        self.client_type = client_type
        self._protocol.user_id = self.user_id
        if self.heartbeat_interval is not None and self._transport is not None:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            self._heartbeat = asyncio.create_task(
                self._heartbeat_loop(self._transport, self.heartbeat_interval)
            )

    async def logout(self) -> login_pb2.LogoutRsp:
        """Log out (0x0103): the gate removes the route; the client will not reconnect."""
        self._relogin = None
        req = login_pb2.LogoutReq(user_id=self.user_id, client_type=self.client_type)  # type: ignore[arg-type]
        rsp = await self._call(Cmd.LOGOUT_REQ, req, login_pb2.LogoutRsp)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        return rsp

    async def heartbeat(self, *, timeout: float | None = None) -> float:  # noqa: ASYNC109
        """Send a heartbeat and wait for its echo; return the round trip in seconds."""
        start = time.perf_counter()
        await self.request(Cmd.HEARTBEAT, login_pb2.HeartBeat(), timeout=timeout)
        return time.perf_counter() - start

    async def _heartbeat_loop(self, transport: Transport, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except RequestTimeoutError:
                logger.warning("heartbeat unanswered: dropping the connection")
                transport.abort()  # the reader notices and the reconnect logic takes over
                return
            except SdkError:
                return  # the connection is gone; its loss is handled by the reader

    # -- messages ----------------------------------------------------------------------------

    async def send_message(self, msg: message_pb2.MsgData) -> message_pb2.MsgDataAck:
        """Send a message (0x0301) and wait for the server's ack: it is stored once acked.

        Resending the same `client_msg_id` is safe: the server returns the original
        server_msg_id.
        """
        return await self._call(Cmd.MSG_DATA, msg, message_pb2.MsgDataAck)

    async def send_text(
        self,
        to_session_id: int,
        text: str,
        *,
        session_type: SessionType = SessionType.SINGLE,
        client_msg_id: str | None = None,
    ) -> message_pb2.MsgDataAck:
        """Send a text message to a user (SINGLE) or a group (GROUP)."""
        msg = message_pb2.MsgData(
            from_user_id=self.user_id,
            to_session_id=to_session_id,
            client_msg_id=client_msg_id or str(uuid.uuid4()),
            create_time=int(time.time()),
            msg_type=MsgType.TEXT,  # type: ignore[arg-type]
            session_type=session_type,  # type: ignore[arg-type]
            msg_data=text.encode("utf-8"),
        )
        return await self.send_message(msg)

    async def ack_message(self, msg: message_pb2.MsgData, seq: int) -> None:
        """Acknowledge receipt of a pushed MsgData by hand (when auto_ack is off)."""
        transport, _ = self._live()
        ack = msg_data_ack_for(msg, self.user_id)
        await transport.send(build_frame(Cmd.MSG_DATA_ACK, seq, ack))

    async def read_ack(
        self, session_id: int, msg_id: int, *, session_type: SessionType = SessionType.SINGLE
    ) -> None:
        """Mark every message ≤ `msg_id` of the conversation read (0x0303; no response)."""
        ack = message_pb2.MsgDataReadAck(
            user_id=self.user_id,
            session_id=session_id,
            msg_id=msg_id,
            session_type=session_type,  # type: ignore[arg-type]
        )
        await self.send(Cmd.MSG_READ_ACK, ack)

    async def recent_sessions(
        self, latest_update_time: int = 0
    ) -> list_pb2.RecentContactSessionRsp:
        """The session list with unread counts (0x0201)."""
        req = list_pb2.RecentContactSessionReq(
            user_id=self.user_id, latest_update_time=latest_update_time
        )
        return await self._call(Cmd.RECENT_SESSION_REQ, req, list_pb2.RecentContactSessionRsp)

    async def history(
        self,
        session_id: int,
        *,
        session_type: SessionType = SessionType.SINGLE,
        end_msg_id: int = 0,
        limit: int = 20,
    ) -> list_pb2.GetMsgListRsp:
        """A page of a conversation's messages below `end_msg_id` (0: the newest), 0x0205."""
        req = list_pb2.GetMsgListReq(
            user_id=self.user_id,
            session_type=session_type,  # type: ignore[arg-type]
            session_id=session_id,
            end_msg_id=end_msg_id,
            limit_count=limit,
        )
        return await self._call(Cmd.MSG_LIST_REQ, req, list_pb2.GetMsgListRsp)

    async def latest_msg_id(
        self, session_id: int, *, session_type: SessionType = SessionType.SINGLE
    ) -> message_pb2.GetLatestMsgIdRsp:
        """The latest message id of a conversation (0x0305)."""
        req = message_pb2.GetLatestMsgIdReq(
            user_id=self.user_id,
            session_type=session_type,  # type: ignore[arg-type]
            session_id=session_id,
        )
        return await self._call(Cmd.LATEST_MSG_ID_REQ, req, message_pb2.GetLatestMsgIdRsp)

    async def messages_by_id(
        self,
        session_id: int,
        msg_ids: Iterable[str],
        *,
        session_type: SessionType = SessionType.SINGLE,
    ) -> message_pb2.GetMsgByIdRsp:
        """Messages of a conversation by id (0x0307)."""
        req = message_pb2.GetMsgByIdReq(
            user_id=self.user_id,
            session_type=session_type,  # type: ignore[arg-type]
            session_id=session_id,
            msg_id_list=list(msg_ids),
        )
        return await self._call(Cmd.MSG_BY_ID_REQ, req, message_pb2.GetMsgByIdRsp)

    async def sync(self, after_seq: int = 0, *, limit: int = 0) -> ext_pb2.SyncRsp:
        """Inbox entries after a user-inbox seq (extension 0x0803), for catch-up."""
        req = ext_pb2.SyncReq(user_id=self.user_id, after_seq=after_seq, limit=limit)
        return await self._call(Cmd.SYNC_REQ, req, ext_pb2.SyncRsp)

    # -- groups and users --------------------------------------------------------------------

    async def create_group(self, name: str, member_ids: Iterable[int]) -> group_pb2.GroupCreateRsp:
        """Create a group with these members (0x0501)."""
        req = group_pb2.GroupCreateReq(
            user_id=self.user_id, group_name=name, member_id_list=list(member_ids)
        )
        return await self._call(Cmd.GROUP_CREATE_REQ, req, group_pb2.GroupCreateRsp)

    async def disband_group(self, group_id: int) -> group_pb2.GroupDisbandingRsp:
        """Disband a group (0x0503)."""
        req = group_pb2.GroupDisbandingReq(user_id=self.user_id, group_id=group_id)
        return await self._call(Cmd.GROUP_DISBAND_REQ, req, group_pb2.GroupDisbandingRsp)

    async def exit_group(self, group_id: int) -> group_pb2.GroupExitRsp:
        """Leave a group (0x0505)."""
        req = group_pb2.GroupExitReq(user_id=self.user_id, group_id=group_id)
        return await self._call(Cmd.GROUP_EXIT_REQ, req, group_pb2.GroupExitRsp)

    async def update_group(
        self,
        group_id: int,
        *,
        name: str | None = None,
        intro: str | None = None,
        announcement: str | None = None,
        avatar_url: str | None = None,
        mute_model: GroupMuteModel | None = None,
        join_model: GroupJoinModel | None = None,
        be_invite_model: GroupBeInviteMode | None = None,
    ) -> ext_pb2.GroupUpdateRsp:
        """Change a group's attributes (extension 0x080F; the owner only). None keeps a
        value; the response carries the group after the change."""
        req = ext_pb2.GroupUpdateReq(user_id=self.user_id, group_id=group_id)
        if name is not None:
            req.group_name = name
        if intro is not None:
            req.group_intro = intro
        if announcement is not None:
            req.announcement = announcement
        if avatar_url is not None:
            req.group_avatar = avatar_url
        if mute_model is not None:
            req.mute_model = mute_model  # type: ignore[assignment]
        if join_model is not None:
            req.join_model = join_model  # type: ignore[assignment]
        if be_invite_model is not None:
            req.be_invite_model = be_invite_model  # type: ignore[assignment]
        return await self._call(Cmd.GROUP_UPDATE_REQ, req, ext_pb2.GroupUpdateRsp)

    async def group_list(self) -> group_pb2.GroupListRsp:
        """The groups the user is in, with their versions (0x0507)."""
        req = group_pb2.GroupListReq(user_id=self.user_id)
        return await self._call(Cmd.GROUP_LIST_REQ, req, group_pb2.GroupListRsp)

    async def group_info(self, group_ids: Iterable[int]) -> group_pb2.GroupInfoRsp:
        """Information about groups (0x0509)."""
        req = group_pb2.GroupInfoReq(
            user_id=self.user_id,
            group_version_list=[group_pb2.GroupVersionInfo(group_id=g) for g in group_ids],
        )
        return await self._call(Cmd.GROUP_INFO_REQ, req, group_pb2.GroupInfoRsp)

    async def invite_members(
        self, group_id: int, member_ids: Iterable[int]
    ) -> group_pb2.GroupInviteMemberRsp:
        """Add members to a group (0x0511)."""
        req = group_pb2.GroupInviteMemberReq(
            user_id=self.user_id, group_id=group_id, member_id_list=list(member_ids)
        )
        return await self._call(Cmd.GROUP_INVITE_MEMBER_REQ, req, group_pb2.GroupInviteMemberRsp)

    async def kick_members(
        self, group_id: int, member_ids: Iterable[int]
    ) -> group_pb2.GroupKickOutMemberRsp:
        """Remove members from a group (0x0513)."""
        req = group_pb2.GroupKickOutMemberReq(
            user_id=self.user_id, group_id=group_id, member_id_list=list(member_ids)
        )
        return await self._call(Cmd.GROUP_KICK_MEMBER_REQ, req, group_pb2.GroupKickOutMemberRsp)

    async def group_members(self, group_id: int) -> group_pb2.GroupMemberListRsp:
        """A group's member ids (0x0516)."""
        req = group_pb2.GroupMemberListReq(user_id=self.user_id, group_id=group_id)
        return await self._call(Cmd.GROUP_MEMBER_LIST_REQ, req, group_pb2.GroupMemberListRsp)

    # -- chat rooms (extensions 0x0812-0x081B) -------------------------------------------------

    async def join_room(self, room_id: int, *, history: int = 0) -> ext_pb2.RoomJoinRsp:
        """Join a chat room (0x0812): its member count and newest messages (`history` of
        them; 0: as many as the room keeps). Room messages then arrive as RoomMsg (0x0818)
        pushes in `events()`, until `leave_room`, the connection's end or a RoomExitNotify
        (0x081B: the room closed, or this client read too slowly). A reconnect does not
        rejoin: join again after `Reconnected`."""
        req = ext_pb2.RoomJoinReq(user_id=self.user_id, room_id=room_id, history_count=history)
        return await self._call(Cmd.ROOM_JOIN_REQ, req, ext_pb2.RoomJoinRsp)

    async def leave_room(self, room_id: int) -> ext_pb2.RoomLeaveRsp:
        """Leave a chat room (0x0814); leaving a room one is not in is not an error."""
        req = ext_pb2.RoomLeaveReq(user_id=self.user_id, room_id=room_id)
        return await self._call(Cmd.ROOM_LEAVE_REQ, req, ext_pb2.RoomLeaveRsp)

    async def send_room(
        self,
        room_id: int,
        data: bytes | str,
        *,
        msg_type: MsgType = MsgType.TEXT,
        client_msg_id: str | None = None,
    ) -> ext_pb2.RoomSendRsp:
        """Say something in a room this connection joined (0x0816); the answer carries the
        message's id in the room. The other members get it as RoomMsg; this connection
        does not."""
        req = ext_pb2.RoomSendReq(
            from_user_id=self.user_id,
            room_id=room_id,
            client_msg_id=client_msg_id or str(uuid.uuid4()),
            msg_type=msg_type,  # type: ignore[arg-type]
            msg_data=data.encode("utf-8") if isinstance(data, str) else data,
        )
        return await self._call(Cmd.ROOM_SEND_REQ, req, ext_pb2.RoomSendRsp)

    async def room_member_count(self, room_id: int) -> int:
        """Connections in an open room on every gate (0x0819)."""
        req = ext_pb2.RoomMemberCountReq(user_id=self.user_id, room_id=room_id)
        rsp = await self._call(Cmd.ROOM_MEMBER_COUNT_REQ, req, ext_pb2.RoomMemberCountRsp)
        return rsp.member_count

    async def user_list(self) -> friend_pb2.FriendQueryUserListRsp:
        """The user list (0x0601)."""
        req = friend_pb2.FriendQueryUserListReq(user_id=self.user_id)
        return await self._call(
            Cmd.FRIEND_QUERY_USER_LIST_REQ, req, friend_pb2.FriendQueryUserListRsp
        )

    # -- calls (VoIP signalling, 0x0401-0x0407; docs/protocol-extensions.md "Calls") ----------
    #
    # The callee's side arrives as events: a `Push` of VOIP_INVITE_REQ (an incoming call; its
    # ``channel_info.channel_name`` names the call), VOIP_INVITE_REPLY (180 ringing, 200
    # answered) on the caller's side, and VOIP_BYE_NOTIFY when the other party (or the
    # server) ended the call.

    async def call(self, user_id: int, *, video: bool = False) -> voip_pb2.VoipInviteReply:
        """Call `user_id` (0x0401): the server's 100 (trying) with the call's channel.

        The callee's devices ring; what happens next comes as pushes (180, 200, ByeNotify).
        Raises `ServerError` if the call is refused (unknown user, already in a call).
        """
        invite_type = (
            voip_pb2.VOIP_INVITE_TYPE_VIDEO_CALL if video else voip_pb2.VOIP_INVITE_TYPE_VOICE_CALL
        )
        req = voip_pb2.VoipInviteReq(
            creator_user_id=self.user_id, invite_user_list=[user_id], invite_type=invite_type
        )
        return await self._call(Cmd.VOIP_INVITE_REQ, req, voip_pb2.VoipInviteReply)

    async def ringing(self, channel: str) -> None:
        """Tell the caller this device rings (a 180 InviteReply)."""
        reply = voip_pb2.VoipInviteReply(
            user_id=self.user_id,
            rsp_code=voip_pb2.INVITE_RSP_CODE_RINGING,
            channel_info=voip_pb2.ChannelInfo(channel_name=channel),
        )
        await self.send(Cmd.VOIP_INVITE_REPLY, reply)

    async def answer(self, channel: str) -> voip_pb2.VoipInviteReplyAck:
        """Take the call (a 200 InviteReply): its InviteReplyAck, with this device's channel
        token. Raises `ServerError` if another device took it first or it is over."""
        reply = voip_pb2.VoipInviteReply(
            user_id=self.user_id,
            rsp_code=voip_pb2.INVITE_RSP_CODE_OK,
            channel_info=voip_pb2.ChannelInfo(channel_name=channel),
        )
        return await self._call(Cmd.VOIP_INVITE_REPLY, reply, voip_pb2.VoipInviteReplyAck)

    async def call_heartbeat(self) -> None:
        """Keep the current call alive (0x0404): send one at least every few seconds; the
        server ends a call whose party is silent for ``[calls] heartbeat_timeout_s``."""
        await self.send(Cmd.VOIP_HEARTBEAT, voip_pb2.VoipHeartbeat())

    async def hangup(
        self, channel: str, *, reason: int = 0, call_time_s: int = 0
    ) -> voip_pb2.VoipByeRsp:
        """End, cancel or reject the call (0x0405). `reason` 0 lets the server choose: cancel
        before the answer from the caller, reject from the callee, end after."""
        req = voip_pb2.VoipByeReq(
            local_call_time_len=call_time_s,
            user_id=self.user_id,
            channel_info=voip_pb2.ChannelInfo(channel_name=channel),
            bye_reason=reason,  # type: ignore[arg-type]
        )
        return await self._call(Cmd.VOIP_BYE_REQ, req, voip_pb2.VoipByeRsp)
