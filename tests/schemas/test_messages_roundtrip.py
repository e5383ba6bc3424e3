"""Every protobuf message of both packages survives serialization, alone and inside a frame.

Values come from hypothesis strategies derived from the descriptors, so a message added to a
.proto file is covered without touching this file; enum fields also get values outside the
enum, since proto3 enums are open and a newer client may send one.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.commands import COMMANDS, parse_body
from schemas.frame import FrameDecoder, decode_frame, encode_frame
from schemas.generate import PB_DIR
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

MODULES = (base_pb2, login_pb2, list_pb2, message_pb2, group_pb2, friend_pb2, voip_pb2, ext_pb2)
DESCRIPTORS: dict[str, Descriptor] = {
    d.full_name: d for m in MODULES for d in m.DESCRIPTOR.message_types_by_name.values()
}

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: st.text(max_size=20),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
}


def _field_strategy(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return messages(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-(2**31), 2**31 - 1)
    return _SCALARS[field.type]


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of fields set to any valid value."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _field_strategy(field, depth)
        fields[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda kwargs: cls(**kwargs))


def test_every_message_is_covered() -> None:
    generated = {p.stem for p in PB_DIR.rglob("*_pb2.py")}
    assert {m.__name__.rsplit(".", 1)[1] for m in MODULES} == generated
    bodies = {e.message.DESCRIPTOR.full_name for e in COMMANDS.values()}
    assert bodies <= DESCRIPTORS.keys()
    # Everything else is a building block of those bodies.
    assert {name.split(".")[1] for name in DESCRIPTORS.keys() - bodies} == {
        "UserInfo",
        "ChannelInfo",
        "ContactSessionInfo",
        "MsgInfo",
        "GroupInfo",
        "GroupVersionInfo",
        "GroupMemberChangedInfo",
        "InboxEntry",
        "GroupReadState",
    }


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
@settings(max_examples=25)  # x 60 messages
@given(data=st.data())
def test_message_round_trip(name: str, data: st.DataObject) -> None:
    message = data.draw(messages(DESCRIPTORS[name]))
    wire = message.SerializeToString()
    again = type(message).FromString(wire)
    assert again == message
    # Deterministic: re-encoding the decoded message gives the same bytes.
    assert again.SerializeToString(deterministic=True) == message.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
@settings(max_examples=25)  # x 52 commands
@given(data=st.data())
def test_command_frame_round_trip(cmd: int, data: st.DataObject) -> None:
    message = data.draw(messages(DESCRIPTORS[COMMANDS[cmd].message.DESCRIPTOR.full_name]))
    seq = data.draw(st.integers(0, 0xFFFF))
    encoded = encode_frame(cmd, seq, message.SerializeToString())
    for frame in (decode_frame(encoded), *FrameDecoder().feed(encoded)):
        assert (frame.command_id, frame.seq) == (cmd, seq)
        assert parse_body(frame.command_id, frame.body) == message
