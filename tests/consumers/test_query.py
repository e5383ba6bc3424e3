"""Pure helpers of the query group (`consumers.query`)."""

from __future__ import annotations

from consumers.query import read_counts
from schemas.ids import UserId

A, B, C, GONE = UserId(1), UserId(2), UserId(3), UserId(9)


def test_a_sender_has_read_their_own_message() -> None:
    reads = {A: 0, B: 5, C: 2}
    senders = {2: A, 5: C, 7: B, 8: GONE}
    counts = read_counts(reads, senders, [1, 2, 5, 7, 8, 9])
    assert counts == {
        1: 2,  # B and C read it
        2: 3,  # B and C read it, A sent it
        5: 2,  # B read it, C sent it
        7: 1,  # nobody read it, B sent it
        8: 0,  # its sender left the group: not a member, not counted
        9: 0,
    }
    # A sender whose read seq already covers the message is not counted twice.
    assert read_counts({A: 6, B: 0}, {5: A}, [5]) == {5: 1}
