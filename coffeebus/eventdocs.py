"""Generate the business events' published contract: JSON Schema and AsyncAPI documents.

Both come from code, never by hand: the JSON Schema from the msgspec structs of
`schemas.bizevents` (and the webhook dead letter of `schemas.webhooks`) through
`msgspec.json.schema_components`; the AsyncAPI 2.6 document from those schemas and
topology.yaml — one channel per ``biz.*`` topic with its key, partitions and the events it
carries. ``coffeebus events docs`` writes them to docs/; ``--check`` (and a test) fails when
the committed files differ from what the code generates.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from bus.topology import Topology
from schemas.bizevents import EVENT_CLASSES, EVENT_VERSION, BizEvent, event_type
from schemas.webhooks import WebhookDeadLetter

__all__ = ["ASYNCAPI_FILE", "SCHEMA_FILE", "asyncapi_document", "events_schema", "render"]

SCHEMA_FILE: Final = "events.schema.json"
ASYNCAPI_FILE: Final = "asyncapi.yaml"
KAFKA_BINDING_VERSION: Final = "0.4.0"

_MESSAGE_CLASSES: Final[tuple[type[Any], ...]] = (*EVENT_CLASSES, WebhookDeadLetter)


def _clean(node: Any) -> Any:
    """Dedent docstring-derived descriptions (msgspec copies ``__doc__`` verbatim)."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _components(ref_template: str) -> tuple[Sequence[dict[str, Any]], dict[str, Any]]:
    top, components = msgspec.json.schema_components(
        (BizEvent, WebhookDeadLetter), ref_template=ref_template
    )
    return _clean(list(top)), _clean(components)


def events_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a ``biz.*`` event; the dead letter is in ``$defs`` too."""
    (union, _), defs = _components("#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CoffeeBus business event",
        "description": (
            f"One record value on a biz.* topic (version {EVENT_VERSION}); the `type` field "
            "selects the schema. Fields are only ever added within a version: ignore unknown "
            "ones. docs/events.md explains each event."
        ),
        **union,
        "$defs": defs,
    }


def _summary(cls: type[Any]) -> str:
    doc = inspect.getdoc(cls) or cls.__name__
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def asyncapi_document(topology: Topology) -> dict[str, Any]:
    """The AsyncAPI 2.6 document of the ``biz.*`` topics declared in `topology`."""
    _, components = _components("#/components/schemas/{name}")
    by_topic: dict[str, list[type[Any]]] = {}
    for cls in _MESSAGE_CLASSES:
        by_topic.setdefault(str(cls.topic), []).append(cls)
    biz_topics = [t for t in topology.topics.values() if t.name.startswith("biz.") and not t.dlq_of]
    missing = sorted(set(by_topic) - {t.name for t in biz_topics})
    if missing:
        raise ValueError(f"events name topics {missing} that {topology.source} does not declare")
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in biz_topics:
        classes = by_topic.get(spec.name)
        if not classes:
            raise ValueError(f"topic {spec.name} is declared but no event is published on it")
        refs = [{"$ref": f"#/components/messages/{cls.__name__}"} for cls in classes]
        channels[spec.name] = {
            "description": f"{spec.carries}. Key: {spec.key}.",
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "replicas": spec.replication_factor,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
            "subscribe": {
                "operationId": "consume_" + spec.name.replace(".", "_").replace("-", "_"),
                "summary": f"Records of {spec.name}, in order per key ({spec.key}).",
                "message": refs[0] if len(refs) == 1 else {"oneOf": refs},
            },
        }
        for cls in classes:
            name = event_type(cls) if cls in EVENT_CLASSES else "webhook.dead_letter"
            messages[cls.__name__] = {
                "name": name,
                "title": cls.__name__,
                "summary": _summary(cls),
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": spec.key},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "CoffeeBus business events",
            "version": str(EVENT_VERSION),
            "description": (
                "Events CoffeeBus publishes for business servers on Kafka (and as signed "
                "webhooks). Generated from schemas/bizevents.py and topology.yaml by "
                "`coffeebus events docs`; docs/events.md is the guide."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "url": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the single-node broker of `make services-up`",
            }
        },
        "channels": channels,
        "components": {"messages": messages, "schemas": components},
    }


def render(topology: Topology) -> dict[str, str]:
    """File name → text of every generated document."""
    return {
        SCHEMA_FILE: json.dumps(events_schema(), indent=2, ensure_ascii=False) + "\n",
        ASYNCAPI_FILE: "# Generated by `coffeebus events docs` - do not edit.\n"
        + yaml.safe_dump(
            asyncapi_document(topology), sort_keys=False, allow_unicode=True, width=100
        ),
    }


def stale(topology: Topology, docs: Path) -> list[str]:
    """The generated files under `docs` that are missing or differ from the code."""
    return [
        name
        for name, text in render(topology).items()
        if not (docs / name).is_file() or (docs / name).read_text(encoding="utf-8") != text
    ]
