"""Hostile client input for the frame codec and the sans-I/O connection core, and the
property every input must satisfy.

Three engines drive the same checks:

- `tests/security/test_fuzz.py`: hypothesis strategies (shrinking, a few seconds in
  ``make test``);
- `tests/security/fuzz_run.py`: ``make fuzz``, a bounded run of a million or more inputs
  from the seeded generator below (`random_case`), which builds the same families of input
  as the strategies, only faster;
- atheris, when installed, mutating bytes under coverage (also in `fuzz_run`).

An input (`Case`) is what one client sends on one connection: a list of chunks, each a
TCP read (``ws=False``) or a whole WebSocket message (``ws=True``), before or after login,
with the clock moving between chunks. The families: valid frame streams split at random
points, valid headers with corrupt bodies (random bytes, truncated or bit-flipped
protobufs), length fields near the limits, unknown and server-to-client command ids, and
byte mutations of all of those.

The property (`check_case`): no exception leaves the core (`Connection` never raises on
input) or the codec beyond its documented protocol errors (`FrameError` from the decoder,
`CommandError` from `parse_body`, `InvalidRequest` from the uplink key); a connection
closes only for the reasons bad input may cause; what it sends back is well-formed frames
of server commands; after the close nothing more comes out; and a second, well-behaved
connection fed between the chunks keeps being served.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.core import (
    CloseReason,
    Connection,
    ConnectionClosed,
    ConnectionLimits,
    HeartbeatReceived,
    LogoutRequested,
    PasswordLoginRequested,
    TokenLoginRequested,
    UplinkFrame,
)
from gateway.uplink import InvalidRequest, record_key
from schemas.codes import ExtResultCode
from schemas.commands import COMMANDS, Cmd, Direction, parse_body
from schemas.errors import CommandError, FrameError
from schemas.frame import HEADER_SIZE, FrameDecoder, decode_frame, encode_frame
from schemas.ids import UserId
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, login_pb2

__all__ = [
    "LIMITS",
    "UPLINK_COMMANDS",
    "Case",
    "check_case",
    "check_decoder",
    "parse_or_command_error",
    "random_case",
    "random_message",
]

#: Small limits so that inputs reach them: frames near `max_frame_size`, the rate limit.
LIMITS = ConnectionLimits(
    max_frame_size=2048,
    login_timeout_s=15.0,
    idle_timeout_s=180.0,
    rate_per_s=200.0,
    rate_burst=64,
)
USER = 7
T0 = 1000.0

#: Every command a client may send, with its message type.
UPLINK_COMMANDS: tuple[tuple[int, type[Message]], ...] = tuple(
    (cmd, s.message) for cmd, s in sorted(COMMANDS.items()) if Direction.UP in s.direction
)
_KNOWN = frozenset(COMMANDS)
#: Command ids a fuzzer should hit on purpose: unknown ones, VoIP signalling,
#: server-to-client ones, and the edges of the u16.
SPECIAL_COMMANDS: tuple[int, ...] = (
    0,
    1,
    0xFFFF,
    0x0106,
    0x0401,
    0x0407,
    0x050A,
    0x08FF,
    Cmd.ERROR_RSP,
    Cmd.KICK_NOTIFY,
    Cmd.AUTH_TOKEN_RSP,
    Cmd.MSG_READ_NOTIFY,
)
#: Lengths around the header size and `LIMITS.max_frame_size`, and the u32 edges.
EDGE_LENGTHS: tuple[int, ...] = (
    0,
    1,
    HEADER_SIZE - 1,
    HEADER_SIZE,
    HEADER_SIZE + 1,
    LIMITS.max_frame_size - 1,
    LIMITS.max_frame_size,
    LIMITS.max_frame_size + 1,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
)
#: What bad input may close a connection for.
INPUT_CLOSE_REASONS = frozenset(
    {
        CloseReason.PROTOCOL_ERROR,
        CloseReason.RATE_LIMITED,
        CloseReason.LOGIN_TIMEOUT,
        CloseReason.IDLE_TIMEOUT,
        CloseReason.PEER_CLOSED,
        CloseReason.FRAME_TIMEOUT,
    }
)
#: What the core itself may send a client (responses and ErrorRsp; pushes come from the gate).
SERVER_COMMANDS = frozenset(
    {Cmd.HEARTBEAT, Cmd.ERROR_RSP, Cmd.AUTH_TOKEN_RSP, Cmd.AUTH_RSP, Cmd.LOGOUT_RSP}
)
_HEADER = struct.Struct(">IHHHHHH")


@dataclass(frozen=True)
class Case:
    """What one client sends on one connection (see the module docstring)."""

    chunks: tuple[bytes, ...]
    ws: bool = False
    logged_in: bool = True
    #: seconds the clock moves before each chunk (cycled)
    steps: tuple[float, ...] = (0.0,)
    #: also run the timers after each chunk
    timers: bool = False


@dataclass
class Outcome:
    """What `check_case` observed (for statistics of a long run)."""

    closed: CloseReason | None = None
    uplinks: int = 0
    errors: dict[ExtResultCode, int] = field(default_factory=dict)


# --- the property ----------------------------------------------------------------------------


def _login(conn: Connection, now: float) -> None:
    req = login_pb2.AuthTokenReq(
        user_id=USER, user_token="t", client_type=base_pb2.CLIENT_TYPE_ANDROID
    )
    conn.receive_data(encode_frame(Cmd.AUTH_TOKEN_REQ, 1, req.SerializeToString()), now)
    [event] = conn.events_received()
    assert isinstance(event, TokenLoginRequested)
    conn.login_accepted(event, base_pb2.UserInfo(user_id=USER), now=now, server_time=1)
    conn.data_to_send()


def _check_output(conn: Connection, outcome: Outcome) -> None:
    out = conn.data_to_send()
    if not out:
        return
    for frame in FrameDecoder(max_frame_size=1 << 24).feed(b"".join(out)):
        assert frame.command_id in SERVER_COMMANDS, f"core sent 0x{frame.command_id:04X}"
        if frame.command_id == Cmd.ERROR_RSP:
            code = ExtResultCode(ext_pb2.ErrorRsp.FromString(frame.body).result_code)
            outcome.errors[code] = outcome.errors.get(code, 0) + 1


#: Uplink commands the core hands to the gate without a topic: room membership lives in the
#: gate that holds the connection (gateway/rooms.py).
GATE_ANSWERED = frozenset({Cmd.ROOM_JOIN_REQ, Cmd.ROOM_LEAVE_REQ, Cmd.ROOM_MEMBER_COUNT_REQ})


def _check_events(conn: Connection, outcome: Outcome) -> None:
    for event in conn.events_received():
        assert outcome.closed is None, f"event {event!r} after the close"
        if isinstance(event, ConnectionClosed):
            assert event.reason in INPUT_CLOSE_REASONS, event
            assert conn.closed
            outcome.closed = event.reason
        elif isinstance(event, UplinkFrame):
            assert conn.authenticated
            assert type(event.message) is event.spec.message
            outcome.uplinks += 1
            if event.spec.topic is None:  # answered by the gate itself: rooms, not published
                assert event.spec.cmd in GATE_ANSWERED, event.spec
                continue
            try:  # the gate's next step with the decoded body
                key = record_key(event.spec, event.message, UserId(USER))
            except InvalidRequest:
                continue
            assert isinstance(key, bytes)
            assert key
        else:
            assert isinstance(
                event,
                HeartbeatReceived | LogoutRequested | TokenLoginRequested | PasswordLoginRequested,
            ), event


def _bystander_round(conn: Connection, seq: int, now: float) -> None:
    """A well-behaved connection's heartbeat must be answered, whatever the other one does."""
    heartbeat = encode_frame(Cmd.HEARTBEAT, seq)
    conn.receive_data(heartbeat, now)
    assert conn.data_to_send() == [heartbeat]  # answered with the same seq
    assert conn.events_received() == [HeartbeatReceived(seq)]
    assert not conn.closed


