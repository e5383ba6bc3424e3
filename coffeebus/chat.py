"""The terminal chat client's logic, apart from the terminal: `ChatSession`.

`coffeebus chat` (`coffeebus.commands.chat`) is a thin shell: it reads lines from the
terminal and hands them to `ChatSession.handle_line`, feeds the SDK client's events to
`ChatSession.handle_event`, and prints what the session writes. The session never touches
stdin or stdout — it gets a `write(line)` callable — so tests drive it with a real client
against a real system and assert the lines it rendered.

Commands (``/help`` lists them)::

    /sessions              conversations, newest first, with unread counts
    /open NAME | ID        open the single chat with a user (by name or id; ``u:ID`` too)
    /open #NAME | g:ID     open a group
    /more                  older messages of the open conversation
    /call [NAME | ID]      call someone (default: the open single chat), voice
    /answer                take the incoming call
    /hangup                end, cancel or decline the call
    /join ROOM_ID          join a chat room and talk there (its recent messages first)
    /leave                 leave the chat room
    /quit                  leave
    anything else          is sent as a text message to the open conversation

What people expect of a chat app, line by line:

- Messages show the time, the sender's name (``you`` for one's own) and the text, once; a
  day line ("── Today ──") comes before the first message of each day.
- **Read receipts point the right way.** What the session shows of *other people's*
  messages in the open conversation is acknowledged as read (MsgDataReadAck 0x0303, "all
  ≤ this seq") — never one's own messages, which nobody reads but their reader.
- **Ticks for one's own messages** in a single chat: each is shown once stored, with ``✓``
  (sent); when the peer's device has one's latest message (DeliveredNotify 0x0820), one line
  says ``✓✓ delivered to bob``, and when the peer reads it (MsgDataReadNotify 0x0304)
  ``✓✓ read by bob``. Opening a chat says how far the peer has it from history's message
  status (RECEIPT, READ), so a client that was away still shows it.
- **Activity elsewhere is one line**, not one per message: messages arriving in other
  conversations are counted, and after a quiet moment one line sums them up per
  conversation (``· new messages: bob 3, #coffee 25 — /open to read``).
- `/more` shows the older page *above* what was shown: the conversation is written again
  from the older page on, oldest first (the screen is cleared first on a terminal).
- Business pushes (S2CPush 0x080B, e.g. msg_type 77 from ``POST /v1/push``) are shown.
- **Calls show their signalling** (docs/protocol-extensions.md, "Calls"; no media: the
  terminal only rings): ``☎ calling bob…``, ``☎ bob's device is ringing``, ``☎ bob is calling
  (voice call) — /answer or /hangup``, ``☎ in a call with bob — /hangup to end``, and how it
  ended (``☎ bob hung up``, ``☎ bob is busy``, ``☎ answered on another device``, …). An
  incoming call rings back (180) by itself; while a call lasts the session sends a
  VoipHeartbeat every few seconds. The call's AVCHAT message shows in the conversation
  (``☎ voice call 0:42``, ``☎ missed voice call``).
- **Reconnect and catch up.** When the server restarts, the SDK reconnects; the session
  then asks for everything of the user's inbox after the last entry it knew (Sync 0x0803)
  and shows what it missed like live messages.
- **Chat rooms** (docs/protocol-extensions.md, "Chat rooms"): ``/join`` shows the room's
  name, how many are in it and its recent messages; while in a room, typed text goes to the
  room and its messages are shown as they come (one's own once, when the room took it).
  Membership ends with the connection, so after a reconnect the session joins again and
  shows only what it had not shown. A room that closes (or drops a client that reads too
  slowly) says so in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import msgspec

from schemas.codes import (
    ExtResultCode,
    InviteRspCode,
    MsgNotificationType,
    MsgType,
    SessionType,
    VoipByeReason,
    VoipInviteType,
)
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, list_pb2, message_pb2, voip_pb2
from sdk.client import Client
from sdk.errors import SdkError
from sdk.events import Disconnected, Event, Kicked, Push, Reconnected

__all__ = ["HELP", "ChatSession", "Conversation", "Names", "parse_conversation"]

log = logging.getLogger(__name__)

HELP: Final = """\
/sessions            list conversations with unread counts
/open NAME | ID      open the single chat with a user (u:ID works too)
/open #NAME | g:ID   open a group
/more                show older messages of the open conversation
/call [NAME | ID]    call someone (default: the open single chat)
/answer              take the incoming call
/hangup              end, cancel or decline the call
/join ROOM_ID        join a chat room (typed text then goes there)
/leave               leave the chat room
/quit                leave
text                 send it to the open conversation (or the joined room)"""

#: messages shown per page of history
PAGE: Final = 20
#: how long the session waits for more activity elsewhere before it sums it up in one line
SUMMARY_DELAY_S: Final = 0.5
#: erase the terminal (`/more` rewrites the conversation from its older page on)
CLEAR_SCREEN: Final = "\x1b[2J\x1b[H"
#: how often the session sends a VoipHeartbeat during a call (the server's limit is 30 s)
CALL_HEARTBEAT_S: Final = 5.0
#: the status of a message as history, by-id and sync report a revoked one
_SEND_CANCEL: Final = 8
_READ: Final = 2  # MsgStatus of my own messages in history: the peer read it
_RECEIPT: Final = 6  # ... the peer's device has it (delivered)

_NOTIFICATION_VERBS: Final = {
    MsgNotificationType.GROUP_CREATE: "created the group with",
    MsgNotificationType.GROUP_BE_INVITE: "added",
    MsgNotificationType.GROUP_KICK: "removed",
    MsgNotificationType.GROUP_LEAVE: "left",
    MsgNotificationType.GROUP_UPDATE: "updated the group:",
    MsgNotificationType.GROUP_DISMISS: "disbanded the group",
}

#: Looks up people's names the protocol does not tell (a group's members): ids -> nick.
ProfileLookup = Callable[[Sequence[int]], Awaitable[dict[int, str]]]


class Conversation(msgspec.Struct, frozen=True):
    """A conversation as the client addresses it: a peer user or a group."""

    session_type: SessionType
    session_id: int

    def __str__(self) -> str:
        return f"{'g' if self.session_type == SessionType.GROUP else 'u'}:{self.session_id}"

    @property
    def group(self) -> bool:
        return self.session_type == SessionType.GROUP


def parse_conversation(text: str) -> Conversation:
    """``u:42`` or ``42`` (a user), ``g:7`` (a group); `ValueError` otherwise."""
    kind, _, raw = text.strip().rpartition(":")
    if kind not in ("", "u", "g") or not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"not a conversation: {text!r} (use a name, u:ID, ID or g:ID)")
    session_type = SessionType.GROUP if kind == "g" else SessionType.SINGLE
    return Conversation(session_type, int(raw))


class Names:
    """Who is who: people's and groups' names as far as the session has learnt them."""

    def __init__(self, me: int) -> None:
        self.me = me
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, user_id: int) -> str:
        if user_id == self.me:
            return "you"
        return self.users.get(user_id) or f"user {user_id}"

    def title(self, conversation: Conversation) -> str:
        if conversation.group:
            name = self.groups.get(conversation.session_id)
            return f"#{name}" if name else f"group {conversation.session_id}"
        return self.user(conversation.session_id)

    def find(self, text: str) -> Conversation | None:
        """The conversation a person means by a name (``bob``, ``#coffee``), if one is known."""
        wanted = text.strip().casefold()
        if wanted.startswith("#"):
            for group_id, name in self.groups.items():
                if name.casefold() == wanted[1:]:
                    return Conversation(SessionType.GROUP, group_id)
            return None
        for user_id, name in self.users.items():
            if name.casefold() == wanted:
                return Conversation(SessionType.SINGLE, user_id)
        for group_id, name in self.groups.items():
            if name.casefold() == wanted:
                return Conversation(SessionType.GROUP, group_id)
        return None


class _Notification(msgspec.Struct, frozen=True):
    """The fields of a group notification's JSON that the client shows."""

    notification_type: int = 0
    operator_user_id: int = 0
    member_id_list: list[int] = []
    attributes: dict[str, str | int] = {}


class _Avchat(msgspec.Struct, frozen=True):
    """An AVCHAT message's msg_data (PROTOCOL.md, "VoIP signalling")."""

    hangupUserId: int = 0  # the wire's JSON names
    hangupReason: int = 0
    timeLen: int = 0
    callType: int = 1


class _Call(msgspec.Struct):
    """The call of the session: its channel, the other party, and where it is."""

    channel: str
    peer: int
    #: "calling" (my invite rings), "incoming" (theirs rings here), "talking"
    state: str


class _Shown(msgspec.Struct, frozen=True):
    """A message of the open conversation, as shown."""

    seq: int
    sender: int
    create_time: int
    msg_type: int
    data: bytes
    revoked: bool = False
    #: MsgStatus from history (0: shown live); for my own: SENT, RECEIPT or READ
    status: int = 0


def _date(ts: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ts).date()


def _day(ts: int, today: datetime.date) -> str:
    day = _date(ts)
    if day == today:
        return "Today"
    if day == today - datetime.timedelta(days=1):
        return "Yesterday"
    return f"{day:%a} {day.day} {day:%b %Y}"


class ChatSession:
    """One user's chat: commands in, rendered lines out (module docstring).

    Args:
        client: an SDK client, logged in.
        write: where rendered lines go (one call per line, no newline).
        tty: the lines go to a terminal (`/more` clears it before rewriting).
        profiles: asks for the names of people the protocol does not name (optional).
        summary_delay: quiet time before activity elsewhere is summed up (seconds).
    """

    def __init__(
        self,
        client: Client,
        write: Callable[[str], None],
        *,
        tty: bool = False,
        profiles: ProfileLookup | None = None,
        summary_delay: float = SUMMARY_DELAY_S,
    ) -> None:
        self._client = client
        self._write = write
        self._tty = tty
        self._profiles = profiles
        self._profiles_back_at = 0.0
        self._summary_delay = summary_delay
        self.names = Names(client.user_id)
        self.current: Conversation | None = None
        #: the open conversation's messages shown, oldest first
        self._shown: list[_Shown] = []
        #: the highest seq acknowledged as read in the open conversation
        self._read = 0
        #: my latest message in the open single chat, and how far its receipts were shown
        #: (delivered, read)
        self._my_latest = 0
        self._delivered_shown = 0
        self._receipt_shown = 0
        #: (conversation, seq) of every message shown or counted: live pushes and catch-up
        #: by sync meet the same message twice
        self._seen: set[tuple[Conversation, int]] = set()
        #: messages per other conversation since it was last open, and the pending summary
        self._elsewhere: dict[Conversation, int] = {}
        self._summary: asyncio.TimerHandle | None = None
        self._summary_since = 0.0
        #: the user-inbox seq up to which the session has seen everything (for Sync)
        self._synced = 0
        self._going_away = False
        self.done = False
        #: the call in progress, and the task sending its heartbeats
        self.call: _Call | None = None
        self._call_beat: asyncio.Task[None] | None = None
        #: the chat room joined (typed text goes there), and the last msg id shown of it
        self.room: int | None = None
        self._room_seen = 0

    @property
    def me(self) -> int:
        """The logged-in user."""
        return self._client.user_id

    # -- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn names and where the inbox stands, then show the conversations."""
        info = self._client.user_info
        nick = getattr(info, "nick_name", "")
        self.names.me = self.me
        if nick:
            self.names.users[self.me] = nick
        await self._learn_peers()
        await self._learn_groups()
        head = await self._client.sync(0, limit=1)
        self._synced = head.latest_seq
        await self.show_sessions()

    async def _learn_peers(self) -> None:
        """Single-chat peers' names (the user list, 0x0601)."""
        with contextlib.suppress(SdkError):
            rsp = await self._client.user_list()
            for user in rsp.user_info_list:
                if user.nick_name:
                    self.names.users[user.user_id] = user.nick_name

    async def _learn_groups(self, group_ids: Iterable[int] | None = None) -> None:
        """Groups' names (group list 0x0507, group info 0x0509)."""
        with contextlib.suppress(SdkError):
            if group_ids is None:
                listed = await self._client.group_list()
                group_ids = [g.group_id for g in listed.group_version_list]
            ids = [g for g in group_ids if g not in self.names.groups]
            if ids:
                info = await self._client.group_info(ids)
                for group in info.group_info_list:
                    self.names.groups[group.group_id] = group.group_name

    async def _learn_users(self, user_ids: Iterable[int]) -> None:
        """Names of people not known yet (a group's members) from the profile lookup."""
        unknown = sorted({u for u in user_ids if u != self.me and u not in self.names.users})
        loop = asyncio.get_running_loop()
        if not unknown or self._profiles is None or loop.time() < self._profiles_back_at:
            return
        try:
            self.names.users.update(await self._profiles(unknown))
        except Exception as exc:  # a lookup is a nicety: ids stand in for names
            log.debug("profile lookup failed: %r", exc)
            # An API that is not there stays away for a while: do not slow every page.
            self._profiles_back_at = loop.time() + 60.0

    # -- input ---------------------------------------------------------------------------------

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
                if self.call is not None:
                    await self.hangup()
                self.done = True
            elif command == "/sessions":
                await self.show_sessions()
            elif command == "/open":
                await self.open(await self._resolve(argument))
            elif command == "/more":
                await self.more()
            elif command == "/call":
                await self.start_call(argument)
            elif command == "/answer":
                await self.answer()
            elif command == "/hangup":
                await self.hangup()
            elif command == "/join":
                await self.join_room(argument)
            elif command == "/leave":
                await self.leave_room()
            elif command.startswith("/"):
                self._write(f"! unknown command {command} (/help lists them)")
            elif self.room is not None:
                await self.say(text)
            else:
                await self.send(text)
        except ValueError as exc:
            self._write(f"! {exc}")
        except SdkError as exc:
            self._write(f"! {exc}")

    async def _resolve(self, argument: str) -> Conversation:
        if not argument.strip():
            raise ValueError("open what? /open NAME, /open ID or /open #GROUP")
        found = self.names.find(argument)
        if found is None and argument.strip().startswith("#"):
            await self._learn_groups()
            found = self.names.find(argument)
        if found is not None:
            return found
        try:
            return parse_conversation(argument)
        except ValueError:
            raise ValueError(
                f"no one called {argument.strip()!r} among your conversations and groups: "
                "/open ID to write to someone the first time"
            ) from None

    async def show_sessions(self) -> None:
        """Write the session list: conversation, unread count, latest message."""
        rsp = await self._client.recent_sessions()
        sessions: Sequence[base_pb2.ContactSessionInfo] = rsp.contact_session_list
        if not sessions:
            self._write("no conversations yet — /open NAME or ID to start one")
            return
        await self._learn_groups(
            s.session_id for s in sessions if int(s.session_type) == SessionType.GROUP
        )
        await self._learn_users(
            [s.session_id for s in sessions if int(s.session_type) == SessionType.SINGLE]
            + [s.msg_from_user_id for s in sessions]
        )
        self._write(f"{len(sessions)} conversation(s), {rsp.unread_counts} unread")
        for info in sorted(sessions, key=lambda s: s.updated_time, reverse=True):
            conversation = Conversation(SessionType(int(info.session_type)), info.session_id)
            unread = f"{info.unread_cnt} unread" if info.unread_cnt else ""
            when = datetime.datetime.fromtimestamp(info.msg_time_stamp).strftime("%H:%M")
            latest = self._text(int(info.msg_type), info.msg_data, info.msg_status == _SEND_CANCEL)
            who = self.names.user(info.msg_from_user_id)
            self._write(
                f"  {self.names.title(conversation):<18} {unread:<10} {when} {who}: {latest}"
            )

    # -- chat rooms ----------------------------------------------------------------------------

    async def join_room(self, argument: str) -> None:
        """Join the room (leaving the one joined before) and show its recent messages."""
        if not argument.strip().isdigit() or int(argument) <= 0:
            raise ValueError("join which room? /join ROOM_ID (the business gives the id)")
        room_id = int(argument)
        if self.room is not None and self.room != room_id:
            await self.leave_room()
        joined = await self._client.join_room(room_id, history=PAGE)
        self.room, self._room_seen = room_id, 0
        self._write(f"── room {joined.name or room_id} · {joined.member_count} here ──")
        for msg in joined.history:
            await self._room_message(msg)
        if not joined.history:
            self._write("(no messages yet)")

    async def leave_room(self) -> None:
        if self.room is None:
            raise ValueError("not in a room")
        room_id, self.room = self.room, None
        await self._client.leave_room(room_id)
        self._write(f"· left room {room_id}")

    async def say(self, text: str) -> None:
        """Say `text` in the joined room; shown once the room took it."""
        assert self.room is not None
        rsp = await self._client.send_room(self.room, text)
        shown = ext_pb2.RoomMsg(
            room_id=rsp.room_id,
            msg_id=rsp.msg_id,
            from_user_id=self.me,
            msg_type=MsgType.TEXT,  # type: ignore[arg-type]
            msg_data=text.encode(),
            create_time_ms=rsp.create_time_ms,
        )
        await self._room_message(shown)

    async def _room_message(self, msg: ext_pb2.RoomMsg) -> None:
        if msg.room_id != self.room or msg.msg_id <= self._room_seen:
            return
        self._room_seen = msg.msg_id
        await self._learn_users([msg.from_user_id])
        shown = _Shown(
            msg.msg_id,
            msg.from_user_id,
            msg.create_time_ms // 1000,
            int(msg.msg_type),
            msg.msg_data,
        )
        self._write(self._line(shown, tick=False))  # a room keeps no delivery state

    async def _rejoin(self) -> None:
        """After a reconnect: the room again, showing only what was not shown."""
        if self.room is None:
            return
        try:
            joined = await self._client.join_room(self.room, history=PAGE)
        except SdkError as exc:
            self._write(f"! could not join room {self.room} again: {exc}")
            self.room = None
            return
        for msg in joined.history:
            await self._room_message(msg)

    async def open(self, conversation: Conversation) -> None:
        """Make `conversation` the open one: show its latest page and mark it read (leaving
        the chat room, if one is joined: typed text goes to the conversation now)."""
        if self.room is not None:
            await self.leave_room()
        self.current = conversation
        self._shown, self._read = [], 0
        self._my_latest = self._delivered_shown = self._receipt_shown = 0
        self._elsewhere.pop(conversation, None)
        if conversation.group:
            await self._learn_groups([conversation.session_id])
        page = await self._page(0)
        self._write(f"── {self.names.title(conversation)} ──")
        if not page:
            self._write("(no messages yet)")
            return
        self._shown = page
        self._render(page)
        self._page_receipts(page)
        await self._mark_read()

    async def more(self) -> None:
        """Show the page of older messages above what is shown."""
        if self.current is None:
            raise ValueError("no conversation is open: /open one first")
        oldest = self._shown[0].seq if self._shown else 0
        page = await self._page(oldest) if oldest > 1 else []
        if not page:
            self._write("(no older messages)")
            return
        self._shown = page + self._shown
        if self._tty:
            self._write(CLEAR_SCREEN.rstrip("\n"))
        self._write(f"── {self.names.title(self.current)}: {len(page)} earlier messages ──")
        self._render(self._shown)

    async def _page(self, end_msg_id: int) -> list[_Shown]:
        assert self.current is not None
        rsp: list_pb2.GetMsgListRsp = await self._client.history(
            self.current.session_id,
            session_type=self.current.session_type,
            end_msg_id=end_msg_id,
            limit=PAGE,
        )
        page = [
            _Shown(
                seq=m.server_msg_id,
                sender=m.from_user_id,
                create_time=m.create_time,
                msg_type=int(m.msg_type),
                data=m.msg_data,
                revoked=int(m.msg_status) == _SEND_CANCEL,
                status=int(m.msg_status),
            )
            for m in rsp.msg_list
        ]
        await self._learn_users(u for m in page for u in self._people(m))
        for shown in page:
            self._seen.add((self.current, shown.seq))
        return page

    async def send(self, text: str) -> None:
        """Send `text` to the open conversation; write it once, when it is stored."""
        if self.current is None:
            raise ValueError("no conversation is open: /open NAME or /open #GROUP first")
        conversation = self.current
        ack = await self._client.send_text(
            conversation.session_id, text, session_type=conversation.session_type
        )
        self._seen.add((conversation, ack.server_msg_id))
        if not conversation.group and conversation.session_id not in self.names.users:
            await self._learn_peers()  # a first message: the peer is in the user list now
        if self.current != conversation:
            return
        shown = _Shown(ack.server_msg_id, self.me, ack.create_time, MsgType.TEXT, text.encode())
        self._render([shown], after=self._shown[-1] if self._shown else None)
        self._shown.append(shown)
        self._my_latest = max(self._my_latest, ack.server_msg_id)
        # No read ack: one's own message is not "read" by its sender (the peer would be told
        # they read it). Unread counts never count one's own messages anyway.

    # -- events --------------------------------------------------------------------------------

    # -- calls ---------------------------------------------------------------------------------

    async def start_call(self, argument: str) -> None:
        """Call a user (the open single chat's peer when no one is named)."""
        if self.call is not None:
            raise ValueError(f"already in a call with {self.names.user(self.call.peer)}")
        if argument.strip():
            where = await self._resolve(argument)
        elif self.current is not None:
            where = self.current
        else:
            raise ValueError("call whom? /call NAME or ID, or /open a chat first")
        if where.group:
            raise ValueError("calls are one to one: /call a user")
        trying = await self._client.call(where.session_id)
        self.call = _Call(trying.channel_info.channel_name, where.session_id, "calling")
        self._beat()
        self._write(f"☎ calling {self.names.user(where.session_id)}…")

    async def answer(self) -> None:
        """Take the incoming call."""
        call = self.call
        if call is None or call.state != "incoming":
            raise ValueError("no call is ringing")
        await self._client.answer(call.channel)
        call.state = "talking"
        self._write(f"☎ in a call with {self.names.user(call.peer)} — /hangup to end")

    async def hangup(self) -> None:
        """End, cancel or decline the call."""
        call = self.call
        if call is None:
            raise ValueError("no call to hang up")
        self._end_call()
        await self._client.hangup(call.channel)
        verb = {"calling": "cancelled", "incoming": "declined"}.get(call.state, "ended")
        self._write(f"☎ call with {self.names.user(call.peer)} {verb}")

    def _beat(self) -> None:
        async def beat() -> None:
            while True:
                with contextlib.suppress(SdkError):
                    await self._client.call_heartbeat()
                await asyncio.sleep(CALL_HEARTBEAT_S)

        if self._call_beat is None:
            self._call_beat = asyncio.create_task(beat(), name="call-heartbeat")

    def _end_call(self) -> None:
        self.call = None
        if self._call_beat is not None:
            self._call_beat.cancel()
            self._call_beat = None

    async def _call_push(self, push: Push) -> bool:
        """Render a push of the call signalling; False if it is none."""
        message = push.message
        call = self.call
        if isinstance(message, voip_pb2.VoipInviteReq):
            caller = message.creator_user_id
            channel = message.channel_info.channel_name
            if call is not None:
                return True  # the server answers busy for us; one call at a time
            self.call = _Call(channel, caller, "incoming")
            self._beat()
            kind = _call_kind(int(message.invite_type))
            self._write(f"☎ {self.names.user(caller)} is calling ({kind}) — /answer or /hangup")
            with contextlib.suppress(SdkError):
                await self._client.ringing(channel)
        elif isinstance(message, voip_pb2.VoipInviteReply):
            if call is None or message.channel_info.channel_name != call.channel:
                return True
            who = self.names.user(call.peer)
            if int(message.rsp_code) == InviteRspCode.RINGING:
                self._write(f"☎ {who}'s device is ringing")
            elif int(message.rsp_code) == InviteRspCode.OK:
                call.state = "talking"
                self._write(f"☎ {who} answered — /hangup to end")
        elif isinstance(message, voip_pb2.VoipByeNotify):
            if call is None or message.channel_info.channel_name != call.channel:
                return True
            self._end_call()
            self._write(f"☎ {self._bye_text(call, message)}")
        elif isinstance(message, ext_pb2.ErrorRsp) and message.request_command_id in (
            Cmd.VOIP_INVITE_REQ,
            Cmd.VOIP_INVITE_REPLY,
        ):
            if call is not None and message.result_code == int(ExtResultCode.UNAVAILABLE):
                self._write(
                    f"☎ {self.names.user(call.peer)} is offline: they will see a missed call"
                )
        else:
            return False
        return True

    def _bye_text(self, call: _Call, bye: voip_pb2.VoipByeNotify) -> str:
        who = self.names.user(call.peer)
        reason = int(bye.bye_reason)
        if reason == VoipByeReason.ONLINE_CLIENT_REJECT:
            return "answered on another device" if bye.user_id == self.me else f"{who} declined"
        if reason == VoipByeReason.BUSY:
            return f"{who} is busy"
        if reason == VoipByeReason.REJECT:
            return f"{who} declined"
        if reason == VoipByeReason.CANCEL:
            if bye.user_id == 0:
                return (
                    f"no answer: the call with {who} ended"
                    if call.state == "calling"
                    else (f"missed call from {who}")
                )
            return f"missed call from {who}" if call.state == "incoming" else f"{who} hung up"
        if bye.user_id not in (0, call.peer):
            return f"call with {who} ended"
        return f"{who} hung up" if bye.user_id == call.peer else f"call with {who} ended"

    async def handle_event(self, event: Event) -> None:
        """Render one event of the client (a push, a kick, a reconnection)."""
        if isinstance(event, Push):
            await self._push(event)
        elif isinstance(event, Kicked):
            if event.notify.reason == ext_pb2.KICK_REASON_SERVER_SHUTDOWN:
                self._write("! the server is going away: reconnecting…")
                self._going_away = True
            else:
                self._write(f"! logged out by the server: {event.notify.text or 'kicked'}")
                self.done = True
        elif isinstance(event, Disconnected):
            if event.reconnecting:
                if not self._going_away:  # said already
                    self._write("! connection lost: reconnecting…")
            else:
                self._write(f"! disconnected ({event.reason})")
                self.done = True
        elif isinstance(event, Reconnected):
            self._going_away = False
            await self._rejoin()
            missed = await self.catch_up()
            self._write(f"! reconnected: {missed} missed message(s)" if missed else "! reconnected")

    async def _push(self, push: Push) -> None:
        message = push.message
        if await self._call_push(push):
            return
        if push.command_id == Cmd.MSG_DATA and isinstance(message, message_pb2.MsgData):
            if message.from_nick_name and message.from_user_id != self.me:
                self.names.users[message.from_user_id] = message.from_nick_name
            await self._arrived(
                self._conversation_of(
                    int(message.session_type), message.from_user_id, message.to_session_id
                ),
                _Shown(
                    message.server_msg_id,
                    message.from_user_id,
                    message.create_time,
                    int(message.msg_type),
                    message.msg_data,
                ),
            )
        elif push.command_id == Cmd.MSG_READ_NOTIFY and isinstance(
            message, message_pb2.MsgDataReadNotify
        ):
            self._read_notify(message)
        elif push.command_id == Cmd.DELIVERED_NOTIFY and isinstance(
            message, ext_pb2.DeliveredNotify
        ):
            self._delivered_notify(message)
        elif push.command_id == Cmd.S2C_PUSH and isinstance(message, ext_pb2.S2CPush):
            text = message.msg_data.decode("utf-8", errors="replace").replace("\n", " ")
            self._write(f"★ {message.channel or 'business'} (type {message.msg_type}): {text}")
        elif push.command_id == Cmd.ROOM_MSG and isinstance(message, ext_pb2.RoomMsg):
            await self._room_message(message)
        elif push.command_id == Cmd.ROOM_EXIT_NOTIFY and isinstance(
            message, ext_pb2.RoomExitNotify
        ):
            if message.room_id == self.room:
                self.room = None
                why = (
                    "it was closed"
                    if message.reason == ext_pb2.ROOM_EXIT_REASON_CLOSED
                    else ("this client read too slowly: /join it again")
                )
                self._write(f"! you are out of room {message.room_id}: {why}")
        elif push.command_id == Cmd.REVOKE_NOTIFY and isinstance(message, ext_pb2.RevokeNotify):
            where = Conversation(SessionType(int(message.session_type)), message.session_id)
            if where == self.current:
                self._write(f"· {self.names.user(message.operator_user_id)} revoked a message")

    async def _arrived(self, where: Conversation, shown: _Shown) -> None:
        """A message pushed or found by sync: shown in the open conversation, else counted."""
        if (where, shown.seq) in self._seen:
            return
        self._seen.add((where, shown.seq))
        if where.group and where.session_id not in self.names.groups:
            await self._learn_groups([where.session_id])
        if where == self.current:
            await self._learn_users(self._people(shown))
            self._render([shown], after=self._shown[-1] if self._shown else None)
            self._shown.append(shown)
            if shown.sender == self.me:
                self._my_latest = max(self._my_latest, shown.seq)
            else:
                await self._mark_read()
        elif shown.sender != self.me:
            self._elsewhere[where] = self._elsewhere.get(where, 0) + 1
            # After a quiet moment, not a fixed delay: a burst ends in one line (and a
            # stream that never pauses is summed up every few quiet times all the same).
            loop = asyncio.get_running_loop()
            if self._summary is None:
                self._summary_since = loop.time()
            elif loop.time() - self._summary_since < 6 * self._summary_delay:
                self._summary.cancel()
            else:
                return
            self._summary = loop.call_later(self._summary_delay, self._sum_up)

    def _sum_up(self) -> None:
        """One line for the activity in other conversations since each was last open."""
        self._summary = None
        counts = [(c, n) for c, n in self._elsewhere.items() if n and c != self.current]
        if not counts:
            return
        listed = ", ".join(f"{self.names.title(c)} {n}" for c, n in counts)
        self._write(f"· new messages: {listed} — /open to read")

    def _read_notify(self, notify: message_pb2.MsgDataReadNotify) -> None:
        """The peer of the open single chat read up to my latest message: say so, once."""
        current = self.current
        if notify.user_id == self.me or current is None or current.group:
            return  # my own reads (another device); groups' read state is asked for
        if notify.user_id != current.session_id:
            return
        if self._my_latest and self._receipt_shown < self._my_latest <= notify.msg_id:
            self._receipt_shown = self._delivered_shown = self._my_latest  # read: delivered
            self._write(f"  ✓✓ read by {self.names.user(notify.user_id)}")

    def _delivered_notify(self, notify: ext_pb2.DeliveredNotify) -> None:
        """The peer of the open single chat has my latest message on a device: say so, once
        (and not after it said "read")."""
        current = self.current
        if current is None or current.group or notify.user_id != current.session_id:
            return
        if self._my_latest and self._delivered_shown < self._my_latest <= notify.msg_id:
            self._delivered_shown = self._my_latest
            self._write(f"  ✓✓ delivered to {self.names.user(notify.user_id)}")

    def _page_receipts(self, page: Sequence[_Shown]) -> None:
        """After opening a single chat: how far the peer has my latest message (history's
        status), in the lines live notifies would have written."""
        current = self.current
        if current is None or current.group or current.session_id == self.me:
            return
        mine = [m for m in page if m.sender == self.me and m.msg_type != MsgType.NOTIFICATION]
        if not mine:
            return
        latest = mine[-1]
        self._my_latest = latest.seq
        peer = self.names.user(current.session_id)
        if latest.status == _READ:
            self._receipt_shown = self._delivered_shown = latest.seq
            self._write(f"  ✓✓ read by {peer}")
        elif latest.status == _RECEIPT:
            self._delivered_shown = latest.seq
            self._write(f"  ✓✓ delivered to {peer}")

    async def catch_up(self) -> int:
        """After a reconnect: the inbox entries since the last one known (Sync), shown like
        live messages. Returns how many were new."""
        missed = 0
        after = self._synced
        while True:
            rsp = await self._client.sync(after, limit=500)
            if rsp.latest_seq < after:
                # A server that lost its state (an embedded one restarted): start over.
                self._seen.clear()
                after = 0
                continue
            for entry in rsp.entries:
                m = entry.msg
                where = self._conversation_of(int(m.session_type), m.from_user_id, m.to_session_id)
                if (where, m.server_msg_id) not in self._seen:
                    missed += 1
                    await self._arrived(
                        where,
                        _Shown(
                            m.server_msg_id,
                            m.from_user_id,
                            m.create_time,
                            int(m.msg_type),
                            m.msg_data,
                            revoked=int(m.msg_status) == _SEND_CANCEL,
                        ),
                    )
                after = max(after, entry.seq)
            after = max(after, rsp.latest_seq if not rsp.has_more else after)
            if not rsp.has_more:
                break
        self._synced = after
        return missed

    @staticmethod
    def _people(m: _Shown) -> list[int]:
        """Who a message names: its sender, and the members a group notification is about."""
        if m.msg_type != MsgType.NOTIFICATION:
            return [m.sender]
        try:
            note = msgspec.json.decode(m.data, type=_Notification)
        except msgspec.DecodeError:
            return [m.sender]
        return [m.sender, note.operator_user_id, *note.member_id_list]

    def _conversation_of(self, session_type: int, sender: int, to: int) -> Conversation:
        if session_type == SessionType.GROUP:
            return Conversation(SessionType.GROUP, to)
        return Conversation(SessionType.SINGLE, to if sender == self.me else sender)

    async def _mark_read(self) -> None:
        """Acknowledge as read the newest message of others shown in the open conversation."""
        if self.current is None:
            return
        theirs = [m.seq for m in self._shown if m.sender != self.me]
        newest = max(theirs, default=0)
        if newest <= self._read:
            return
        self._read = newest
        await self._client.read_ack(
            self.current.session_id, newest, session_type=self.current.session_type
        )

    # -- rendering -----------------------------------------------------------------------------

    def _render(self, messages: Sequence[_Shown], *, after: _Shown | None = None) -> None:
        """Write messages, a day line before the first of each day."""
        today = datetime.date.today()
        previous = after
        for m in messages:
            day = datetime.datetime.fromtimestamp(m.create_time).date()
            if (
                previous is None
                or datetime.datetime.fromtimestamp(previous.create_time).date() != day
            ):
                self._write(f"── {_day(m.create_time, today)} ──")
            self._write(self._line(m))
            previous = m

    def _line(self, m: _Shown, *, tick: bool = True) -> str:
        """One message as a line; my own get the "sent" tick unless `tick` is False."""
        when = datetime.datetime.fromtimestamp(m.create_time).strftime("%H:%M")
        if m.msg_type == MsgType.NOTIFICATION:
            return f"{when} · {self._text(m.msg_type, m.data, m.revoked)}"
        text = self._text(m.msg_type, m.data, m.revoked)
        mine = tick and m.sender == self.me and not m.revoked
        tick_text = " ✓" if mine else ""  # stored: sent
        return f"{when} {self.names.user(m.sender)}: {text}{tick_text}"

    def _text(self, msg_type: int, data: bytes, revoked: bool = False) -> str:
        """A message body as one line of text."""
        if revoked:
            return "(revoked)"
        if msg_type == MsgType.TEXT:
            return data.decode("utf-8", errors="replace").replace("\n", " ")
        if msg_type == MsgType.NOTIFICATION:
            try:
                note = msgspec.json.decode(data, type=_Notification)
            except msgspec.DecodeError:
                return "(a group notification)"
            verb = _NOTIFICATION_VERBS.get(note.notification_type, "changed the group")  # type: ignore[call-overload]
            if note.attributes:
                detail = ", ".join(f"{k}={v!r}" for k, v in sorted(note.attributes.items()))
            else:
                others = [u for u in note.member_id_list if u != note.operator_user_id]
                detail = ", ".join(self.names.user(u) for u in others)
            who = self.names.user(note.operator_user_id)
            return f"{who} {verb} {detail}".rstrip()
        if msg_type == MsgType.AVCHAT:
            try:
                record = msgspec.json.decode(data, type=_Avchat)
            except msgspec.DecodeError:
                return "☎ (a call)"
            kind = _call_kind(record.callType)
            if record.timeLen or record.hangupReason == VoipByeReason.END:
                minutes, seconds = divmod(record.timeLen, 60)
                return f"☎ {kind} {minutes}:{seconds:02d}"
            outcome = {
                VoipByeReason.REJECT: "declined",
                VoipByeReason.BUSY: "busy",
            }.get(record.hangupReason, "missed")  # type: ignore[call-overload]
            return f"☎ {outcome} {kind}"
        try:
            name = MsgType(msg_type).name.lower()
        except ValueError:
            name = f"type {msg_type}"
        return f"[{name}]"


def _call_kind(invite_type: int) -> str:
    return "video call" if invite_type == VoipInviteType.VIDEO_CALL else "voice call"
