"""Every IntEnum of schemas.codes has exactly the values of its proto enum."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest
from google.protobuf.descriptor import EnumDescriptor

from schemas import codes
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, voip_pb2

PROTO_ENUMS: dict[str, EnumDescriptor] = {
    **base_pb2.DESCRIPTOR.enum_types_by_name,
    **ext_pb2.DESCRIPTOR.enum_types_by_name,
    **voip_pb2.DESCRIPTOR.enum_types_by_name,
}


def _prefix(enum_name: str) -> str:
    """`GroupBeInviteMode` -> `GROUP_BE_INVITE_MODE_`, the prefix of its proto values."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"


def _int_enums() -> dict[str, type[IntEnum]]:
    return {
        name: obj
        for name in codes.__all__
        if isinstance(obj := getattr(codes, name), type) and issubclass(obj, IntEnum)
    }


def test_one_int_enum_per_proto_enum() -> None:
    assert set(_int_enums()) == set(PROTO_ENUMS)


@pytest.mark.parametrize("name", sorted(PROTO_ENUMS))
def test_int_enum_mirrors_proto_enum(name: str) -> None:
    prefix = _prefix(name)
    proto_values = {}
    for value in PROTO_ENUMS[name].values:
        assert value.name.startswith(prefix), f"{value.name} lacks the prefix {prefix}"
        proto_values[value.name.removeprefix(prefix)] = value.number
    assert {m.name: m.value for m in _int_enums()[name]} == proto_values


def test_protocol_md_numbers_spot_check() -> None:
    # A few values copied from PROTOCOL.md, independent of both definitions above.
    spot: list[tuple[IntEnum, int]] = [
        (codes.ErrorCode.SUCCESS, 200),
        (codes.ErrorCode.LOGIN_INVALID_USER_OR_PWD, 2003),
        (codes.ErrorCode.USER_NOT_EXIST, 9002),
        (codes.ClientType.MAC_OS, 6),
        (codes.MsgType.AVCHAT, 10),
        (codes.MsgStatus.FAILED, 10),
        (codes.MsgFeature.ROAM_MSG, 2),
        (codes.GroupType.SUPER, 2),
    ]
    assert [int(member) for member, _ in spot] == [number for _, number in spot]


def test_retriable_result_codes() -> None:
    assert codes.ExtResultCode.UNAVAILABLE.retriable
    assert not codes.ExtResultCode.FORBIDDEN.retriable