def check_case(case: Case) -> Outcome:
    """Feed `case` to a fresh connection beside a well-behaved one; assert the property."""
    now = T0
    conn = Connection(1, limits=LIMITS, now=now)
    bystander = Connection(2, limits=LIMITS, now=now)
    if case.logged_in:
        _login(conn, now)
    outcome = Outcome()
    steps = case.steps or (0.0,)
    for i, chunk in enumerate(case.chunks):
        now += steps[i % len(steps)]
        if case.ws:
            conn.receive_message(chunk, now)
        else:
            conn.receive_data(chunk, now)
        if case.timers:
            conn.on_timer(now)
        _check_events(conn, outcome)
        _check_output(conn, outcome)
        _bystander_round(bystander, i % 0xFFFF + 1, now)
    conn.receive_eof()
    _check_events(conn, outcome)
    _check_output(conn, outcome)
    assert conn.closed
    assert conn.next_deadline() is None
    conn.receive_data(encode_frame(Cmd.HEARTBEAT, 1), now)  # nothing after the close
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    return outcome


def check_decoder(data: bytes, splits: Sequence[int]) -> None:
    """The codec alone: `data` fed in pieces at `splits` gives the same frames (or the same
    `FrameError`) as fed at once; `decode_frame` and `parse_body` raise only their own
    documented errors."""
    whole: list[object] = []
    try:
        whole.extend(FrameDecoder(max_frame_size=LIMITS.max_frame_size).feed(data))
    except FrameError:
        whole.append(FrameError)
    pieces: list[object] = []
    decoder = FrameDecoder(max_frame_size=LIMITS.max_frame_size)
    bounds = [0, *sorted(s for s in splits if 0 < s < len(data)), len(data)]
    for start, end in itertools.pairwise(bounds):
        try:
            pieces.extend(decoder.feed(data[start:end]))
        except FrameError:
            pieces.append(FrameError)
            break
    if FrameError in whole:
        # Fed at once, frames completed before the bad length are dropped with the error.
        assert pieces[-1] is FrameError
        try:
            decoder.feed(b"\x00" * 16)
        except FrameError:
            pass
        else:
            raise AssertionError("a failed decoder accepted more input")
    else:
        assert pieces == whole
    try:
        frame = decode_frame(data, max_frame_size=LIMITS.max_frame_size)
    except FrameError:
        return
    assert frame.encode() == data
    parse_or_command_error(frame.command_id, frame.body)


