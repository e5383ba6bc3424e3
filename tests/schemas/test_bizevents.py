"""Business events and the webhook contract: encoding, evolution rules, keys, signatures, and
the generated JSON Schema / AsyncAPI documents being up to date."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import msgspec
import pytest

from bus.topology import load_topology
from coffeebus.eventdocs import asyncapi_document, events_schema, render, stale
from schemas.bizevents import (
    EVENT_CLASSES,
    EVENT_TYPES,
    BizEvent,
    BizTopic,
    C2SUpload,
    GroupChanged,
    MessageStored,
    UserOffline,
    decode_event,
    encode_event,
    event_id,
)
from schemas.errors import EnvelopeError
from schemas.webhooks import (
    WebhookDeadLetter,
    decode_dead_letter,
    encode_dead_letter,
    sign,
    signature_header,
    verify,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"

STORED = MessageStored(
    id=event_id(MessageStored, "s:3:7", 12),
    ts=1_718_000_000_000,
    trace_id="ab" * 16,
    conversation="s:3:7",
    seq=12,
    from_user_id=3,
    to_session_id=7,
    session_type=1,
    msg_type=1,
    client_msg_id="c-1",
    msg_data=b"\x00hi",
)


def test_events_are_json_with_type_version_id_first() -> None:
    data = json.loads(encode_event(STORED))
    assert list(data)[:5] == ["type", "id", "version", "ts", "trace_id"]
    assert data["type"] == "message.stored"
    assert data["version"] == 1
    assert data["id"] == "message.stored:s:3:7:12"
    assert data["msg_data"] == "AGhp"  # bytes are base64
    assert decode_event(encode_event(STORED)) == STORED


def test_unknown_fields_are_ignored_and_unknown_types_refused() -> None:
    data = json.loads(encode_event(STORED))
    data["added_in_a_later_release"] = {"x": 1}
    assert decode_event(json.dumps(data).encode()) == STORED
    with pytest.raises(EnvelopeError, match="not a business event"):
        decode_event(b'{"type": "message.exploded", "id": "x", "ts": 1}')
    with pytest.raises(EnvelopeError):
        decode_event(b"\x93\x01")


def test_keys_follow_the_topology() -> None:
    topology = load_topology()
    c2s = C2SUpload(
        id="i",
        ts=1,
        user_id=5,
        client_type=1,
        gate_id="g",
        client_req_id="r",
        channel="",
        content_type="text/plain",
        payload=b"",
    )
    offline = UserOffline(
        id="i", ts=1, user_id=5, client_type=1, gate_id="g", conn_id=2, reason="closed"
    )
    group = GroupChanged(
        id="i", ts=1, group_id=9, change="created", operator_user_id=5, group_name="n", members=()
    )
    cases: list[tuple[BizEvent, bytes, str]] = [
        (c2s, b"5", "user id"),
        (STORED, b"s:3:7", "conversation id"),
        (offline, b"5", "user id"),
        (group, b"9", "group id"),
    ]
    for event, key, described in cases:
        assert event.key() == key
        assert topology.topic(event.topic).key == described
    assert {str(c.topic) for c in EVENT_CLASSES} | {BizTopic.WEBHOOK_DEAD_LETTER} == {
        t.name for t in topology.topics.values() if t.name.startswith("biz.") and not t.dlq_of
    }
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = encode_event(STORED)
    expected = hmac.new(b"k", b"1718000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1_718_000_000, body) == expected
    header = signature_header("k", 1_718_000_000, body)
    assert header == f"v1={expected}"
    now = 1_718_000_100.0
    assert verify("k", "1718000000", header, body, now=now)
    assert verify("k", "1718000000", f"v1=00ff, {header}", body, now=now)  # rotation
    assert not verify("k", "1718000000", header, body + b" ", now=now)  # tampered
    assert not verify("other", "1718000000", header, body, now=now)
    assert not verify("k", "1718000001", header, body, now=now)  # timestamp is signed
    assert not verify("k", "1718000000", header, body, now=now + 3600)  # too old
    assert not verify("k", None, header, body, now=now)
    assert not verify("k", "soon", header, body, now=now)
    assert not verify("k", "1718000000", "v0=" + expected, body, now=now)


def test_dead_letter_round_trip() -> None:
    letter = WebhookDeadLetter(
        subscriber="crm",
        url="http://h/x",
        event_id=STORED.id,
        event_type="message.stored",
        source_topic="biz.events.message",
        source_partition=3,
        source_offset=99,
        attempts=5,
        status=503,
        error="HTTP 503",
        ts=1,
        body=encode_event(STORED).decode(),
    )
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


def test_schema_covers_every_event_with_its_type_as_discriminator() -> None:
    schema = events_schema()
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES)
    stored = schema["$defs"]["MessageStored"]
    assert {"type", "id", "ts", "conversation", "seq"} <= set(stored["required"])
    assert stored["properties"]["msg_data"]["anyOf"][0]["contentEncoding"] == "base64"
    # Descriptions are dedented docstrings.
    assert "\n    " not in json.dumps(schema)


def test_asyncapi_has_one_channel_per_biz_topic_with_its_events() -> None:
    doc = asyncapi_document(load_topology())
    assert doc["asyncapi"] == "2.6.0"
    channels = doc["channels"]
    assert set(channels) == {t.value for t in BizTopic}
    refs = channels["biz.events.message"]["subscribe"]["message"]["oneOf"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in refs] == [
        "MessageStored",
        "MessageDelivered",
        "MessageRead",
        "MessageRevoked",
    ]
    assert channels["biz.events.message"]["bindings"]["kafka"]["partitions"] == 16
    messages = doc["components"]["messages"]
    assert messages["GroupChanged"]["name"] == "group.changed"
    for message in messages.values():
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert name in doc["components"]["schemas"]


def test_committed_documents_are_up_to_date() -> None:
    assert stale(load_topology(), DOCS) == [], (
        "docs/ is stale: run `uv run coffeebus events docs` and commit the result"
    )
    # and the generator is deterministic
    assert render(load_topology()) == render(load_topology())
    msgspec.json.decode((DOCS / "events.schema.json").read_bytes())
