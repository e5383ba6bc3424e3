"""Decoding and authorizing client requests: what the ack, query and group handlers share.

A record on an uplink topic is an `Envelope`; its body was already checked by the gate
(`gateway.core` refuses frames whose body does not decode), so a body that fails to decode
here means a broken producer: the record is poison and goes to the dead-letter topic
(`bus.base.Reject`), like an envelope that does not decode.

Identity is the envelope's origin, never the body (DESIGN.md, "cannot impersonate"). Every
request body of the CoffeeChat protocol repeats the user id; `acting_user` accepts it only
when it is the authenticated user or 0 (proto3's "not set"), and raises `Refusal(FORBIDDEN)`
otherwise. Handlers turn a `Refusal` into an ErrorRsp (0x0802) — or, for the commands whose
response has a ``result_code`` of its own, into that response (docs/protocol-extensions.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.message import Message

from bus.base import Record, Reject
from schemas.codes import ExtResultCode, SessionType
from schemas.commands import parse_body
from schemas.envelope import Envelope, Origin, decode_envelope
from schemas.errors import CommandError, EnvelopeError
from schemas.ids import ConversationId, UserId, conversation_id

__all__ = ["Refusal", "Request", "acting_user", "conversation_of", "decode_request"]

log = logging.getLogger(__name__)


class Refusal(Exception):
    """A request the server will not serve; becomes an ErrorRsp (or a result code)."""

    def __init__(self, code: ExtResultCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded uplink record."""

    envelope: Envelope
    message: Message

    @property
    def origin(self) -> Origin | None:
        """Where the request came from; None for a system command (API, group handler)."""
        return self.envelope.origin

    @property
    def cmd(self) -> int:
        """The command id."""
        return self.envelope.cmd


def decode_request(record: Record) -> Request:
    """The envelope and body of `record`; `Reject` (dead-letter) when either is garbage."""
    try:
        envelope = decode_envelope(record.value)
    except EnvelopeError as exc:
        raise Reject(str(exc)) from exc
    try:
        message = parse_body(envelope.cmd, envelope.body)
    except CommandError as exc:
        raise Reject(str(exc)) from exc
    return Request(envelope, message)


def acting_user(origin: Origin, body_user_id: int, cmd: int) -> UserId:
    """The authenticated user, after checking the body does not claim another one.

    0 in the body means "not set" and stands for the authenticated user.
    """
    if body_user_id not in (0, origin.user_id):
        log.warning(
            "refused command 0x%04X: user %d (gate %s, conn %d) claimed to be user %d",
            cmd,
            origin.user_id,
            origin.gate_id,
            origin.conn_id,
            body_user_id,
        )
        raise Refusal(ExtResultCode.FORBIDDEN, "user_id is not the logged-in user")
    return UserId(origin.user_id)


def conversation_of(user_id: UserId, session_type: int, session_id: int) -> ConversationId:
    """The conversation `user_id` names by (session type, session id); `Refusal` if invalid.

    A single chat's conversation is built from the requester and the peer, so it always
    includes the requester: nobody can name another pair's chat.
    """
    if session_type not in (SessionType.SINGLE, SessionType.GROUP):
        raise Refusal(ExtResultCode.INVALID_PARAMETER, f"invalid session_type {session_type}")
    try:
        return conversation_id(session_type, user_id, session_id)
    except ValueError as exc:
        raise Refusal(ExtResultCode.INVALID_PARAMETER, str(exc)) from None
