"""The sans-I/O connection core: one client connection's protocol state machine.

TCP (`gateway.tcp`) and WebSocket (`gateway.ws`) are thin shells over this class; it opens
no socket, starts no task and reads no clock. A shell feeds it what arrives and the time,
then acts on what comes out::

    conn = Connection(conn_id, limits=limits, now=loop.time())
    conn.receive_data(chunk, now)         # TCP: a byte stream, split or coalesced anywhere
    conn.receive_message(message, now)    # WebSocket: one binary message = one frame
    for event in conn.events_received():  # what the gate must do (login, publish, ...)
        ...
    transport.write(b"".join(conn.data_to_send()))
    if conn.closed: transport.close()     # after writing: a KickNotify precedes the close
    call_at(conn.next_deadline(), lambda: conn.on_timer(loop.time()))

States::

    CONNECTING ──login request──▶ AUTHENTICATING ──login_accepted──▶ AUTHENTICATED
        ▲                              │
        └────────login_rejected────────┘          any state ──close/kick/violation──▶ CLOSED

Decisions (each tested in tests/gateway/test_core.py):

- A frame shorter than the header or longer than `max_frame_size` (or, on WebSocket, whose
  length field is not the message size) is a protocol violation: the connection closes,
  nothing is answered; a TCP stream cannot be resynchronised after a bad length.
- Before login, every command but a login or a heartbeat is answered with an ErrorRsp
  (NOT_AUTHENTICATED) and not processed; the connection stays open so a client that raced
  its login can still log in within the login timeout. A second login while one is being
  checked, or after success, gets ErrorRsp INVALID_PARAMETER.
- A failed login keeps the connection (the client may retry) but not the login deadline:
  the timeout counts from connect, so retries cannot hold a connection open. A login the
  gate refuses without checking it (failed-login back-off, password pool full) is answered
  with ErrorRsp (RATE_LIMITED) instead of the login response, likewise retriable — but not
  before the time it was given: a login on that connection before then is refused
  RATE_LIMITED by the core itself, so a client hammering a busy gate costs it a frame each,
  not a check.
- Heartbeats are answered here, in any state but CLOSED, echoing the request's seq.
- After login, every frame of a command the table sends upward becomes `UplinkFrame`; an
  unknown or server-to-client command gets ErrorRsp UNKNOWN_COMMAND, a body that does not
  decode ErrorRsp MALFORMED_BODY — a well-framed bad request never closes the connection.
- Rate limit: a token bucket (`rate_per_s`, `burst`) over every received frame. A frame
  over the limit gets ErrorRsp RATE_LIMITED and is dropped. A client that keeps sending
  while limited (more than `burst` rejected frames in a row) is closed, so a flood cannot
  turn into an equal flood of error responses.
- Idle: after login the connection closes when nothing arrived for `idle_timeout_s`
  (any frame counts, heartbeats included). Before login only the login deadline applies.
- Slow senders: a TCP frame whose first bytes arrived must be complete within
  `frame_timeout_s` (FRAME_TIMEOUT), so a client trickling a header or a body (slow loris)
  holds its connection for that long, not for the idle timeout; partial bytes never count
  as activity.
- Logout answers LogoutRsp and closes (the shell removes the route first). A LogoutReq whose
  user_id is neither 0 nor the logged-in user gets ErrorRsp FORBIDDEN and changes nothing.
- Every frame received and every frame queued is counted by command
  (`telemetry.metrics`: ``coffeebus_gate_frames_received/sent_total``) — a counter
  increment, not I/O, so the core stays sans-I/O.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence

import msgspec
from google.protobuf.message import Message

from gateway.ratelimit import TokenBucket
from schemas.codes import ErrorCode, ExtResultCode, KickReason
from schemas.commands import Cmd, CommandSpec, Direction, build_frame, parse_body, spec
from schemas.errors import BodyDecodeError, CommandError, FrameError
from schemas.frame import (
    Frame,
    FrameDecoder,
    SharedPush,
    decode_frame,
    encode_frame,
    next_push_seq,
)
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, login_pb2
from telemetry.metrics import FRAMES_IN, FRAMES_OUT

__all__ = [
    "CloseReason",
    "Connection",
    "ConnectionClosed",
    "ConnectionLimits",
    "Event",
    "HeartbeatReceived",
    "LoginRequested",
    "LogoutRequested",
    "PasswordLoginRequested",
    "State",
    "TokenLoginRequested",
    "UplinkFrame",
]

log = logging.getLogger(__name__)

#: LogoutRsp.result_code is a bare u32 in the seed; 0 means done.
LOGOUT_OK = 0


class State(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


class CloseReason(enum.Enum):
    """Why a connection closed (for logs, metrics and the gate's clean-up)."""

    PEER_CLOSED = "peer_closed"
    PROTOCOL_ERROR = "protocol_error"
    LOGIN_TIMEOUT = "login_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    LOGOUT = "logout"
    KICKED = "kicked"
    RATE_LIMITED = "rate_limited"
    FRAME_TIMEOUT = "frame_timeout"
    SLOW_CONSUMER = "slow_consumer"
    SHUTDOWN = "shutdown"
    REFUSED = "refused"
    INTERNAL_ERROR = "internal_error"


class ConnectionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The per-connection limits and timers (from `gateway.settings.GatewaySettings`)."""

    max_frame_size: int = 1024 * 1024
    login_timeout_s: float = 15.0
    idle_timeout_s: float = 180.0
    frame_timeout_s: float = 30.0
    rate_per_s: float = 50.0
    rate_burst: int = 100


# --- events -------------------------------------------------------------------------------


class TokenLoginRequested(msgspec.Struct, frozen=True):
    """AuthTokenReq (0x0101): check the token, then `login_accepted` / `login_rejected`."""

    seq: int
    user_id: int
    token: str
    client_type: int
    client_version: str
    nick_name: str


class PasswordLoginRequested(msgspec.Struct, frozen=True):
    """AuthReq (0x0107): check name and password, then `login_accepted` / `login_rejected`."""

    seq: int
    user_name: str
    password: str
    client_type: int
    client_version: str

    def __repr__(self) -> str:  # never log a password
        return (
            f"PasswordLoginRequested(seq={self.seq}, user_name={self.user_name!r}, "
            f"client_type={self.client_type})"
        )


LoginRequested = TokenLoginRequested | PasswordLoginRequested


class HeartbeatReceived(msgspec.Struct, frozen=True):
    """A heartbeat arrived (already answered by the core)."""

    seq: int


class LogoutRequested(msgspec.Struct, frozen=True):
    """LogoutReq (0x0103): remove the route, then call `logout_done`."""

    seq: int


class UplinkFrame(msgspec.Struct, frozen=True):
    """An authenticated client frame to publish to its uplink topic.

    `message` is the decoded body (for the record key); publish `frame.body` as received.
    """

    frame: Frame
    spec: CommandSpec
    message: Message


class ConnectionClosed(msgspec.Struct, frozen=True):
    """The connection is closed: write what `data_to_send` still holds, then close."""

    reason: CloseReason
    detail: str = ""


Event = (
    TokenLoginRequested
    | PasswordLoginRequested
    | HeartbeatReceived
    | LogoutRequested
    | UplinkFrame
    | ConnectionClosed
)

_LOGIN_COMMANDS = frozenset({Cmd.AUTH_TOKEN_REQ, Cmd.AUTH_REQ})

# Frames in and out by command (the core's only side effect: two counter increments).
_FRAMES_IN = FRAMES_IN
_FRAMES_OUT = FRAMES_OUT


class Connection:
    """The protocol state of one client connection. Not thread-safe; one per connection."""

    __slots__ = (
        "_bucket",
        "_close_detail",
        "_close_reason",
        "_decoder",
        "_events",
        "_frame_started",
        "_last_activity",
        "_limits",
        "_login_deadline",
        "_login_retry_at",
        "_outgoing",
        "_push_seq",
        "_rejected_in_row",
        "client_type",
        "conn_id",
        "state",
        "user_id",
    )

    def __init__(self, conn_id: int, *, limits: ConnectionLimits, now: float) -> None:
        self.conn_id = conn_id
        self.state = State.CONNECTING
        #: The authenticated user and client type (0 until `login_accepted`).
        self.user_id = 0
        self.client_type = 0
        self._limits = limits
        self._decoder: FrameDecoder | None = None  # made on the first TCP read
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._push_seq = 0
        self._bucket = TokenBucket(rate=limits.rate_per_s, burst=limits.rate_burst, now=now)
        self._rejected_in_row = 0
        self._login_deadline = now + limits.login_timeout_s
        #: A login refused unchecked says when to retry; an earlier one is refused here.
        self._login_retry_at = 0.0
        self._last_activity = now
        #: When the frame now partly received began to arrive (None: no partial frame).
        self._frame_started: float | None = None
        self._close_reason: CloseReason | None = None
        self._close_detail = ""

    # -- observers ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (after the pending output is written)."""
        return self.state is State.CLOSED

    @property
    def authenticated(self) -> bool:
        return self.state is State.AUTHENTICATED

    @property
    def close_reason(self) -> CloseReason | None:
        return self._close_reason

    def events_received(self) -> list[Event]:
        """The events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Encoded frames to write, in order, since the last call (one per WebSocket message)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float | None:
        """When `on_timer` must be called next (same clock as `now`); None once closed."""
        if self.state is State.CLOSED:
            return None
        if self.state is State.AUTHENTICATED:
            deadline = self._last_activity + self._limits.idle_timeout_s
        else:
            deadline = self._login_deadline
        if self._frame_started is not None:
            deadline = min(deadline, self._frame_started + self._limits.frame_timeout_s)
        return deadline

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from a TCP stream."""
        if self.state is State.CLOSED:
            return
        if self._decoder is None:
            self._decoder = FrameDecoder(max_frame_size=self._limits.max_frame_size)
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self._violation(str(exc))
            return
        if not self._decoder.buffered:
            self._frame_started = None
        elif frames or self._frame_started is None:
            self._frame_started = now  # the partial frame began in this read
        for frame in frames:
            self._receive_frame(frame, now)
            if self.closed:
                return

    def receive_message(self, data: bytes, now: float) -> None:
        """One binary WebSocket message, which must be exactly one frame."""
        if self.state is State.CLOSED:
            return
        try:
            frame = decode_frame(data, max_frame_size=self._limits.max_frame_size)
        except FrameError as exc:
            self._violation(str(exc))
            return
        self._receive_frame(frame, now)

    def receive_eof(self) -> None:
        """The peer closed its side (or the transport was lost)."""
        if self.state is State.CLOSED:
            return
        buffered = self._decoder.buffered if self._decoder is not None else 0
        detail = f"closed in the middle of a frame ({buffered} bytes)" if buffered else ""
        self._close(CloseReason.PEER_CLOSED, detail)

    def on_timer(self, now: float) -> None:
        """Check the deadlines; closes the connection if one has passed."""
        if self.state is State.CLOSED:
            return
        started = self._frame_started
        if started is not None and now >= started + self._limits.frame_timeout_s:
            self._close(
                CloseReason.FRAME_TIMEOUT,
                f"frame not completed within {self._limits.frame_timeout_s:g} s",
            )
        elif self.state is State.AUTHENTICATED:
            if now >= self._last_activity + self._limits.idle_timeout_s:
                self._close(
                    CloseReason.IDLE_TIMEOUT,
                    f"nothing received for {self._limits.idle_timeout_s:g} s",
                )
        elif now >= self._login_deadline:
            self._close(
                CloseReason.LOGIN_TIMEOUT,
                f"no login within {self._limits.login_timeout_s:g} s",
            )

    # -- answers from the gate ---------------------------------------------------------------

    def login_accepted(
        self, request: LoginRequested, user: base_pb2.UserInfo, *, now: float, server_time: int
    ) -> None:
        """The login checked out: answer SUCCESS with `user`, who is now the connection's user.

        `server_time` is the wall clock in Unix seconds (the core's `now` is monotonic).
        """
        if self.state is not State.AUTHENTICATING:
            return
        self.state = State.AUTHENTICATED
        self.user_id = user.user_id
        self.client_type = request.client_type
        self._last_activity = now
        self._send_login_rsp(request, ErrorCode.SUCCESS, "success", user, server_time)

    def login_rejected(
        self, request: LoginRequested, code: ErrorCode, text: str, *, server_time: int
    ) -> None:
        """The login failed: answer `code`; the client may try again before the deadline."""
        if self.state is not State.AUTHENTICATING:
            return
        self.state = State.CONNECTING
        self._send_login_rsp(request, code, text, None, server_time)

    def login_refused(
        self, request: LoginRequested, code: ExtResultCode, text: str, *, retry_at: float = 0.0
    ) -> None:
        """The login was not checked (throttled, the server busy): answer ErrorRsp `code`
        on the request's seq; the client may try again before the deadline, but not before
        `retry_at` (loop time): a login before then is refused RATE_LIMITED here, without
        reaching the gate."""
        if self.state is not State.AUTHENTICATING:
            return
        self.state = State.CONNECTING
        self._login_retry_at = retry_at
        command = Cmd.AUTH_TOKEN_REQ if isinstance(request, TokenLoginRequested) else Cmd.AUTH_REQ
        self.send_error(request.seq, command, code, text)

    def logout_done(self, request: LogoutRequested) -> None:
        """The route is removed: answer LogoutRsp and close."""
        if self.state is State.CLOSED:
            return
        rsp = login_pb2.LogoutRsp(result_code=LOGOUT_OK)
        self._queue(Cmd.LOGOUT_RSP, build_frame(Cmd.LOGOUT_RSP, request.seq, rsp))
        self._close(CloseReason.LOGOUT, "")

    def send_error(self, seq: int, command_id: int, code: ExtResultCode, text: str) -> None:
        """Answer the request (`seq`, `command_id`) with an ErrorRsp."""
        if self.state is State.CLOSED:
            return
        rsp = ext_pb2.ErrorRsp(
            request_command_id=command_id,
            result_code=ext_pb2.ExtResultCode.ValueType(code),
            text=text,
        )
        self._queue(Cmd.ERROR_RSP, build_frame(Cmd.ERROR_RSP, seq, rsp))

    def send_frame(self, command_id: int, body: bytes, seq: int | None = None) -> None:
        """Queue a frame for the client: a response echoing `seq`, or a push (`seq=None`)
        numbered by the connection's push counter 1..65535, wrapping to 1."""
        if self.state is State.CLOSED:
            return
        if seq is None:
            seq = self._push_seq = next_push_seq(self._push_seq)
        self._queue(command_id, encode_frame(command_id, seq, body))

    def push_shared(self, command_id: int, pushes: Sequence[SharedPush]) -> list[bytes]:
        """One push per `pushes` body, numbered by the push counter, counted once, returned
        to be written now — behind whatever was queued before them, which comes first in
        the list — instead of queued: the room fan-out's path (`gateway.rooms`), where one
        body goes to many connections and each costs one write. Nothing once closed."""
        if self.state is State.CLOSED or not pushes:
            return []
        seq = self._push_seq
        frames = []
        for push in pushes:
            seq = next_push_seq(seq)
            frames.append(push.frame(seq))
        self._push_seq = seq
        _FRAMES_OUT.inc(command_id, len(pushes))
        if self._outgoing:
            queued, self._outgoing = self._outgoing, []
            queued.extend(frames)
            return queued
        return frames

    def kick(self, reason: KickReason, *, new_client_type: int = 0, text: str = "") -> None:
        """Send a KickNotify, then close."""
        if self.state is State.CLOSED:
            return
        notify = ext_pb2.KickNotify(
            user_id=self.user_id,
            reason=ext_pb2.KickReason.ValueType(reason),
            new_client_type=base_pb2.ClientType.ValueType(new_client_type),
            text=text,
        )
        self.send_frame(Cmd.KICK_NOTIFY, notify.SerializeToString())
        self._close(CloseReason.KICKED, f"{reason.name.lower()}: {text}" if text else reason.name)

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """Close for a reason of the gate's (shutdown, slow consumer, refused...)."""
        if self.state is not State.CLOSED:
            self._close(reason, detail)

    # -- internals ---------------------------------------------------------------------------

    def _queue(self, command_id: int, frame: bytes) -> None:
        _FRAMES_OUT.inc(command_id)
        self._outgoing.append(frame)

    def _receive_frame(self, frame: Frame, now: float) -> None:
        _FRAMES_IN.inc(frame.command_id)
        self._last_activity = now
        if not self._bucket.take(now):
            self._rejected_in_row += 1
            if self._rejected_in_row > self._limits.rate_burst:
                self._close(
                    CloseReason.RATE_LIMITED,
                    f"{self._rejected_in_row} frames in a row above the rate limit",
                )
                return
            self.send_error(
                frame.seq, frame.command_id, ExtResultCode.RATE_LIMITED, "rate limit exceeded"
            )
            return
        self._rejected_in_row = 0
        command_id = frame.command_id
        if command_id == Cmd.HEARTBEAT:
            self._queue(Cmd.HEARTBEAT, encode_frame(Cmd.HEARTBEAT, frame.seq))
            self._events.append(HeartbeatReceived(frame.seq))
            return
        if self.state is not State.AUTHENTICATED:
            self._before_login(frame, now)
            return
        if command_id in _LOGIN_COMMANDS:
            self._refuse(frame, ExtResultCode.INVALID_PARAMETER, "already logged in")
            return
        try:
            command = spec(command_id)
            if Direction.UP not in command.direction:
                self._refuse(frame, ExtResultCode.UNKNOWN_COMMAND, "not a client command")
                return
            message = parse_body(command_id, frame.body)
        except CommandError as exc:
            code = (
                ExtResultCode.MALFORMED_BODY
                if isinstance(exc, BodyDecodeError)
                else ExtResultCode.UNKNOWN_COMMAND
            )
            self._refuse(frame, code, str(exc))
            return
        if command_id == Cmd.LOGOUT_REQ:
            assert isinstance(message, login_pb2.LogoutReq)
            if message.user_id not in (0, self.user_id):  # as every request: 0 means "me"
                log.warning(
                    "conn %d: user %d sent a LogoutReq claiming to be user %d",
                    self.conn_id,
                    self.user_id,
                    message.user_id,
                )
                self._refuse(frame, ExtResultCode.FORBIDDEN, "user_id is not the logged-in user")
                return
            self._events.append(LogoutRequested(frame.seq))
        else:
            self._events.append(UplinkFrame(frame, command, message))

    def _before_login(self, frame: Frame, now: float) -> None:
        command_id = frame.command_id
        if command_id not in _LOGIN_COMMANDS:
            self._refuse(frame, ExtResultCode.NOT_AUTHENTICATED, "log in first")
            return
        if self.state is State.AUTHENTICATING:
            self._refuse(frame, ExtResultCode.INVALID_PARAMETER, "a login is in progress")
            return
        if now < self._login_retry_at:
            wait = math.ceil(self._login_retry_at - now)
            self._refuse(
                frame, ExtResultCode.RATE_LIMITED, f"login retried early: retry in {wait} s"
            )
            return
        try:
            message = parse_body(command_id, frame.body)
        except CommandError as exc:
            self._refuse(frame, ExtResultCode.MALFORMED_BODY, str(exc))
            return
        event: LoginRequested
        if isinstance(message, login_pb2.AuthTokenReq):
            event = TokenLoginRequested(
                frame.seq,
                message.user_id,
                message.user_token,
                message.client_type,
                message.client_version,
                message.nick_name,
            )
        else:
            assert isinstance(message, login_pb2.AuthReq)
            event = PasswordLoginRequested(
                frame.seq,
                message.user_name,
                message.user_pwd,
                message.client_type,
                message.client_version,
            )
        self.state = State.AUTHENTICATING
        self._events.append(event)

    def _refuse(self, frame: Frame, code: ExtResultCode, text: str) -> None:
        log.debug(
            "conn %d: refused command 0x%04X seq %d: %s",
            self.conn_id,
            frame.command_id,
            frame.seq,
            text,
        )
        self.send_error(frame.seq, frame.command_id, code, text)

    def _send_login_rsp(
        self,
        request: LoginRequested,
        code: ErrorCode,
        text: str,
        user: base_pb2.UserInfo | None,
        server_time: int,
    ) -> None:
        server_time &= 0xFFFF_FFFF
        result_code = base_pb2.ErrorCode.ValueType(code)
        rsp: login_pb2.AuthTokenRsp | login_pb2.AuthRsp
        if isinstance(request, TokenLoginRequested):
            rsp = login_pb2.AuthTokenRsp(
                server_time=server_time,
                result_code=result_code,
                result_string=text,
                user_info=user,
            )
            self._queue(Cmd.AUTH_TOKEN_RSP, build_frame(Cmd.AUTH_TOKEN_RSP, request.seq, rsp))
        else:
            rsp = login_pb2.AuthRsp(
                server_time=server_time,
                result_code=result_code,
                result_string=text,
                user_info=user,
            )
            self._queue(Cmd.AUTH_RSP, build_frame(Cmd.AUTH_RSP, request.seq, rsp))

    def _violation(self, detail: str) -> None:
        log.warning("conn %d: protocol error, closing: %s", self.conn_id, detail)
        self._close(CloseReason.PROTOCOL_ERROR, detail)

    def _close(self, reason: CloseReason, detail: str) -> None:
        self.state = State.CLOSED
        self._close_reason = reason
        self._close_detail = detail
        self._events.append(ConnectionClosed(reason, detail))
