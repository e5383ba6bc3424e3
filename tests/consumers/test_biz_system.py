"""c2s uploads end to end: C2SUploadReq → gate → im.up.c2s → biz → biz.c2s, then the answer."""

from __future__ import annotations

import uuid

from bus.base import TopicPartition
from schemas.bizevents import BizTopic, C2SUpload, decode_event
from schemas.codes import ClientType, ExtResultCode
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from sdk.client import Client
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System


async def _upload(
    sdk: Client, payload: bytes, *, user_id: int = 0, req_id: str | None = None, **fields: str
) -> ext_pb2.C2SUploadRsp:
    req = ext_pb2.C2SUploadReq(
        user_id=user_id,
        client_req_id=str(uuid.uuid4()) if req_id is None else req_id,
        payload=payload,
        **fields,
    )
    rsp = await sdk.request(Cmd.C2S_UPLOAD_REQ, req)
    assert isinstance(rsp, ext_pb2.C2SUploadRsp)
    return rsp


async def test_upload_is_on_biz_c2s_with_the_connections_identity_before_the_answer(
    system: System,
) -> None:
    await system.start_consumers(["biz"])
    alice = await system.user()
    gate = await system.gate()
    sdk = await system.login(alice, gate, client_type=ClientType.ANDROID)
    tap = await Tap(system, [BizTopic.C2S], lambda key: key == b"%d" % alice).start()
    partition = await system.runtime.bus.partition_for(BizTopic.C2S, b"%d" % alice)
    tp = TopicPartition(BizTopic.C2S, partition)
    before = (await system.positions([BizTopic.C2S]))[tp]

    rsp = await _upload(
        sdk, b'{"order": 42}', req_id="req-1", content_type="application/json", channel="shop"
    )

    # The answer came after the record was durable: the partition had already grown.
    assert ExtResultCode(rsp.result_code) is ExtResultCode.OK
    assert (rsp.user_id, rsp.client_req_id) == (alice, "req-1")
    assert (await system.positions([BizTopic.C2S]))[tp] > before
    await tap.wait(lambda records: len(records) == 1)
    event = decode_event(tap.records[0].value)
    assert isinstance(event, C2SUpload)
    assert event.user_id == alice
    assert event.client_type == ClientType.ANDROID
    assert event.gate_id == gate.gate_id
    assert (event.client_req_id, event.channel) == ("req-1", "shop")
    assert (event.content_type, event.payload) == ("application/json", b'{"order": 42}')
    assert event.id == f"c2s.upload:{alice}:req-1"
    assert event.version == 1
    await tap.stop()


async def test_uploads_claiming_another_user_or_too_big_are_refused_and_not_published(
    system: System,
) -> None:
    await system.start_consumers(["biz"])
    alice, mallory = await system.user(), await system.user()
    sdk = await system.login(mallory)
    keys = {b"%d" % alice, b"%d" % mallory}
    tap = await Tap(system, [BizTopic.C2S], lambda key: key in keys).start()

    forged = await _upload(sdk, b"x", user_id=alice, req_id="forged")
    assert ExtResultCode(forged.result_code) is ExtResultCode.FORBIDDEN
    assert forged.user_id == mallory
    big = await _upload(sdk, b"x" * (256 * 1024 + 1), req_id="big")
    assert ExtResultCode(big.result_code) is ExtResultCode.TOO_LARGE
    no_id = await _upload(sdk, b"x", req_id="")
    assert ExtResultCode(no_id.result_code) is ExtResultCode.INVALID_PARAMETER
    own = await _upload(sdk, b"mine", user_id=mallory, req_id="own")
    assert ExtResultCode(own.result_code) is ExtResultCode.OK

    # Records of one key are in order: once "own" is there, the refused ones would be too.
    await tap.wait(lambda records: len(records) >= 1)
    events = [decode_event(r.value) for r in tap.records]
    assert [(e.user_id, e.client_req_id) for e in events if isinstance(e, C2SUpload)] == [
        (mallory, "own")
    ]
    assert all(r.key == b"%d" % mallory for r in tap.records)
    await tap.stop()
