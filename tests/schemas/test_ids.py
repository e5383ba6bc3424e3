"""Conversation ids, gate ids and trace ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codes import SessionType
from schemas.ids import (
    MAX_U64,
    GroupId,
    UserId,
    c2c_conversation_id,
    conversation_id,
    gate_id,
    group_conversation_id,
    new_trace_id,
    parse_conversation_id,
)

ids = st.integers(min_value=1, max_value=MAX_U64)


@given(a=ids, b=ids)
def test_c2c_id_is_symmetric_and_parses_back(a: int, b: int) -> None:
    cid = c2c_conversation_id(UserId(a), UserId(b))
    assert cid == c2c_conversation_id(UserId(b), UserId(a))
    assert parse_conversation_id(cid) == (SessionType.SINGLE, (min(a, b), max(a, b)))
    assert len(cid) <= 43


@given(a=ids, b=ids, c=ids, d=ids)
def test_c2c_ids_differ_for_different_pairs(a: int, b: int, c: int, d: int) -> None:
    same_pair = {a, b} == {c, d}
    same_id = c2c_conversation_id(UserId(a), UserId(b)) == c2c_conversation_id(UserId(c), UserId(d))
    assert same_pair == same_id


@given(g=ids)
def test_group_id_parses_back(g: int) -> None:
    cid = group_conversation_id(GroupId(g))
    assert parse_conversation_id(cid) == (SessionType.GROUP, (g,))


def test_examples() -> None:
    assert c2c_conversation_id(UserId(7), UserId(3)) == "s:3:7"
    assert group_conversation_id(GroupId(9)) == "g:9"
    assert conversation_id(SessionType.SINGLE, UserId(7), 3) == "s:3:7"
    assert conversation_id(SessionType.GROUP, UserId(7), 3) == "g:3"


@pytest.mark.parametrize("session_type", [SessionType.INVALID, 3, -1])
def test_conversation_id_rejects_unknown_session_types(session_type: int) -> None:
    with pytest.raises(ValueError, match="session type"):
        conversation_id(session_type, UserId(1), 2)


@pytest.mark.parametrize("bad", [0, -1, MAX_U64 + 1])
def test_ids_out_of_range_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="not in"):
        c2c_conversation_id(UserId(1), UserId(bad))
    with pytest.raises(ValueError, match="not in"):
        group_conversation_id(GroupId(bad))


@pytest.mark.parametrize(
    "text",
    ["", "s:1", "s:7:3", "s:01:3", "s:1:2:3", "g:0", "g:-1", "g: 1", "x:1", "g:1 ",
     f"g:{MAX_U64 + 1}", "s:+1:2"],
)  # fmt: skip
def test_non_canonical_ids_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"canonical|not in"):
        parse_conversation_id(text)


@pytest.mark.parametrize("good", ["gate-1", "g", "gate_2.eu-west", "A" * 128])
def test_gate_ids(good: str) -> None:
    assert gate_id(good) == good


@pytest.mark.parametrize("bad", ["", ".hidden", "gate 1", "gate/1", "A" * 129, "gäte"])
def test_bad_gate_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="gate id"):
        gate_id(bad)


def test_trace_ids_are_random_hex() -> None:
    first, second = new_trace_id(), new_trace_id()
    assert first != second
    assert len(first) == 32
    assert int(first, 16) >= 0
