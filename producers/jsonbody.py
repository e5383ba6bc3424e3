"""Strict JSON request bodies: what a body must be before any handler sees a value.

Every endpoint that takes a JSON body reads it through `parse_json_body` (Litestar calls
`StrictJsonRequest.json`; the legacy ``POST /user/register`` calls it itself), which refuses,
each with a 4xx problem naming what is wrong (`BodyProblem`, type ``urn:coffeebus:problem:…``):

=====  ==========================  ==================================================
415    ``unsupported-media-type``  a body whose ``Content-Type`` is not JSON
                                   (``application/json`` or ``application/*+json``, UTF-8)
400    ``invalid-encoding``        bytes that are not UTF-8, or a lone surrogate escape
                                   (``"\\ud800"``): text no store can keep
400    ``invalid-json``            not JSON (syntax, ``NaN``, ``Infinity``, a BOM)
400    ``duplicate-key``           an object naming a key twice (which one wins differs
                                   between parsers, so neither is guessed)
400    ``too-deeply-nested``       arrays and objects nested deeper than `MAX_DEPTH`
400    ``number-out-of-range``     an integer outside signed 64 bits (no store keeps it),
                                   a float that overflows
400    ``nul-character``           U+0000 in any string or key (C strings, PostgreSQL
                                   text and log lines end there)
=====  ==========================  ==================================================

The checks cost one parse (the standard library's, which reports duplicate keys; bodies are
at most 64 KiB) and one walk over the values; the handler's type then validates fields as
before (``invalid-request``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from litestar import Request

from producers.problems import ApiProblem

__all__ = ["MAX_DEPTH", "BodyProblem", "StrictJsonRequest", "check_media_type", "parse_json_body"]

#: Deepest nesting of arrays and objects accepted; the API's bodies need 3.
MAX_DEPTH: Final = 32
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1


class BodyProblem(ApiProblem):
    """A request body refused before validation (module docstring)."""


def check_media_type(content_type: str | None) -> None:
    """`BodyProblem` 415 unless `content_type` (a Content-Type header) names JSON in UTF-8."""
    if not content_type:
        raise BodyProblem(
            415, "unsupported-media-type", "Content-Type must be application/json (none given)"
        )
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    main, _, sub = media.partition("/")
    if not (media == "application/json" or (main == "application" and sub.endswith("+json"))):
        raise BodyProblem(
            415,
            "unsupported-media-type",
            f"Content-Type must be application/json, not {media[:100]!r}",
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise BodyProblem(
                415, "unsupported-media-type", f"JSON must be UTF-8, not charset={charset[:40]!r}"
            )


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BodyProblem(400, "duplicate-key", f"the key {key[:100]!r} appears twice")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise BodyProblem(400, "invalid-json", f"{name} is not JSON")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise BodyProblem(400, "nul-character", f"{where} contains U+0000 (NUL)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyProblem(
            400, "invalid-encoding", f"{where} contains a lone surrogate (not Unicode text)"
        ) from None


def _walk(value: Any) -> None:
    """Depth, strings and numbers of a parsed body (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, f"the string at {path}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise BodyProblem(
                    400, "number-out-of-range", f"the integer at {path} does not fit 64 bits"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BodyProblem(400, "number-out-of-range", f"the number at {path} overflows")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise BodyProblem(
                    400, "too-deeply-nested", f"nested deeper than {MAX_DEPTH} levels at {path}"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, f"a key at {path}")
                    stack.append((child, depth + 1, f"{path}.{key[:40]}"))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def parse_json_body(body: bytes) -> Any:
    """The JSON value of a request body, or `BodyProblem` saying what is wrong with it.

    An empty body is JSON ``null`` (the handler's type then says what was missing).
    """
    if not body:
        return None
    nul = body.find(b"\x00")
    if nul >= 0:
        raise BodyProblem(400, "nul-character", f"the body contains a NUL byte (byte {nul})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyProblem(
            400, "invalid-encoding", f"the body is not UTF-8 (byte {exc.start} is {exc.reason})"
        ) from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BodyProblem(
            400, "invalid-json", f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise BodyProblem(
            400, "too-deeply-nested", f"nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:  # an integer of more digits than int() takes
        raise BodyProblem(400, "number-out-of-range", f"a number is too long: {exc}") from None
    _walk(value)
    return value


class StrictJsonRequest(Request[Any, Any, Any]):
    """Litestar's request whose `json` goes through `check_media_type` and `parse_json_body`.

    Litestar reads a handler's JSON ``data`` through this method, so every JSON endpoint gets
    the checks; handlers that take no body never call it and ignore whatever was sent.
    """

    async def json(self) -> Any:
        body = await self.body()
        if body:
            check_media_type(self.headers.get("content-type"))
        return parse_json_body(body)
