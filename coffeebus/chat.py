"""The terminal chat client's logic, apart from the terminal: `ChatSession`.

`coffeebus chat` (`coffeebus.commands.chat`) is a thin shell: it reads lines from the
terminal and hands them to `ChatSession.handle_line`, feeds the SDK client's events to
`ChatSession.handle_event`, and prints what the session writes. The session never touches
stdin or stdout — it gets a `write(line)` callable — so tests drive it with a real client
against a real system and assert the lines it rendered.

Commands (``/help`` lists them)::

    /sessions            the session list, newest first, with unread counts
    /open u:ID | ID      open the single chat with user ID (shows its latest messages)
    /open g:ID           open group ID
    /more                older messages of the open conversation
    /quit                leave
    anything else        is sent as a text message to the open conversation

Read receipts: whatever the session shows of the open conversation — the history on
``/open``, a message arriving live — is acknowledged as read (MsgDataReadAck 0x0303, "all
≤ this seq"), so the peer sees it read; a read notify (0x0304) from the peer is shown as
``✓ read by ... up to #seq``. Messages of other conversations are announced in one line and
stay unread until opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from schemas.codes import MsgNotificationType, MsgType, SessionType
from schemas.commands import Cmd
from schemas.pb.coffeechat import base_pb2, list_pb2, message_pb2
from sdk.client import Client
from sdk.errors import SdkError
from sdk.events import Disconnected, Event, Kicked, Push, Reconnected

__all__ = ["HELP", "ChatSession", "Conversation", "parse_conversation"]

log = logging.getLogger(__name__)

HELP: Final = """\
/sessions          list conversations with unread counts
/open u:ID | ID    open the single chat with user ID
/open g:ID         open group ID
/more              show older messages of the open conversation
/quit              leave
text               send it to the open conversation"""

#: messages shown per page of history
PAGE: Final = 20

_NOTIFICATION_VERBS: Final = {
    MsgNotificationType.GROUP_CREATE: "created the group with",
    MsgNotificationType.GROUP_BE_INVITE: "added",
    MsgNotificationType.GROUP_KICK: "removed",
    MsgNotificationType.GROUP_LEAVE: "left",
    MsgNotificationType.GROUP_UPDATE: "updated the group:",
    MsgNotificationType.GROUP_DISMISS: "disbanded the group",
}


class Conversation(msgspec.Struct, frozen=True):
    """A conversation as the client addresses it: a peer user or a group."""

    session_type: SessionType
    session_id: int

    def __str__(self) -> str:
        return f"{'g' if self.session_type == SessionType.GROUP else 'u'}:{self.session_id}"


def parse_conversation(text: str) -> Conversation:
    """``u:42`` or ``42`` (a user), ``g:7`` (a group); `ValueError` otherwise."""
    kind, _, raw = text.strip().rpartition(":")
    if kind not in ("", "u", "g") or not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"not a conversation: {text!r} (use u:ID, ID or g:ID)")
    session_type = SessionType.GROUP if kind == "g" else SessionType.SINGLE
    return Conversation(session_type, int(raw))


class _Notification(msgspec.Struct, frozen=True):
    """The fields of a group notification's JSON that the client shows."""

    notification_type: int = 0
    operator_user_id: int = 0
    member_id_list: list[int] = []
    attributes: dict[str, str | int] = {}


def _payload(msg_type: int, data: bytes) -> str:
    """A message body as one line of text."""
    if msg_type == MsgType.TEXT:
        return data.decode("utf-8", errors="replace").replace("\n", " ")
    if msg_type == MsgType.NOTIFICATION:
        try:
            note = msgspec.json.decode(data, type=_Notification)
        except msgspec.DecodeError:
            return "* (a notification)"
        verb = _NOTIFICATION_VERBS.get(note.notification_type, "changed the group")  # type: ignore[call-overload]
        if note.attributes:
            detail = ", ".join(f"{k}={v!r}" for k, v in sorted(note.attributes.items()))
        else:
            detail = ", ".join(map(str, note.member_id_list))
        return f"* {note.operator_user_id} {verb} {detail}".rstrip()
    try:
        name = MsgType(msg_type).name.lower()
    except ValueError:
        name = f"type {msg_type}"
    return f"[{name}]"


