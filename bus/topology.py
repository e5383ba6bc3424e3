"""The declared bus topology: every topic, template and consumer group, from topology.yaml.

`load_topology()` reads the file (and an optional production overlay), validates it and
returns a frozen `Topology`. Code asks it for names instead of writing them::

    topology = load_topology()
    topology.topic("im.up.msg").name        # raises UndeclaredTopicError for a typo
    topology.gate_topic(gate_id).name       # "im.gate.<gate_id>" from the template
    topology.dlq_topic("im.up.msg").name    # "im.up.msg.dlq"

Every problem in the file is a `TopologyError` naming the file, the line when known, the place
(`topics.im.up.msg.partitions`) and what was expected. The file format is documented at the
top of topology.yaml.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import yaml

__all__ = [
    "DLQ_SUFFIX",
    "GroupSpec",
    "TemplateSpec",
    "TopicSpec",
    "Topology",
    "TopologyError",
    "UndeclaredTopicError",
    "default_topology_path",
    "load_topology",
]

ENV_PATH: Final = "COFFEEBUS_TOPOLOGY"
ENV_OVERLAY: Final = "COFFEEBUS_TOPOLOGY_OVERLAY"
DLQ_SUFFIX: Final = ".dlq"
FORMAT_VERSION: Final = 1

# Kafka's own rule (kafka.common.internals.Topic): [a-zA-Z0-9._-], at most 249 chars, not "."
# or "..".
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]+")
MAX_NAME_LENGTH: Final = 249
# A template value becomes one dotted segment of a topic name, so no dots in it.
_LEGAL_VALUE = re.compile(r"[a-zA-Z0-9_-]+")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_CONFIG_NAME = re.compile(r"[a-z][a-z0-9]*(\.[a-z0-9]+)*")


class TopologyError(ValueError):
    """topology.yaml (or an overlay) is unreadable or invalid; the message says where."""

    def __init__(self, source: str, where: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.where = where
        self.line = line
        self.message = message
        place = f"{source}:{line}" if line is not None else source
        super().__init__(f"{place}: {where}: {message}" if where else f"{place}: {message}")


class UndeclaredTopicError(KeyError):
    """Code asked for a topic, group or template that topology.yaml does not declare."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "undeclared"


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One topic as the cluster should have it (declared, generated DLQ, or from a template)."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    """Kafka topic configs, values as Kafka strings; includes the inherited defaults."""
    key: str
    producers: tuple[str, ...]
    carries: str
    consumers: tuple[str, ...] = ()
    """Names of the declared groups that consume it."""
    dlq: str | None = None
    """Name of its dead-letter topic, when it has one."""
    dlq_of: str | None = None
    """For a dead-letter topic: the topic whose rejected records it holds."""


class TemplateSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A topic created at run time from a pattern with one placeholder."""

    name: str
    pattern: str
    placeholder: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    key: str
    producers: tuple[str, ...]
    carries: str
    consumer: str

    def instantiate(self, value: str) -> TopicSpec:
        """The concrete topic for `value`; raises ValueError for a value Kafka would reject."""
        if not _LEGAL_VALUE.fullmatch(value):
            raise ValueError(
                f"{self.placeholder} {value!r} for template {self.pattern!r} must be letters, "
                "digits, '_' or '-'"
            )
        name = self.pattern.replace("{" + self.placeholder + "}", value)
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"topic {name!r} is longer than {MAX_NAME_LENGTH} characters")
        return TopicSpec(
            name=name,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            configs=dict(self.configs),
            key=self.key,
            producers=self.producers,
            carries=self.carries,
        )

    def matches(self, name: str) -> bool:
        """Whether `name` is an instance of this template."""
        prefix, _, suffix = self.pattern.partition("{" + self.placeholder + "}")
        middle = name[len(prefix) : len(name) - len(suffix)]
        return (
            len(name) > len(prefix) + len(suffix)
            and name.startswith(prefix)
            and name.endswith(suffix)
            and _LEGAL_VALUE.fullmatch(middle) is not None
        )


class GroupSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group: its Kafka group id and the topics it consumes."""

    name: str
    group_id: str
    topics: tuple[str, ...]
    does: str


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """The validated topology. Build it with `load_topology()`."""

    source: str
    topics: dict[str, TopicSpec]
    """Every concrete topic, dead-letter topics included, in file order."""
    templates: dict[str, TemplateSpec]
    groups: dict[str, GroupSpec]

    def topic(self, name: str) -> TopicSpec:
        """The declared topic `name`; raises UndeclaredTopicError otherwise."""
        try:
            return self.topics[name]
        except KeyError:
            raise UndeclaredTopicError(f"topic {name!r} is not declared in {self.source}") from None

    def declared(self, name: str) -> bool:
        """Whether `name` is a declared topic or an instance of a declared template."""
        return name in self.topics or self.template_for(name) is not None

    def dlq_topic(self, name: str) -> TopicSpec:
        """The dead-letter topic of the declared topic `name`."""
        spec = self.topic(name)
        if spec.dlq is None:
            raise UndeclaredTopicError(
                f"topic {name!r} has no dead-letter topic in {self.source} (set `dlq: true`)"
            )
        return self.topics[spec.dlq]

    def template(self, name: str) -> TemplateSpec:
        """The declared template `name` (e.g. "gate")."""
        try:
            return self.templates[name]
        except KeyError:
            raise UndeclaredTopicError(
                f"template {name!r} is not declared in {self.source}"
            ) from None

    def template_for(self, topic: str) -> TemplateSpec | None:
        """The template `topic` is an instance of, if any."""
        return next((t for t in self.templates.values() if t.matches(topic)), None)

    def gate_topic(self, gate_id: str) -> TopicSpec:
        """The topic of gate `gate_id`, from the `gate` template."""
        return self.template("gate").instantiate(gate_id)

    def group(self, name: str) -> GroupSpec:
        """The declared consumer group `name` (e.g. "msg")."""
        try:
            return self.groups[name]
        except KeyError:
            raise UndeclaredTopicError(
                f"consumer group {name!r} is not declared in {self.source}"
            ) from None

    def dlq_topics(self) -> Iterator[TopicSpec]:
        """Every generated dead-letter topic."""
        return (t for t in self.topics.values() if t.dlq_of is not None)


def default_topology_path() -> Path:
    """COFFEEBUS_TOPOLOGY if set, else the repository's topology.yaml beside the packages."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "topology.yaml"


def load_topology(
    path: str | os.PathLike[str] | None = None,
    *,
    overlay: str | os.PathLike[str] | None = None,
) -> Topology:
    """Load and validate a topology file, with an optional overlay merged over it.

    `path` defaults to `default_topology_path()`; `overlay` to COFFEEBUS_TOPOLOGY_OVERLAY when
    that is set. Raises TopologyError for any problem.
    """
    base_path = Path(path) if path is not None else default_topology_path()
    if overlay is None and os.environ.get(ENV_OVERLAY):
        overlay = os.environ[ENV_OVERLAY]
    base_doc = _read_yaml(base_path)
    raw = base_doc.data
    if overlay is not None:
        overlay_doc = _read_yaml(Path(overlay))
        _check_overlay(overlay_doc, base_doc)
        raw = _merge(raw, overlay_doc.data)
    return _build(raw, base_doc)


# --- reading -------------------------------------------------------------------------------


class _Doc:
    """A parsed YAML document with its node tree, to point errors at lines."""

    def __init__(self, source: str, data: Any, node: yaml.Node | None) -> None:
        self.source = source
        self.data = data
        self.node = node

    def line(self, *keys: str) -> int | None:
        """1-based line of the deepest mapping entry along `keys` that exists."""
        node, line = self.node, None
        for key in keys:
            if isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
                node = node.value[int(key)]
                line = node.start_mark.line + 1
                continue
            if not isinstance(node, yaml.MappingNode):
                break
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                break
        return line

    def error(self, keys: tuple[str, ...], message: str) -> TopologyError:
        return TopologyError(self.source, _where(keys), message, self.line(*keys))


