"""The ``query`` group: every read-only request of ``im.up.query`` (keyed by user).

Session list (0x0201), history (0x0205), latest id (0x0305), by id (0x0307), user list
(0x0601), group list / info / members (0x0507, 0x0509, 0x0516), and the extensions sync
(0x0803) and group read state (0x080D). Each request is answered to the connection it came
from (`Effects.reply`, echoing its seq); a refused one gets an ErrorRsp (0x0802). Nothing is
written, so the records of a batch are served concurrently (bounded), and a replayed record
only answers again.

Authorization: the requester is the envelope's origin; a body naming another user is refused
(FORBIDDEN). A single chat is addressed by the peer's id, and its conversation is built from
the requester and the peer, so it always includes the requester. Group history, members and
read state are for members only. The decisions (limits, what "user list" means, how revoked
messages look) are in docs/protocol-extensions.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec
from google.protobuf.message import Message

from bus.base import Bus, Record, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, conversation_of, decode_request
from consumers.views import PeerReceipts, msg_info, session_info
from schemas.codes import ErrorCode, ExtResultCode, SessionType
from schemas.commands import Cmd, spec
from schemas.ids import ConversationId, GroupId, UserId, group_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, friend_pb2, group_pb2, list_pb2, message_pb2
from store.deliveries import DeliveryStore
from store.groups import Group, GroupStore
from store.inbox import InboxStore
from store.messages import MessageStore, StoredMessage
from store.sessions import Session, SessionStore, count_reads
from store.users import UserStore

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["QueryHandler", "QueryLimits", "build", "current_versions"]

log = logging.getLogger(__name__)


class QueryLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Page sizes and caps of the queries (docs/protocol-extensions.md, "Limits")."""

    #: sessions in one session list (most recently changed first)
    session_list: int = 500
    #: history page when the request says 0
    history_default: int = 20
    #: the largest history page; the seed rejects 100 and above, and so do we
    history_max: int = 99
    #: client msg ids in one by-id request
    by_id_max: int = 100
    #: sync page when the request says 0, and the cap a larger request is cut to
    sync_default: int = 100
    sync_max: int = 500
    #: server_msg_ids in one group read state request
    read_state_max: int = 100
    #: users in the user list
    user_list: int = 500
    #: requests of one batch served at once
    concurrency: int = 32


async def current_versions(
    messages: MessageStore, found: Iterable[StoredMessage]
) -> dict[tuple[ConversationId, int], StoredMessage]:
    """The stored version of each message copy (sessions and inboxes hold copies that a
    later revoke does not touch): one `MessageStore.get_many`."""
    return await messages.get_many((m.conversation, m.seq) for m in found)