class ChatSession:
    """One user's chat: commands in, rendered lines out (module docstring).

    Args:
        client: an SDK client, logged in.
        write: where rendered lines go (one call per line, no newline).
    """

    def __init__(self, client: Client, write: Callable[[str], None]) -> None:
        self._client = client
        self._write = write
        self.current: Conversation | None = None
        #: the lowest seq shown of the open conversation (for /more); 0: nothing shown
        self._oldest = 0
        #: the highest seq acknowledged as read in the open conversation
        self._read = 0
        self.done = False

    @property
    def me(self) -> int:
        """The logged-in user."""
        return self._client.user_id

    # -- input -------------------------------------------------------------------------------

    async def handle_line(self, line: str) -> None:
        """Serve one line typed by the user. Errors are written, never raised."""
        text = line.strip()
        if not text:
            return
        command, _, argument = text.partition(" ")
        try:
            if command == "/help":
                for help_line in HELP.splitlines():
                    self._write(help_line)
            elif command in ("/quit", "/exit"):
                self.done = True
            elif command == "/sessions":
                await self.show_sessions()
            elif command == "/open":
                await self.open(parse_conversation(argument))
            elif command == "/more":
                await self.more()
            elif command.startswith("/"):
                self._write(f"! unknown command {command} (/help lists them)")
            else:
                await self.send(text)
        except ValueError as exc:
            self._write(f"! {exc}")
        except SdkError as exc:
            self._write(f"! {exc}")

    async def show_sessions(self) -> None:
        """Write the session list: conversation, unread count, latest message."""
        rsp = await self._client.recent_sessions()
        sessions: Sequence[base_pb2.ContactSessionInfo] = rsp.contact_session_list
        if not sessions:
            self._write("no conversations yet")
            return
        self._write(f"{len(sessions)} conversation(s), {rsp.unread_counts} unread")
        for info in sorted(sessions, key=lambda s: s.updated_time, reverse=True):
            conversation = Conversation(SessionType(int(info.session_type)), info.session_id)
            unread = f"{info.unread_cnt} unread" if info.unread_cnt else "read"
            latest = _payload(int(info.msg_type), info.msg_data)
            self._write(f"  {conversation!s:<24} {unread:<10} {info.msg_from_user_id}: {latest}")

    async def open(self, conversation: Conversation) -> None:
        """Make `conversation` the open one: show its latest page and mark it read."""
        self.current = conversation
        self._oldest = 0
        self._read = 0
        self._write(f"-- {conversation} --")
        if not await self._page(0):
            self._write("(no messages yet)")

    async def more(self) -> None:
        """Show the page of older messages."""
        if self.current is None:
            raise ValueError("no conversation is open: /open one first")
        if self._oldest <= 1 or not await self._page(self._oldest):
            self._write("(no older messages)")

    async def _page(self, end_msg_id: int) -> bool:
        assert self.current is not None
        rsp: list_pb2.GetMsgListRsp = await self._client.history(
            self.current.session_id,
            session_type=self.current.session_type,
            end_msg_id=end_msg_id,
            limit=PAGE,
        )
        messages = list(rsp.msg_list)
        if not messages:
            return False
        for info in messages:
            self._write(
                self._render(info.server_msg_id, info.from_user_id, info.msg_type, info.msg_data)
            )
        self._oldest = messages[0].server_msg_id
        await self._mark_read(messages[-1].server_msg_id)
        return True

    async def send(self, text: str) -> None:
        """Send `text` to the open conversation; write it with its seq once stored."""
        if self.current is None:
            raise ValueError("no conversation is open: /open u:ID or /open g:ID first")
        ack = await self._client.send_text(
            self.current.session_id, text, session_type=self.current.session_type
        )
        self._write(self._render(ack.server_msg_id, self.me, MsgType.TEXT, text.encode()))
        # Our own message is read by us: keep our read seq at the head of the conversation.
        await self._mark_read(ack.server_msg_id)

    # -- events ------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> None:
        """Render one event of the client (a push, a kick, a reconnection)."""
        if isinstance(event, Push):
            await self._push(event)
        elif isinstance(event, Kicked):
            self._write(f"! logged out by the server: {event.notify.text or 'kicked'}")
            self.done = True
        elif isinstance(event, Disconnected):
            self._write(
                f"! disconnected ({event.reason})"
                + (", reconnecting" if event.reconnecting else "")
            )
            if not event.reconnecting:
                self.done = True
        elif isinstance(event, Reconnected):
            self._write("! reconnected")

    async def _push(self, push: Push) -> None:
        message = push.message
        if push.command_id == Cmd.MSG_DATA and isinstance(message, message_pb2.MsgData):
            where = self._conversation_of(message)
            line = self._render(
                message.server_msg_id, message.from_user_id, message.msg_type, message.msg_data
            )
            if where == self.current:
                self._write(line)
                if message.from_user_id != self.me:
                    await self._mark_read(message.server_msg_id)
            else:
                self._write(f"[{where}] {line}   (/open {where} to read)")
        elif push.command_id == Cmd.MSG_READ_NOTIFY and isinstance(
            message, message_pb2.MsgDataReadNotify
        ):
            where = Conversation(SessionType(int(message.session_type)), message.session_id)
            if message.user_id == self.me:
                return  # our own read on another device
            if where == self.current or (
                where.session_type == SessionType.SINGLE
                and self.current is not None
                and self.current == Conversation(SessionType.SINGLE, message.user_id)
            ):
                self._write(f"  ✓ read by {message.user_id} up to #{message.msg_id}")

    def _conversation_of(self, msg: message_pb2.MsgData) -> Conversation:
        if int(msg.session_type) == SessionType.GROUP:
            return Conversation(SessionType.GROUP, msg.to_session_id)
        peer = msg.to_session_id if msg.from_user_id == self.me else msg.from_user_id
        return Conversation(SessionType.SINGLE, peer)

    async def _mark_read(self, seq: int) -> None:
        if self.current is None or seq <= self._read:
            return
        self._read = seq
        await self._client.read_ack(
            self.current.session_id, seq, session_type=self.current.session_type
        )

    def _render(self, seq: int, sender: int, msg_type: int, data: bytes) -> str:
        who = "me" if sender == self.me else str(sender)
        return f"#{seq} {who}: {_payload(int(msg_type), data)}"