def parse_or_command_error(cmd: int, body: bytes) -> Message | None:
    """`parse_body`, where only a `CommandError` naming `cmd` may come out (then None)."""
    try:
        message = parse_body(cmd, body)
    except CommandError as exc:
        if exc.command_id != cmd:
            raise AssertionError(
                f"CommandError for 0x{exc.command_id:04X}, not 0x{cmd:04X}"
            ) from exc
        return None
    assert type(message) is COMMANDS[cmd].message
    return message


# --- a fast seeded generator (the bounded run) ----------------------------------------------

_INTS = (0, 1, 2, 127, 128, 255, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32, (1 << 63) - 1, (1 << 64) - 1)
_INT32 = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32)
_INT64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64)
_STRINGS = ("", "a", "é", "\u0000", "𝄞" * 3, "x" * 70, "s:1:2", "g:1")


def _random_scalar(t: int, rnd: random.Random) -> object:
    if t == FieldDescriptor.TYPE_STRING:
        return (
            rnd.choice(_STRINGS)
            if rnd.random() < 0.7
            else "".join(chr(rnd.randrange(0x20, 0x3000)) for _ in range(rnd.randrange(12)))
        )
    if t == FieldDescriptor.TYPE_BYTES:
        return rnd.randbytes(rnd.choice((0, 1, 8, 64)))
    if t == FieldDescriptor.TYPE_BOOL:
        return rnd.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        return rnd.choice((0, 1, 2, 9, 0x7FFF_FFFF, -1))
    if t in _INT32:
        return rnd.choice((0, 1, -1, 0x7FFF_FFFF, -(1 << 31)))
    if t in _INT64:
        return rnd.choice((0, 1, -1, (1 << 63) - 1, -(1 << 63)))
    limit = 1 << (32 if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32) else 64)
    value = rnd.choice(_INTS) if rnd.random() < 0.6 else rnd.randrange(1 << 20)
    return value % limit


def random_message(cls: type[Message], rnd: random.Random, depth: int = 0) -> Message:
    """A message of `cls` with random (often edge) values in random fields."""
    message = cls()
    _fill(message, rnd, depth)
    return message


