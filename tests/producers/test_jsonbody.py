"""`producers.jsonbody`: the strict body checks, without an app."""

from __future__ import annotations

import pytest

from producers.jsonbody import MAX_DEPTH, BodyProblem, check_media_type, parse_json_body


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
        "application/problem+json",
        "application/merge-patch+json",
    ],
)
def test_json_media_types_pass(content_type: str) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "text/json", "application/jsonx", "application/json; charset=latin-1"],
)
def test_other_media_types_are_415(content_type: str | None) -> None:
    with pytest.raises(BodyProblem) as caught:
        check_media_type(content_type)
    assert (caught.value.status, caught.value.slug) == (415, "unsupported-media-type")


def test_valid_bodies_parse_as_json() -> None:
    assert parse_json_body(b"") is None
    assert parse_json_body(b'{"a": [1, -2.5, "\\u00e9\\ud83d\\ude00", true, null]}') == {
        "a": [1, -2.5, "é😀", True, None]
    }
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json_body(nested) is not None
    assert parse_json_body(b"9223372036854775807") == 2**63 - 1
    assert parse_json_body(b"-9223372036854775808") == -(2**63)


@pytest.mark.parametrize(
    ("body", "slug", "named"),
    [
        (b'{"a": "\xff"}', "invalid-encoding", "byte 7"),
        (b'{"a": "\\udc00"}', "invalid-encoding", "$.a"),
        (b'{"a": 1, "a": 2}', "duplicate-key", "'a'"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too-deeply-nested", "32"),
        (b"[" * 50_000 + b"]" * 50_000, "too-deeply-nested", "32"),
        (b"9223372036854775808", "number-out-of-range", "$"),
        (b"[1e999]", "number-out-of-range", "$[0]"),
        (b'{"a": ["x\\u0000"]}', "nul-character", "$.a[0]"),
        (b'{"a\\u0000": 1}', "nul-character", "key"),
        (b'{"a": "\x00"}', "nul-character", "byte 7"),
        (b"[NaN]", "invalid-json", "NaN"),
        (b"{", "invalid-json", "line 1"),
    ],
)
def test_hostile_bodies_are_refused_naming_the_fault(body: bytes, slug: str, named: str) -> None:
    with pytest.raises(BodyProblem) as caught:
        parse_json_body(body)
    assert (caught.value.status, caught.value.slug) == (400, slug)
    assert named in caught.value.detail