def _where(keys: tuple[str, ...]) -> str:
    """`("topics", "im.up.msg", "producers", "1")` -> `topics["im.up.msg"].producers[1]`."""
    out = ""
    for key in keys:
        if key.isdigit():
            out += f"[{key}]"
        elif key.isidentifier():
            out += f".{key}" if out else key
        else:
            out += f'["{key}"]'
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a repeated topic would silently replace one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _read_yaml(path: Path) -> _Doc:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(source, "", f"cannot read topology file ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise TopologyError(source, "", f"invalid YAML: {exc.problem}", line) from None
    except yaml.YAMLError as exc:
        raise TopologyError(source, "", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TopologyError(source, "", "expected a mapping at the top level")
    return _Doc(source, data, node)


# --- the file's shape ----------------------------------------------------------------------

ConfigValue = str | int | float | bool
_T = TypeVar("_T")


class _DlqDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    partitions: int = 1
    configs: dict[str, ConfigValue] = {}


class _Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    replication_factor: int = 1
    configs: dict[str, ConfigValue] = {}
    dlq: _DlqDefaults = _DlqDefaults()


class _TopicEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    partitions: int
    key: str
    producers: list[str]
    carries: str
    replication_factor: int | None = None
    configs: dict[str, ConfigValue] = {}
    dlq: bool = False


class _TemplateEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pattern: str
    partitions: int
    key: str
    producers: list[str]
    carries: str
    consumer: str
    replication_factor: int | None = None
    configs: dict[str, ConfigValue] = {}


class _GroupEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    group_id: str
    topics: list[str]
    does: str


_SECTIONS: Final = {"version", "defaults", "topics", "templates", "groups"}
# What an overlay may change, per section entry.
_OVERLAY_FIELDS: Final = {"partitions", "replication_factor", "configs"}


def _convert(doc: _Doc, keys: tuple[str, ...], value: Any, type_: type[_T]) -> _T:
    try:
        return msgspec.convert(value, type=type_, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.field[0]`"; turn its path into ours.
        message, _, at = str(exc).partition(" - at `$")
        sub = tuple(p for p in re.split(r"[.\[\]`]+", at) if p)
        raise doc.error(keys + sub, _lower_first(message)) from None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _mapping(doc: _Doc, keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise doc.error(keys, f"expected a mapping of names, got {type(value).__name__}")
    return value


def _check_overlay(overlay: _Doc, base: _Doc) -> None:
    """An overlay tunes sizes and configs; it may not add or rename anything."""
    for section in overlay.data:
        if section not in {"defaults", "topics", "templates"}:
            raise overlay.error(
                (str(section),), "an overlay may only set defaults, topics and templates"
            )
    _convert(overlay, ("defaults",), overlay.data.get("defaults") or {}, _Defaults)
    for section in ("topics", "templates"):
        declared = _mapping(base, (section,), base.data.get(section))
        for name, entry in _mapping(overlay, (section,), overlay.data.get(section)).items():
            if name not in declared:
                raise overlay.error(
                    (section, name), f"not declared in {base.source}; an overlay cannot add it"
                )
            fields = _mapping(overlay, (section, name), entry)
            for field in fields:
                if field not in _OVERLAY_FIELDS:
                    raise overlay.error(
                        (section, name, field),
                        "an overlay may only set " + ", ".join(sorted(_OVERLAY_FIELDS)),
                    )


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- validation ----------------------------------------------------------------------------


def _check_name(doc: _Doc, keys: tuple[str, ...], name: str, what: str) -> None:
    if name in {".", ".."} or not _LEGAL_NAME.fullmatch(name):
        raise doc.error(
            keys, f"illegal {what} name {name!r}: use only letters, digits, '.', '_' and '-'"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise doc.error(keys, f"{what} name is longer than Kafka's {MAX_NAME_LENGTH} characters")


def _check_positive(doc: _Doc, keys: tuple[str, ...], value: int) -> None:
    if value < 1:
        raise doc.error(keys, f"expected an integer >= 1, got {value}")


def _kafka_string(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_CLEANUP = {"delete", "compact"}
_COMPRESSION = {"uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"}


def _check_configs(
    doc: _Doc, keys: tuple[str, ...], configs: Mapping[str, str], replication_factor: int
) -> None:
    """Catch the usual mistakes before the broker does; Kafka validates the rest on apply."""
    for name, value in configs.items():
        where = (*keys, "configs", name)
        if not _CONFIG_NAME.fullmatch(name):
            raise doc.error(where, "not a Kafka config name (lower-case, dotted)")
        if name in {"retention.ms", "retention.bytes"}:
            if not re.fullmatch(r"-?\d+", value) or int(value) < -1:
                raise doc.error(where, f"expected an integer >= -1, got {value!r}")
        elif name in {"max.message.bytes", "segment.bytes", "segment.ms", "min.insync.replicas"}:
            if not value.isdigit() or int(value) < 1:
                raise doc.error(where, f"expected an integer >= 1, got {value!r}")
            if name == "min.insync.replicas" and int(value) > replication_factor:
                raise doc.error(
                    where,
                    f"min.insync.replicas {value} exceeds replication_factor "
                    f"{replication_factor}: no write could ever succeed with acks=all",
                )
        elif name == "cleanup.policy":
            policies = [p.strip() for p in value.split(",")]
            if not policies or not set(policies) <= _CLEANUP:
                raise doc.error(where, f"expected delete, compact or both, got {value!r}")
        elif name == "compression.type" and value not in _COMPRESSION:
            raise doc.error(where, f"expected one of {', '.join(sorted(_COMPRESSION))}")


def _producers(doc: _Doc, keys: tuple[str, ...], producers: list[str]) -> tuple[str, ...]:
    if not producers or not all(p.strip() for p in producers):
        raise doc.error((*keys, "producers"), "expected a non-empty list of role names")
    return tuple(producers)


def _build(raw: dict[str, Any], doc: _Doc) -> Topology:
    for section in raw:
        if section not in _SECTIONS:
            raise doc.error(
                (str(section),), "unknown section; expected " + ", ".join(sorted(_SECTIONS))
            )
    if raw.get("version") != FORMAT_VERSION:
        raise doc.error(("version",), f"expected version: {FORMAT_VERSION}")
    defaults = _convert(doc, ("defaults",), raw.get("defaults") or {}, _Defaults)
    _check_positive(doc, ("defaults", "replication_factor"), defaults.replication_factor)
    _check_positive(doc, ("defaults", "dlq", "partitions"), defaults.dlq.partitions)
    base_configs = {k: _kafka_string(v) for k, v in defaults.configs.items()}

    entries = {
        name: _convert(doc, ("topics", name), value, _TopicEntry)
        for name, value in _mapping(doc, ("topics",), raw.get("topics")).items()
    }
    if not entries:
        raise doc.error(("topics",), "expected at least one topic")
    groups = {
        name: _convert(doc, ("groups", name), value, _GroupEntry)
        for name, value in _mapping(doc, ("groups",), raw.get("groups")).items()
    }
    consumers: dict[str, list[str]] = {}
    for gname, group in groups.items():
        for topic in group.topics:
            consumers.setdefault(topic, []).append(gname)

    topics: dict[str, TopicSpec] = {}
    for name, entry in entries.items():
        keys = ("topics", name)
        _check_name(doc, keys, name, "topic")
        if name.endswith(DLQ_SUFFIX):
            raise doc.error(
                keys, "dead-letter topics are generated: set `dlq: true` on the source topic"
            )
        _check_positive(doc, (*keys, "partitions"), entry.partitions)
        rf = (
            defaults.replication_factor
            if entry.replication_factor is None
            else entry.replication_factor
        )
        _check_positive(doc, (*keys, "replication_factor"), rf)
        configs = base_configs | {k: _kafka_string(v) for k, v in entry.configs.items()}
        _check_configs(doc, keys, configs, rf)
        consumed_by = tuple(consumers.get(name, ()))
        if consumed_by and not entry.dlq:
            raise doc.error(
                (*keys, "dlq"),
                f"consumed by group {consumed_by[0]!r}, so it needs `dlq: true` "
                "(the bus sends poison records to <topic>.dlq)",
            )
        if entry.dlq and not consumed_by:
            raise doc.error((*keys, "dlq"), "no declared group consumes it, so no DLQ is needed")
        dlq_name = name + DLQ_SUFFIX if entry.dlq else None
        topics[name] = TopicSpec(
            name=name,
            partitions=entry.partitions,
            replication_factor=rf,
            configs=configs,
            key=entry.key,
            producers=_producers(doc, keys, entry.producers),
            carries=entry.carries,
            consumers=consumed_by,
            dlq=dlq_name,
        )
        if dlq_name is not None:
            _check_name(doc, keys, dlq_name, "dead-letter topic")
            dlq_configs = base_configs | {
                k: _kafka_string(v) for k, v in defaults.dlq.configs.items()
            }
            _check_configs(doc, ("defaults", "dlq"), dlq_configs, rf)
            topics[dlq_name] = TopicSpec(
                name=dlq_name,
                partitions=defaults.dlq.partitions,
                replication_factor=rf,
                configs=dlq_configs,
                key=f"as {name} ({entry.key})",
                producers=("bus",),
                carries=f"records of {name} a handler rejected, with the error",
                dlq_of=name,
            )
    _check_collisions(doc, topics)

    templates = _build_templates(doc, raw, defaults, base_configs, topics)

    group_specs: dict[str, GroupSpec] = {}
    group_ids: dict[str, str] = {}
    for gname, group in groups.items():
        keys = ("groups", gname)
        _check_name(doc, keys, gname, "group")
        _check_name(doc, (*keys, "group_id"), group.group_id, "group id")
        if group.group_id in group_ids:
            raise doc.error(
                (*keys, "group_id"), f"same group_id as group {group_ids[group.group_id]!r}"
            )
        group_ids[group.group_id] = gname
        if not group.topics:
            raise doc.error((*keys, "topics"), "expected at least one topic")
        for topic in group.topics:
            if topic not in entries:
                raise doc.error((*keys, "topics"), f"topic {topic!r} is not declared in topics")
        group_specs[gname] = GroupSpec(
            name=gname, group_id=group.group_id, topics=tuple(group.topics), does=group.does
        )
    return Topology(source=doc.source, topics=topics, templates=templates, groups=group_specs)


def _check_collisions(doc: _Doc, topics: Mapping[str, TopicSpec]) -> None:
    # Kafka refuses topics whose names differ only by '.' vs '_' (their metric names clash).
    seen: dict[str, str] = {}
    for name in topics:
        folded = name.replace(".", "_")
        if folded in seen:
            raise doc.error(
                ("topics", name), f"collides with {seen[folded]!r} ('.' and '_' are the same)"
            )
        seen[folded] = name


def _build_templates(
    doc: _Doc,
    raw: dict[str, Any],
    defaults: _Defaults,
    base_configs: dict[str, str],
    topics: Mapping[str, TopicSpec],
) -> dict[str, TemplateSpec]:
    templates: dict[str, TemplateSpec] = {}
    for name, value in _mapping(doc, ("templates",), raw.get("templates")).items():
        keys = ("templates", name)
        entry = _convert(doc, keys, value, _TemplateEntry)
        placeholders = _PLACEHOLDER.findall(entry.pattern)
        if len(placeholders) != 1 or entry.pattern.count("{") != 1:
            raise doc.error(
                (*keys, "pattern"),
                f"expected exactly one {{placeholder}} (lower-case name), got {entry.pattern!r}",
            )
        placeholder = placeholders[0]
        _check_name(
            doc, (*keys, "pattern"), entry.pattern.replace("{" + placeholder + "}", "x"), "template"
        )
        _check_positive(doc, (*keys, "partitions"), entry.partitions)
        rf = (
            defaults.replication_factor
            if entry.replication_factor is None
            else entry.replication_factor
        )
        _check_positive(doc, (*keys, "replication_factor"), rf)
        configs = base_configs | {k: _kafka_string(v) for k, v in entry.configs.items()}
        _check_configs(doc, keys, configs, rf)
        spec = TemplateSpec(
            name=name,
            pattern=entry.pattern,
            placeholder=placeholder,
            partitions=entry.partitions,
            replication_factor=rf,
            configs=configs,
            key=entry.key,
            producers=_producers(doc, keys, entry.producers),
            carries=entry.carries,
            consumer=entry.consumer,
        )
        for topic in topics:
            if spec.matches(topic):
                raise doc.error(
                    (*keys, "pattern"), f"declared topic {topic!r} would be one of its instances"
                )
        for other in templates.values():
            if other.pattern == spec.pattern:
                raise doc.error((*keys, "pattern"), f"same pattern as template {other.name!r}")
        templates[name] = spec
    return templates