class QueryHandler:
    """Serves the read-only requests of ``im.up.query``."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        users: UserStore,
        messages: MessageStore,
        inbox: InboxStore,
        sessions: SessionStore,
        groups: GroupStore,
        deliveries: DeliveryStore,
        limits: QueryLimits | None = None,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._users = users
        self._messages = messages
        self._inbox = inbox
        self._sessions = sessions
        self._groups = groups
        self._deliveries = deliveries
        self.limits = limits or QueryLimits()
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self._answers: dict[int, Callable[[UserId, Message], Awaitable[Message]]] = {
            Cmd.RECENT_SESSION_REQ: self._session_list,
            Cmd.MSG_LIST_REQ: self._history,
            Cmd.LATEST_MSG_ID_REQ: self._latest_id,
            Cmd.MSG_BY_ID_REQ: self._by_id,
            Cmd.FRIEND_QUERY_USER_LIST_REQ: self._user_list,
            Cmd.GROUP_LIST_REQ: self._group_list,
            Cmd.GROUP_INFO_REQ: self._group_info,
            Cmd.GROUP_MEMBER_LIST_REQ: self._member_list,
            Cmd.SYNC_REQ: self._sync,
            Cmd.GROUP_READ_STATE_REQ: self._read_state,
        }

    async def handle(self, records: Sequence[Record]) -> None:
        """Answer every request of the batch, then publish the answers together.

        Requests of one user with the same command and body are answered from one query:
        clients repeat a sync or a session list while they wait (a resend after a timeout,
        a poll), so a batch that queued up behind a slow store holds many copies of each,
        and on FerretDB v1 every one of them would scan whole collections again.
        """
        alike: dict[object, list[Request]] = {}
        for record in records:
            request = decode_request(record)
            origin = request.origin
            key = (
                (request.cmd, origin.user_id, request.envelope.body)
                if origin is not None
                else object()
            )
            alike.setdefault(key, []).append(request)
        effects = Effects(self._topology)
        await asyncio.gather(*(self._serve(same, effects) for same in alike.values()))
        if len(effects):
            await effects.flush(self._bus)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered."""

    async def _serve(self, alike: Sequence[Request], effects: Effects) -> None:
        """Answer `alike` (one user's identical requests) from one query, each to its own
        connection and with its own trace."""
        request = alike[0]
        origin = request.origin
        if origin is None:
            log.warning("query 0x%04X without an origin: nobody to answer", request.cmd)
            return
        answer = self._answers.get(request.cmd)
        async with self._slots:
            try:
                if answer is None:
                    raise Refusal(ExtResultCode.UNKNOWN_COMMAND, "not a query")
                user = acting_user(origin, getattr(request.message, "user_id", 0), request.cmd)
                body = await answer(user, request.message)
            except Refusal as refusal:
                for each in alike:
                    assert each.origin is not None
                    effects.error(
                        each.origin, each.cmd, refusal.code, refusal.text, each.envelope.trace_id
                    )
                return
        response = spec(request.cmd).response
        assert response is not None
        for each in alike:
            assert each.origin is not None
            effects.reply(each.origin, response, body, each.envelope.trace_id)

    # --- helpers ---------------------------------------------------------------------------

    async def _require_member(self, group_id: int, user: UserId) -> Group:
        group = await self._groups.get(GroupId(group_id)) if group_id > 0 else None
        if group is None or group.disbanded:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no group {group_id}")
        if not await self._groups.is_member(GroupId(group_id), user):
            log.info("refused: user %d is not a member of group %d", user, group_id)
            raise Refusal(ExtResultCode.FORBIDDEN, f"not a member of group {group_id}")
        return group

    async def _readable(self, user: UserId, session_type: int, session_id: int) -> ConversationId:
        """The conversation, after checking `user` may read it."""
        conversation = conversation_of(user, session_type, session_id)
        if session_type == SessionType.GROUP:
            await self._require_member(session_id, user)
        return conversation

    async def _peer_receipts(
        self, user: UserId, session_type: int, session_id: int, conversation: ConversationId
    ) -> PeerReceipts | None:
        """How far the peer of a single chat has it (None: a group, or a note to self)."""
        if session_type != SessionType.SINGLE or session_id == user:
            return None
        peer = UserId(session_id)
        delivered, read = await asyncio.gather(
            self._deliveries.delivered_seq(peer, conversation),
            self._sessions.peer_read_seq(peer, conversation),
        )
        return PeerReceipts(delivered=delivered, read=read)

    # --- the queries -----------------------------------------------------------------------

    async def _session_list(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, list_pb2.RecentContactSessionReq)
        sessions = await self._sessions.recent(
            user, req.latest_update_time * 1000, self.limits.session_list
        )
        lasts = await current_versions(self._messages, (s.last for s in sessions if s.last))
        infos = []
        for session in sessions:
            if session.last is None:
                continue
            last = lasts.get((session.conversation, session.last.seq), session.last)
            infos.append(session_info(session, last))
        return list_pb2.RecentContactSessionRsp(
            user_id=user,
            unread_counts=sum(s.unread for s in sessions),
            contact_session_list=infos,
        )

    async def _history(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, list_pb2.GetMsgListReq)
        limit = req.limit_count or self.limits.history_default
        if limit > self.limits.history_max:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"limit_count {limit} is above the maximum of {self.limits.history_max}",
            )
        conversation = await self._readable(user, req.session_type, req.session_id)
        found, read_seq, peer = await asyncio.gather(
            self._messages.history(conversation, req.end_msg_id, limit),
            self._sessions.read_seq(user, conversation),
            self._peer_receipts(user, req.session_type, req.session_id, conversation),
        )
        return list_pb2.GetMsgListRsp(
            user_id=user,
            session_type=req.session_type,
            session_id=req.session_id,
            end_msg_id=req.end_msg_id,
            msg_list=[msg_info(m, user, read_seq, peer=peer) for m in found],
        )

    async def _latest_id(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, message_pb2.GetLatestMsgIdReq)
        conversation = await self._readable(user, req.session_type, req.session_id)
        latest = await self._messages.latest(conversation)
        return message_pb2.GetLatestMsgIdRsp(
            user_id=user,
            session_type=req.session_type,
            session_id=req.session_id,
            latest_msg_id="" if latest is None else latest.client_msg_id,
        )

    async def _by_id(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, message_pb2.GetMsgByIdReq)
        if len(req.msg_id_list) > self.limits.by_id_max:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"{len(req.msg_id_list)} msg ids; at most {self.limits.by_id_max} per request",
            )
        conversation = await self._readable(user, req.session_type, req.session_id)
        found, read_seq, peer = await asyncio.gather(
            self._messages.get_by_client_ids(conversation, req.msg_id_list),
            self._sessions.read_seq(user, conversation),
            self._peer_receipts(user, req.session_type, req.session_id, conversation),
        )
        return message_pb2.GetMsgByIdRsp(
            user_id=user,
            session_type=req.session_type,
            session_id=req.session_id,
            msg_list=[msg_info(m, user, read_seq, peer=peer) for m in found],
        )

    async def _user_list(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, friend_pb2.FriendQueryUserListReq)
        # No friend graph: "friends" are the users one has a single chat with.
        sessions: list[Session] = await self._sessions.recent(
            user, 0, self.limits.user_list, unread=False
        )
        peers = [UserId(s.peer_id) for s in sessions if s.session_type == SessionType.SINGLE]
        found = await self._users.list_users(p for p in peers if p != user)
        return friend_pb2.FriendQueryUserListRsp(
            user_id=user,
            user_info_list=[
                base_pb2.UserInfo(
                    user_id=u.user_id,
                    nick_name=u.nick_name,
                    nick_name_spell=u.nick_name_spell,
                    phone=u.phone,
                    avatar_url=u.avatar_url,
                    attach_info=u.attach_info,
                )
                for u in found
            ],
        )

    async def _group_list(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, group_pb2.GroupListReq)
        ids = await self._groups.groups_of(user)
        found = await asyncio.gather(*(self._groups.get(g) for g in ids))
        return group_pb2.GroupListRsp(
            user_id=user,
            group_version_list=[
                group_pb2.GroupVersionInfo(group_id=g.group_id, group_version=g.version)
                for g in found
                if g is not None and not g.disbanded
            ],
        )

    async def _group_info(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, group_pb2.GroupInfoReq)
        wanted = list(dict.fromkeys(v.group_id for v in req.group_version_list if v.group_id))
        groups, memberships = await asyncio.gather(
            asyncio.gather(*(self._groups.get(GroupId(g)) for g in wanted)),
            asyncio.gather(*(self._groups.is_member(GroupId(g), user) for g in wanted)),
        )
        # Groups the requester is not in (or that are gone) are left out, not refused: the
        # list a client asks about comes from its own (possibly stale) group list.
        return group_pb2.GroupInfoRsp(
            user_id=user,
            result_code=ErrorCode.SUCCESS,
            group_info_list=[
                group_info(g)
                for g, member in zip(groups, memberships, strict=True)
                if g is not None and member and not g.disbanded
            ],
        )

    async def _member_list(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, group_pb2.GroupMemberListReq)
        await self._require_member(req.group_id, user)
        members = await self._groups.members(GroupId(req.group_id))
        return group_pb2.GroupMemberListRsp(
            user_id=user, group_id=req.group_id, member_id_list=members
        )

    async def _sync(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, ext_pb2.SyncReq)
        limit = min(req.limit or self.limits.sync_default, self.limits.sync_max)
        page, head = await asyncio.gather(
            self._inbox.after(user, req.after_seq, limit), self._inbox.head(user)
        )
        stored = await current_versions(self._messages, (e.message for e in page.entries))
        convs = list(dict.fromkeys(e.message.conversation for e in page.entries))
        read_seqs = dict(
            zip(
                convs,
                await asyncio.gather(*(self._sessions.read_seq(user, c) for c in convs)),
                strict=True,
            )
        )
        entries = []
        for entry in page.entries:
            msg = stored.get((entry.message.conversation, entry.message.seq), entry.message)
            entries.append(
                ext_pb2.InboxEntry(
                    seq=entry.inbox_seq,
                    msg=msg_info(msg, user, read_seqs[msg.conversation], roam=False),
                )
            )
        return ext_pb2.SyncRsp(
            user_id=user,
            result_code=ext_pb2.ExtResultCode.ValueType(ExtResultCode.OK),
            entries=entries,
            has_more=page.has_more,
            latest_seq=max(head, entries[-1].seq if entries else 0),
        )

    async def _read_state(self, user: UserId, req: Message) -> Message:
        assert isinstance(req, ext_pb2.GroupReadStateReq)
        if len(req.server_msg_id_list) > self.limits.read_state_max:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"{len(req.server_msg_id_list)} ids; at most {self.limits.read_state_max}",
            )
        await self._require_member(req.group_id, user)
        group_id = GroupId(req.group_id)
        members = await self._groups.members(group_id)
        seqs = list(dict.fromkeys(req.server_msg_id_list))
        conversation = group_conversation_id(group_id)
        reads, messages = await asyncio.gather(
            self._sessions.read_seqs_of(conversation, members),
            self._messages.get_by_seqs(conversation, seqs),
        )
        counts = read_counts(reads, {m.seq: m.from_user_id for m in messages}, seqs)
        return ext_pb2.GroupReadStateRsp(
            user_id=user,
            group_id=req.group_id,
            result_code=ext_pb2.ExtResultCode.ValueType(ExtResultCode.OK),
            read_state_list=[
                ext_pb2.GroupReadState(
                    server_msg_id=seq, read_count=counts.get(seq, 0), member_count=len(members)
                )
                for seq in seqs
            ],
        )


