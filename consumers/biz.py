"""The ``biz`` group: client uploads from ``im.up.c2s`` (keyed by user) to ``biz.c2s``.

A client sends C2SUploadReq (0x0809) with a payload for a business server; the gate
publishes it with the connection's verified origin. Per batch (one partition, in order):

1. decode each record (garbage is poison: `Reject` → DLQ) and check the request: the body's
   ``user_id`` must be 0 or the logged-in user (the identity is the origin's, never the
   body's: FORBIDDEN otherwise, as for every request — `consumers.requests.acting_user`),
   ``client_req_id`` 1-64 characters, ``channel`` at most 64, ``content_type`` at most 255
   (empty: ``application/octet-stream``), the payload within ``[biz] max_c2s_payload_bytes``;
2. publish one `schemas.bizevents.C2SUpload` per accepted upload to ``biz.c2s`` (key: the
   user id, so one user's uploads stay in order) and wait until they are durable;
3. only then answer each request with C2SUploadRsp (0x080A): OK, or the refusal's code.

The response is a promise that the upload is on the topic (DESIGN invariant 4's "an ack means
durable" for uploads), which is why the answers are a second publish, after the first
returned. A replayed record publishes its upload again with the same event id
(``c2s.upload:<user>:<client_req_id>``), and business subscribers dedupe on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from bus.base import Bus, Record, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.requests import Refusal, acting_user, decode_request
from schemas.bizevents import BizTopic, C2SUpload, encode_event, event_id
from schemas.codes import ExtResultCode
from schemas.commands import Cmd
from schemas.envelope import Envelope
from schemas.pb.coffeebus import ext_pb2

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["C2SHandler", "C2SLimits", "build"]

log = logging.getLogger(__name__)

MAX_CLIENT_REQ_ID: Final = 64
MAX_CHANNEL: Final = 64
MAX_CONTENT_TYPE: Final = 255
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"


class C2SLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of an upload (from ``[biz]`` settings)."""

    max_payload_bytes: int = 256 * 1024


class C2SHandler:
    """Relays the uploads of ``im.up.c2s`` to ``biz.c2s`` (module docstring)."""

    def __init__(self, *, bus: Bus, topology: Topology, limits: C2SLimits | None = None) -> None:
        self._bus = bus
        self._topology = topology
        self.limits = limits or C2SLimits()
        self._topic = topology.topic(BizTopic.C2S).name

    async def handle(self, records: Sequence[Record]) -> None:
        """Publish the batch's uploads, then (once durable) answer every request."""
        uploads = Effects(self._topology)
        answers = Effects(self._topology)
        for record in records:
            request = decode_request(record)
            envelope, msg = request.envelope, request.message
            origin = envelope.origin
            if origin is None or not isinstance(msg, ext_pb2.C2SUploadReq):
                # Only clients upload; anything else on this topic is a producer's bug.
                log.warning(
                    "im.up.c2s record 0x%04X %s: ignored",
                    envelope.cmd,
                    "without an origin" if origin is None else "is not C2SUploadReq",
                )
                continue
            rsp = ext_pb2.C2SUploadRsp(user_id=origin.user_id, client_req_id=msg.client_req_id)
            try:
                event = self._event(envelope, msg)
            except Refusal as refusal:
                log.info("refused upload of user %d: %s", origin.user_id, refusal.text)
                rsp.result_code = ext_pb2.ExtResultCode.ValueType(refusal.code)
            else:
                uploads.publish(self._topic, encode_event(event), key=event.key())
                rsp.result_code = ext_pb2.ExtResultCode.ValueType(ExtResultCode.OK)
            answers.reply(origin, Cmd.C2S_UPLOAD_RSP, rsp, envelope.trace_id)
        if len(uploads):
            await uploads.flush(self._bus)
        if len(answers):
            await answers.flush(self._bus)

    def _event(self, envelope: Envelope, msg: ext_pb2.C2SUploadReq) -> C2SUpload:
        origin = envelope.origin
        assert origin is not None
        user = acting_user(origin, msg.user_id, envelope.cmd)
        if not 0 < len(msg.client_req_id) <= MAX_CLIENT_REQ_ID:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"client_req_id must be 1-{MAX_CLIENT_REQ_ID} characters",
            )
        if len(msg.channel) > MAX_CHANNEL:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER, f"channel is longer than {MAX_CHANNEL} characters"
            )
        if len(msg.content_type) > MAX_CONTENT_TYPE:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"content_type is longer than {MAX_CONTENT_TYPE} characters",
            )
        if len(msg.payload) > self.limits.max_payload_bytes:
            raise Refusal(
                ExtResultCode.TOO_LARGE,
                f"payload is {len(msg.payload)} bytes; the limit is "
                f"{self.limits.max_payload_bytes}",
            )
        return C2SUpload(
            id=event_id(C2SUpload, user, msg.client_req_id),
            ts=envelope.ts_ms,
            trace_id=envelope.trace_id,
            user_id=user,
            client_type=origin.client_type,
            gate_id=origin.gate_id,
            client_req_id=msg.client_req_id,
            channel=msg.channel,
            content_type=msg.content_type or DEFAULT_CONTENT_TYPE,
            payload=msg.payload,
        )

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered."""


@consumer_group("biz")
def build(runtime: Runtime) -> C2SHandler:
    """The upload relay on the runtime's bus."""
    limits = C2SLimits(max_payload_bytes=runtime.settings.biz.max_c2s_payload_bytes)
    return C2SHandler(bus=runtime.bus, topology=runtime.topology, limits=limits)
