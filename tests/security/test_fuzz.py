"""Fuzzing the frame codec and the connection core with hypothesis (the short run of
``make test``; ``make fuzz`` runs a million inputs, see `tests/security/fuzz_run.py`).

The strategies build the families of `tests.security.fuzzing`: valid frame streams split at
random points, valid headers over corrupt or truncated protobufs of every uplink command,
length fields near the limits, unknown and server-only command ids, and raw bytes. Each
input must satisfy `check_case` / `check_decoder` (no exception but the documented protocol
errors, only the offending connection closed, a bystander connection still served).
"""

from __future__ import annotations

import itertools
import random
import struct

from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.commands import Cmd
from schemas.frame import HEADER_SIZE, encode_frame
from tests.security.fuzzing import (
    EDGE_LENGTHS,
    LIMITS,
    SPECIAL_COMMANDS,
    UPLINK_COMMANDS,
    Case,
    check_case,
    check_decoder,
    parse_or_command_error,
    random_case,
    random_message,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_HEADER = struct.Struct(">IHHHHHH")
seqs = st.integers(0, 0xFFFF)
uplink = st.sampled_from(UPLINK_COMMANDS)


@st.composite
def messages(draw: st.DrawFn) -> tuple[int, Message]:
    """A command a client may send and a message of its type with random field values."""
    cmd, cls = draw(uplink)
    # The field values come from the seeded builder; hypothesis picks (and shrinks) the seed.
    return cmd, random_message(cls, random.Random(draw(st.integers(0, 2**32))))


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    cmd, message = draw(messages())
    body = message.SerializeToString()[: LIMITS.max_frame_size - HEADER_SIZE]
    return encode_frame(cmd, draw(seqs), body)


@st.composite
def corrupt_bodies(draw: st.DrawFn) -> bytes:
    """A valid header over a truncated, bit-flipped or random body."""
    cmd, message = draw(messages())
    body = message.SerializeToString()
    how = draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ (1 << draw(st.integers(0, 7)))]) + body[at + 1 :]
    else:
        body = draw(st.binary(max_size=64))
    return encode_frame(cmd, draw(seqs), body)


@st.composite
def odd_commands(draw: st.DrawFn) -> bytes:
    cmd = draw(st.sampled_from(SPECIAL_COMMANDS) | st.integers(0, 0xFFFF))
    return encode_frame(cmd, draw(seqs), draw(st.binary(max_size=24)))


@st.composite
def edge_lengths(draw: st.DrawFn) -> bytes:
    """A header whose length field is near a limit, and some of the bytes it announces."""
    length = draw(st.sampled_from(EDGE_LENGTHS) | st.integers(0, 0xFFFF_FFFF))
    header = _HEADER.pack(length, 1, 0, 0, Cmd.MSG_DATA, 1, 0)
    announced = min(max(length - HEADER_SIZE, 0), LIMITS.max_frame_size + 8)
    return header + b"\x00" * draw(st.integers(0, announced))


frames = st.one_of(
    valid_frames(), corrupt_bodies(), odd_commands(), edge_lengths(), st.binary(max_size=40)
)


@st.composite
def split(draw: st.DrawFn, stream: bytes) -> tuple[bytes, ...]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=6)))
    bounds = [0, *(c for c in cuts if c < len(stream)), len(stream)]
    return tuple(stream[a:b] for a, b in itertools.pairwise(bounds))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    parts = draw(st.lists(frames, min_size=1, max_size=6))
    ws = draw(st.booleans())
    chunks = tuple(parts) if ws else draw(split(b"".join(parts)))
    return Case(
        chunks,
        ws=ws,
        logged_in=draw(st.booleans()),
        steps=(draw(st.sampled_from([0.0, 0.001, 1.0, 20.0, 200.0])),),
        timers=draw(st.booleans()),
    )


@FUZZ
@given(cases())
def test_the_core_survives_hostile_streams(case: Case) -> None:
    check_case(case)


@FUZZ
@given(st.lists(valid_frames(), min_size=1, max_size=8), st.data())
def test_valid_streams_split_anywhere_decode_the_same(
    parts: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(parts)
    splits = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    check_decoder(stream, splits)
    outcome = check_case(Case(data.draw(split(stream)), logged_in=True))
    assert outcome.closed is not None  # only by the final EOF: valid frames never close
    assert outcome.closed.value == "peer_closed"


@FUZZ
@given(frames, st.lists(st.integers(0, 4096), max_size=8))
def test_the_decoder_raises_only_frame_errors(data: bytes, splits: list[int]) -> None:
    check_decoder(data, splits)


@FUZZ
@given(uplink, st.binary(max_size=256))
def test_parse_body_raises_only_command_errors(
    command: tuple[int, type[Message]], body: bytes
) -> None:
    cmd, cls = command
    message = parse_or_command_error(cmd, body)
    assert message is None or type(message) is cls


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 2**64))
def test_the_bounded_runs_generator_satisfies_the_property(seed: int) -> None:
    """The generator of ``make fuzz``, a thousand of its inputs."""
    check_case(random_case(random.Random(seed)))