def _fill(message: Message, rnd: random.Random, depth: int) -> None:
    for fd in message.DESCRIPTOR.fields:
        if rnd.random() < 0.3:
            continue
        nested = fd.type == FieldDescriptor.TYPE_MESSAGE
        if nested and depth >= 2:
            continue
        if fd.is_repeated:
            container = getattr(message, fd.name)
            for _ in range(rnd.choice((0, 1, 2, 5))):
                if nested:
                    _fill(container.add(), rnd, depth + 1)
                else:
                    container.append(_random_scalar(fd.type, rnd))
        elif nested:
            _fill(getattr(message, fd.name), rnd, depth + 1)
        else:
            setattr(message, fd.name, _random_scalar(fd.type, rnd))


def _valid_frame(rnd: random.Random) -> bytes:
    cmd, cls = rnd.choice(UPLINK_COMMANDS)
    body = random_message(cls, rnd).SerializeToString()
    return encode_frame(cmd, rnd.randrange(1 << 16), body[: LIMITS.max_frame_size - HEADER_SIZE])


def _corrupt_body(rnd: random.Random) -> bytes:
    cmd, cls = rnd.choice(UPLINK_COMMANDS)
    body = random_message(cls, rnd).SerializeToString()
    kind = rnd.randrange(3)
    if kind == 0 and body:
        body = body[: rnd.randrange(len(body))]  # truncated protobuf
    elif kind == 1 and body:
        flipped = bytearray(body)
        for _ in range(rnd.randrange(1, 4)):
            flipped[rnd.randrange(len(flipped))] ^= 1 << rnd.randrange(8)
        body = bytes(flipped)
    else:
        body = rnd.randbytes(rnd.randrange(64))
    return encode_frame(cmd, rnd.randrange(1 << 16), body)


def _odd_command(rnd: random.Random) -> bytes:
    cmd = rnd.choice(SPECIAL_COMMANDS) if rnd.random() < 0.5 else rnd.randrange(1 << 16)
    return encode_frame(cmd, rnd.randrange(1 << 16), rnd.randbytes(rnd.randrange(24)))


def _edge_length(rnd: random.Random) -> bytes:
    length = rnd.choice(EDGE_LENGTHS)
    header = _HEADER.pack(length, 1, 0, 0, rnd.choice((Cmd.MSG_DATA, Cmd.HEARTBEAT)), 1, 0)
    tail = min(max(length - HEADER_SIZE, 0), LIMITS.max_frame_size + 8)
    return header + rnd.randbytes(rnd.choice((0, tail, rnd.randrange(tail + 1))))


_FRAMES: tuple[Callable[[random.Random], bytes], ...] = (
    _valid_frame,
    _valid_frame,
    _corrupt_body,
    _odd_command,
    _edge_length,
)


def _split(stream: bytes, rnd: random.Random) -> tuple[bytes, ...]:
    if len(stream) < 2:
        return (stream,)
    cuts = sorted(rnd.sample(range(1, len(stream)), min(len(stream) - 1, rnd.randrange(1, 6))))
    bounds = [0, *cuts, len(stream)]
    return tuple(stream[a:b] for a, b in itertools.pairwise(bounds))


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    if not data:
        return rnd.randbytes(rnd.randrange(32))
    buf = bytearray(data)
    for _ in range(rnd.randrange(1, 4)):
        op = rnd.randrange(3)
        pos = rnd.randrange(len(buf))
        if op == 0:
            buf[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del buf[pos : pos + rnd.randrange(1, 8)]
        else:
            buf[pos:pos] = rnd.randbytes(rnd.randrange(1, 8))
        if not buf:
            break
    return bytes(buf)


def random_case(rnd: random.Random) -> Case:
    """One input of the families in the module docstring."""
    frames = [rnd.choice(_FRAMES)(rnd) for _ in range(rnd.randrange(1, 6))]
    if rnd.random() < 0.15:
        frames = [_mutate(f, rnd) for f in frames]
    ws = rnd.random() < 0.3
    if ws:
        chunks = tuple(frames) if rnd.random() < 0.8 else _split(b"".join(frames), rnd)
    else:
        chunks = _split(b"".join(frames), rnd)
    steps = (0.0,) if rnd.random() < 0.7 else (rnd.choice((0.001, 1.0, 20.0, 200.0)),)
    return Case(chunks, ws=ws, logged_in=rnd.random() < 0.8, steps=steps, timers=rnd.random() < 0.3)
