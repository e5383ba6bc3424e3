"""The client side of one connection, without I/O: request seqs, pending requests, pushes.

`ClientProtocol` turns requests into frame bytes and received frames into outcomes; the
transports (`sdk.transport`) move the bytes and `sdk.client.Client` runs the loops. Nothing
here touches a socket, so seq matching, wraparound, ErrorRsp mapping and push acks are
tested without one.

Matching rules (PROTOCOL.md, "Frame"):

- Each request takes the next seq of the connection, 1..65535 wrapping to 1, skipping seqs
  still waiting for their response. A response echoes its request's seq.
- A frame completes a pending request when its seq is the request's and its command is the
  request's response command (from `schemas.commands`), or when it is an ErrorRsp (0x0802)
  for that seq and command; the latter fails the request with `ServerError`.
- Server pushes carry their own per-connection counter, which can equal a pending request's
  seq; they never carry a response command of that request, so the command tells them apart.
- Every other frame is a push. MsgData (0x0301) is acknowledged with a MsgDataAck that echoes
  the push's seq, and S2CPush (0x080B) with an S2CPushAck, unless auto-ack is off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import msgspec
from google.protobuf.message import Message

from schemas.commands import COMMANDS, Cmd, Direction, build_frame, parse_body
from schemas.errors import CommandError
from schemas.frame import MAX_SEQ, Frame
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from sdk.errors import ServerError, ServerProtocolError, TooManyPendingError

__all__ = ["ClientProtocol", "Push", "msg_data_ack_for"]

logger = logging.getLogger(__name__)

_ERROR_RSP: Final = int(Cmd.ERROR_RSP)


class Push(msgspec.Struct, frozen=True, gc=False):
    """A frame the server sent on its own (not a response to a request of ours).

    `message` is the decoded body when the command is one the server sends (MsgData,
    read notify, group member changed, kick notify, S2CPush, ...), else None; `body` is
    always the raw bytes.
    """

    command_id: int
    seq: int
    message: Message | None
    body: bytes

    @property
    def command(self) -> Cmd | None:
        """The command as a `Cmd`, or None for an id this SDK does not know."""
        try:
            return Cmd(self.command_id)
        except ValueError:
            return None


class _Pending:
    __slots__ = ("command_id", "future", "response_id")

    def __init__(self, command_id: int, response_id: int, future: asyncio.Future[Message]):
        self.command_id = command_id
        self.response_id = response_id
        self.future = future


def msg_data_ack_for(msg: message_pb2.MsgData, user_id: int) -> message_pb2.MsgDataAck:
    """The receipt ack a receiver (`user_id`) sends for a pushed MsgData.

    ``to_session_id`` names the conversation as the receiver sees it: the sender for a single
    chat, the group for a group chat.
    """
    group = msg.session_type == base_pb2.SESSION_TYPE_GROUP
    to_session = msg.to_session_id if group else msg.from_user_id
    return message_pb2.MsgDataAck(
        from_user_id=user_id,
        to_session_id=to_session,
        client_msg_id=msg.client_msg_id,
        server_msg_id=msg.server_msg_id,
        res_code=base_pb2.RES_CODE_OK,
        session_type=msg.session_type,
        create_time=msg.create_time,
    )


class ClientProtocol:
    """Seqs, pending requests and push handling of one connection.

    Futures are created on the running loop when a request is registered; the owner sets
    `user_id` once logged in (acks carry it) and calls `fail_all` when the connection ends.
    """

    __slots__ = ("_pending", "_seq", "auto_ack", "user_id")

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.user_id = 0
        self._seq = 0
        self._pending: dict[int, _Pending] = {}

    @property
    def pending(self) -> int:
        """Requests waiting for their response."""
        return len(self._pending)

    def next_seq(self) -> int:
        """The next free request seq: 1..65535, wrapping to 1, never one still pending."""
        if len(self._pending) >= MAX_SEQ:
            raise TooManyPendingError(f"{MAX_SEQ} requests are already waiting")
        seq = self._seq
        while True:
            seq = 1 if seq >= MAX_SEQ else seq + 1
            if seq not in self._pending:
                self._seq = seq
                return seq

    def request(
        self, command: Cmd, message: Message, *, expect_response: bool = True
    ) -> tuple[int, bytes, asyncio.Future[Message] | None]:
        """Frame a request; return its seq, its bytes and, when the command has a response
        and `expect_response`, the future that the response (or its error) completes.

        The caller must `forget` the seq if it gives up waiting (timeout, cancellation).
        """
        seq = self.next_seq()
        data = build_frame(command, seq, message)
        response = COMMANDS[command].response
        if response is None or not expect_response:
            return seq, data, None
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[seq] = _Pending(command, response, future)
        return seq, data, future

    def forget(self, seq: int) -> None:
        """Stop waiting for the response of `seq` (a late response becomes a push)."""
        self._pending.pop(seq, None)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending request with `exc` (the connection is gone)."""
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(exc)

    def receive(self, frame: Frame) -> tuple[Push | None, list[bytes]]:
        """Handle one received frame.

        Returns the push to deliver (None when the frame completed a request or was dropped)
        and the frames to send back (push acks).
        """
        entry = self._pending.get(frame.seq)
        if entry is not None:
            if frame.command_id == entry.response_id:
                del self._pending[frame.seq]
                self._complete(entry, frame)
                return None, []
            if frame.command_id == _ERROR_RSP and self._reject(entry, frame):
                del self._pending[frame.seq]
                return None, []
        return self._push(frame)

    @staticmethod
    def _complete(entry: _Pending, frame: Frame) -> None:
        if entry.future.done():  # cancelled by its waiter a moment ago
            return
        try:
            entry.future.set_result(parse_body(frame.command_id, frame.body))
        except CommandError as exc:
            entry.future.set_exception(ServerProtocolError(str(exc)))

    @staticmethod
    def _reject(entry: _Pending, frame: Frame) -> bool:
        """Fail `entry` with the ErrorRsp in `frame` if it is meant for it."""
        try:
            rsp = ext_pb2.ErrorRsp.FromString(frame.body)
        except Exception:
            logger.warning("undecodable ErrorRsp for seq %d", frame.seq)
            return False
        if rsp.request_command_id not in (0, entry.command_id):
            return False  # an error for another command that happened to reuse the seq
        if not entry.future.done():
            entry.future.set_exception(
                ServerError(rsp.result_code, rsp.request_command_id or entry.command_id, rsp.text)
            )
        return True

    def _push(self, frame: Frame) -> tuple[Push | None, list[bytes]]:
        spec = COMMANDS.get(frame.command_id)
        message: Message | None = None
        if spec is not None and Direction.DOWN in spec.direction:
            try:
                message = parse_body(frame.command_id, frame.body)
            except CommandError as exc:
                logger.warning("dropping push 0x%04X: %s", frame.command_id, exc)
                return None, []
        if frame.command_id == Cmd.HEARTBEAT:
            # A heartbeat that answers no request of ours: the gate answers every heartbeat,
            # so echoing it would ping-pong forever. It only shows the link is alive.
            return None, []
        replies: list[bytes] = []
        if self.auto_ack:
            if isinstance(message, message_pb2.MsgData):
                ack = msg_data_ack_for(message, self.user_id)
                replies.append(build_frame(Cmd.MSG_DATA_ACK, frame.seq, ack))
            elif isinstance(message, ext_pb2.S2CPush):
                ack_push = ext_pb2.S2CPushAck(user_id=self.user_id, push_id=message.push_id)
                replies.append(build_frame(Cmd.S2C_PUSH_ACK, frame.seq, ack_push))
        return Push(frame.command_id, frame.seq, message, frame.body), replies
