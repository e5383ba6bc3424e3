"""Every route of the served OpenAPI document under hostile bodies, paths and queries: never
a 5xx, and every refusal is a 4xx problem+json (the legacy ``/user/register``: the seed's
envelope) naming what is wrong.

The bodies: bytes that are not UTF-8 (alone, inside a string, overlong, an encoded
surrogate), JSON that is not (syntax, NaN, a BOM), duplicate keys, nesting past the limit,
integers past 64 bits, NUL (raw and escaped), lone surrogate escapes, wrong or missing
content types, random binary — and, for each operation with a JSON body, a valid example
built from its schema with each field replaced in turn by such values. The app runs on the
in-memory stores and on MongoDB + Redis (what a store refuses must not surface as a 5xx).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from bus.topology import load_topology
from coffeebus.settings import ApiSettings
from coffeebus.wiring import memory_bus_for
from producers.app import Pipeline, create_app
from producers.jsonbody import MAX_DEPTH
from store.memory.groups import MemoryGroupStore
from store.memory.messages import MemoryMessageStore
from store.memory.push_tokens import MemoryPushTokenStore
from store.memory.rooms import MemoryRoomStore
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.push_tokens import MongoPushTokenStore
from store.push_tokens import PushTokenStore
from tests.producers.conftest import Stores, _memory, _real, in_process_client

JSON = "application/json"
PROBLEM = "application/problem+json"
LEGACY = "/user/register"

Json = dict[str, Any]


def _app(stores: Stores, push_tokens: PushTokenStore) -> Litestar:
    topology = load_topology()
    return create_app(
        ApiSettings(),
        stores.users,
        stores.routes,
        pipeline=Pipeline(
            bus=memory_bus_for(topology),
            topology=topology,
            groups=MemoryGroupStore(),
            messages=MemoryMessageStore(),
            group_create_wait_s=0.0,
            rooms=MemoryRoomStore(),
        ),
        push_tokens=push_tokens,
    )


@pytest.fixture(
    params=["memory", pytest.param("real", marks=[pytest.mark.mongo, pytest.mark.redis])]
)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    if request.param == "memory":
        async for stores in _memory():
            async with in_process_client(_app(stores, MemoryPushTokenStore())) as c:
                yield c
        return
    mongo_url = request.getfixturevalue("mongo_url")
    redis_url = request.getfixturevalue("redis_url")
    mongo = connect_mongo(mongo_url)
    db_name = f"cbtest_bodies_{uuid.uuid4().hex[:12]}"
    try:
        await ensure_indexes(mongo[db_name])
        async for stores in _real(mongo_url, redis_url):
            app = _app(stores, MongoPushTokenStore(mongo[db_name]))
            async with in_process_client(app) as c:
                yield c
    finally:
        await mongo.drop_database(db_name)
        await mongo.close()


# --- the document -------------------------------------------------------------------------


class Operation:
    """One operation of the document, its path filled in, and an example of its body."""

    def __init__(self, method: str, template: str, example: Json | None) -> None:
        self.method = method
        self.template = template
        self.example = example

    def path(self, value: str = "1") -> str:
        path = self.template.replace("{conversation}", "s:1:2" if value == "1" else value)
        return re.sub(r"\{[^}]+\}", value, path)

    def __repr__(self) -> str:
        return f"{self.method} {self.template}"


def _resolve(schema: Json, document: Json) -> Json:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def example(schema: Json, document: Json) -> Any:
    """A value the schema accepts, built from its types, enums and bounds."""
    schema = _resolve(schema, document)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, document).get("type") != "null"]
            merged = {k: v for k, v in schema.items() if k != key}
            return example({**_resolve(options[0], document), **merged}, document)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        return {name: example(sub, document) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), document)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return False
    return "x" * max(1, schema.get("minLength", 1))


async def operations(client: httpx.AsyncClient) -> list[Operation]:
    document = (await client.get("/schema/openapi.json")).json()
    found = []
    for template, methods in document["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {})
            body = example(content[JSON]["schema"], document) if JSON in content else None
            found.append(Operation(method.upper(), template, body))
    return found


# --- hostile input ------------------------------------------------------------------------

_DEEP = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
_VERY_DEEP = b"[" * 20_000 + b"]" * 20_000

#: (body, content type, what it is)
RAW_BODIES: list[tuple[bytes, str | None, str]] = [
    (b"\xff\xfe{}", JSON, "not UTF-8"),
    (b'{"nick_name": "\xff"}', JSON, "not UTF-8 inside a string"),
    (b'{"nick_name": "\xc0\xaf"}', JSON, "overlong UTF-8"),
    (b'{"nick_name": "\xed\xa0\x80"}', JSON, "an encoded surrogate"),
    (b'{"nick_name": "\\ud800"}', JSON, "a lone surrogate escape"),
    (b'{"nick_name": "a\x00b"}', JSON, "a raw NUL"),
    (b'{"nick_name": "a\\u0000b"}', JSON, "an escaped NUL"),
    (b'{"a\\u0000": 1}', JSON, "NUL in a key"),
    (b'{"nick_name": "a", "nick_name": "b"}', JSON, "a duplicate key"),
    (b'{"x": {"y": 1, "y": 2}}', JSON, "a nested duplicate key"),
    (_DEEP, JSON, "nesting past the limit"),
    (_VERY_DEEP, JSON, "nesting past the parser's recursion"),
    (b'{"user_id": 99999999999999999999999999999}', JSON, "an integer past 64 bits"),
    (b'{"user_id": -9223372036854775809}', JSON, "below signed 64 bits"),
    (b'{"user_id": ' + b"9" * 5000 + b"}", JSON, "an integer of 5000 digits"),
    (b'{"user_id": 1e400}', JSON, "a float that overflows"),
    (b'{"user_id": NaN}', JSON, "NaN"),
    (b'{"user_id": -Infinity}', JSON, "Infinity"),
    (b'\xef\xbb\xbf{"nick_name": "a"}', JSON, "a byte order mark"),
    (b"{not json", JSON, "broken syntax"),
    (b'{"a": 1,}', JSON, "a trailing comma"),
    (b"", JSON, "empty"),
    (b"null", JSON, "null"),
    (b"[]", JSON, "an array"),
    (b'"a string"', JSON, "a string"),
    (b'{"a": 1}', "text/plain", "text/plain"),
    (b"a=1&b=2", "application/x-www-form-urlencoded", "a form"),
    (b'{"a": 1}', None, "no content type"),
    (b'{"a": 1}', "application/json; charset=latin-1", "another charset"),
    (b'{"a": 1}', "multipart/form-data; boundary=x", "multipart"),
    (b'{"a": 1}', "application/json\x7f", "a broken content type"),
]


def binary_bodies(count: int, seed: int) -> Iterator[tuple[bytes, str | None, str]]:
    rnd = random.Random(seed)
    for n in range(count):
        size = rnd.choice([1, 7, 64, 1000, 20_000])
        yield rnd.randbytes(size), JSON, f"random binary #{n}"


#: what a field of a valid body is replaced with, in turn
FIELD_VALUES: list[tuple[bytes, str]] = [
    (b'"\xff"', "not UTF-8"),
    (b'"\\ud800"', "a lone surrogate"),
    (b'"\\u0000"', "NUL"),
    (b"18446744073709551616", "2**64"),
    (b"-9223372036854775809", "below int64"),
    (b"9223372036854775807", "int64 max"),
    (b"1e308", "a large float"),
    (b"-0.0", "negative zero"),
    (b'"' + "\U0001f600".encode() * 1000 + b'"', "4000 bytes of emoji"),
    (b'"' + b"x" * 60_000 + b'"', "a long string"),
    (b"[" * 10 + b"]" * 10, "nested arrays"),
    (b'{"a": {"b": {"c": 1}}}', "an object"),
    (b"true", "a boolean"),
    (b"null", "null"),
    (b"[]", "an empty array"),
]


def field_bodies(body: Json) -> Iterator[tuple[bytes, str | None, str]]:
    """The example with each field replaced by each of `FIELD_VALUES`, and duplicated."""
    for name in body:
        for raw, what in FIELD_VALUES:
            rest = {k: v for k, v in body.items() if k != name}
            text = json.dumps(rest).encode()
            joined = b"{" + json.dumps(name).encode() + b": " + raw
            joined += (b", " + text[1:]) if rest else b"}"
            yield joined, JSON, f"{name} = {what}"
        dup = json.dumps(body).encode()[:-1] + b", " + json.dumps(name).encode() + b": null}"
        yield dup, JSON, f"{name} twice"


HOSTILE_SEGMENTS = ["%00", "%FF", "1%00", "9" * 40, "-1", "0", "%F0%9F%98%80", "1.5", "%20"]


async def _check(response: httpx.Response, operation: Operation, what: str) -> None:
    where = f"{operation!r} with {what}: {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code < 400:
        return
    if operation.template == LEGACY:
        body = response.json()
        assert body["error_code"], where
        assert body["error_msg"], where
        return
    if response.status_code == 404 and "problem" not in response.headers.get("content-type", ""):
        pytest.fail(f"a 404 that is not a problem: {where}")
    assert response.headers["content-type"].startswith(PROBLEM), where
    problem = response.json()
    assert problem["status"] == response.status_code, where
    assert problem["type"].startswith("urn:coffeebus:problem:"), where
    assert problem["detail"], where


async def test_every_route_answers_hostile_bodies_with_4xx_problems(
    client: httpx.AsyncClient,
) -> None:
    ops = await operations(client)
    assert len(ops) >= 20
    for operation in ops:
        bodies = [*RAW_BODIES, *binary_bodies(6, seed=hash(repr(operation)) & 0xFFFF)]
        if operation.example is not None:
            bodies += list(field_bodies(operation.example))
        for body, content_type, what in bodies:
            headers = {"content-type": content_type} if content_type else {}
            response = await client.request(
                operation.method, operation.path(), content=body, headers=headers
            )
            await _check(response, operation, what)


async def test_the_refusals_name_what_is_wrong(client: httpx.AsyncClient) -> None:
    expected = {
        "not UTF-8": "invalid-encoding",
        "a lone surrogate escape": "invalid-encoding",
        "a raw NUL": "nul-character",
        "an escaped NUL": "nul-character",
        "NUL in a key": "nul-character",
        "a duplicate key": "duplicate-key",
        "a nested duplicate key": "duplicate-key",
        "nesting past the limit": "too-deeply-nested",
        "nesting past the parser's recursion": "too-deeply-nested",
        "an integer past 64 bits": "number-out-of-range",
        "an integer of 5000 digits": "number-out-of-range",
        "a float that overflows": "number-out-of-range",
        "NaN": "invalid-json",
        "broken syntax": "invalid-json",
        "text/plain": "unsupported-media-type",
        "no content type": "unsupported-media-type",
        "another charset": "unsupported-media-type",
    }
    for body, content_type, what in RAW_BODIES:
        if what not in expected:
            continue
        headers = {"content-type": content_type} if content_type else {}
        response = await client.put("/v1/users/7", content=body, headers=headers)
        status = 415 if expected[what] == "unsupported-media-type" else 400
        assert response.status_code == status, (what, response.text)
        assert response.json()["type"] == f"urn:coffeebus:problem:{expected[what]}", what
        # the seed's endpoint: the same refusal in its own envelope
        response = await client.post(LEGACY, content=body, headers=headers)
        assert response.status_code == status, (what, response.text)
        assert response.json()["error_code"] == 9001, what


async def test_every_route_answers_hostile_path_and_query_values(
    client: httpx.AsyncClient,
) -> None:
    for operation in await operations(client):
        for segment in HOSTILE_SEGMENTS:
            body = json.dumps(operation.example).encode() if operation.example else b""
            headers = {"content-type": JSON} if body else {}
            if "{" in operation.template:
                response = await client.request(
                    operation.method, operation.path(segment), content=body, headers=headers
                )
                await _check(response, operation, f"path segment {segment!r}")
            query = "&".join(
                f"{name}={segment}"
                for name in ("user_id", "operator_user_id", "provider", "token", "x")
            )
            response = await client.request(
                operation.method, f"{operation.path()}?{query}", content=body, headers=headers
            )
            await _check(response, operation, f"query values {segment!r}")