def read_counts(
    reads: Mapping[UserId, int], senders: Mapping[int, UserId], seqs: Iterable[int]
) -> dict[int, int]:
    """For each seq, how many members (the keys of `reads`, their read seqs) have read it: a
    read seq at or above it, or being its sender (`senders`: seq → sender) — a sender has
    read their own message whatever their read seq says."""
    counts = count_reads(reads.values(), seqs)
    for seq, sender in senders.items():
        if seq in counts and sender in reads and reads[sender] < seq:
            counts[seq] += 1
    return counts


def group_info(group: Group) -> group_pb2.GroupInfo:
    """A stored group as the wire's GroupInfo."""
    return group_pb2.GroupInfo(
        group_id=group.group_id,
        group_name=group.name,
        group_type=base_pb2.GroupType.ValueType(group.group_type),
        join_model=base_pb2.GroupJoinModel.ValueType(group.join_model),
        be_invite_model=base_pb2.GroupBeInviteMode.ValueType(group.be_invite_model),
        mute_model=base_pb2.GroupMuteModel.ValueType(group.mute_model),
        group_owner_id=group.owner_id,
        create_time=group.created_ms // 1000,
        update_time=group.updated_ms // 1000,
        group_intro=group.intro,
        announcement=group.announcement,
        group_avatar=group.avatar_url,
    )


@consumer_group("query")
def build(runtime: Runtime) -> QueryHandler:
    """The query handler on the runtime's stores."""
    return QueryHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        users=runtime.users,
        messages=runtime.messages,
        inbox=runtime.inbox,
        sessions=runtime.sessions,
        groups=runtime.groups,
        deliveries=runtime.deliveries,
    )
