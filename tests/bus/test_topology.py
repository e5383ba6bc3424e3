"""topology.yaml loads, declares every topic of the design, and bad files fail clearly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.topology import (
    Topology,
    TopologyError,
    UndeclaredTopicError,
    default_topology_path,
    load_topology,
)

# DESIGN.md "Topics" (biz.* with the names this project chose for it).
DESIGN_TOPICS = [
    "im.up.msg",
    "im.up.ack",
    "im.up.query",
    "im.up.group",
    "im.up.c2s",
    "im.s2c",
    "im.fanout",
    "im.timer",
    "im.push",
    "biz.c2s",
    "biz.events.message",
    "biz.events.user",
    "biz.events.group",
    "im.log.msg",
    "im.log.user",
]
DESIGN_GROUPS = {
    "msg": {"im.up.msg"},
    "fanout": {"im.fanout", "im.s2c"},
    "ack": {"im.up.ack"},
    "query": {"im.up.query"},
    "group": {"im.up.group"},
    "timer": {"im.timer"},
    "push": {"im.push"},
    "biz": {"im.up.c2s"},
    "call": {"im.up.call"},
    "room": {"im.up.room"},
    "webhook": {
        "biz.c2s",
        "biz.events.message",
        "biz.events.user",
        "biz.events.group",
        "biz.events.call",
        "biz.events.room",
    },
    "projection": {"im.log.msg", "im.log.user"},
}

MINIMAL = """\
version: 1
topics:
  t.in:
    partitions: 4
    key: user id
    producers: [gateway]
    carries: things
    dlq: true
groups:
  g:
    group_id: test.g
    topics: [t.in]
    does: consumes things
"""


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> TopologyError:
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.fixture(scope="module")
def real() -> Topology:
    return load_topology()


# --- the real file -------------------------------------------------------------------------


def test_real_file_declares_every_design_topic(real: Topology) -> None:
    for name in DESIGN_TOPICS:
        spec = real.topic(name)
        assert spec.partitions >= 1
        assert spec.replication_factor >= 1
        assert spec.key
        assert spec.producers
        assert spec.carries


def test_real_file_declares_every_design_group(real: Topology) -> None:
    assert {name: set(g.topics) for name, g in real.groups.items()} == DESIGN_GROUPS
    assert len({g.group_id for g in real.groups.values()}) == len(real.groups)


def test_every_consumed_topic_has_its_dlq(real: Topology) -> None:
    consumed = {t for g in real.groups.values() for t in g.topics}
    for name in consumed:
        dlq = real.dlq_topic(name)
        assert dlq.name == name + ".dlq"
        assert dlq.dlq_of == name
        assert real.topic(name).consumers
    # and nothing else has one
    assert {t.dlq_of for t in real.dlq_topics()} == consumed


def test_hot_topics_have_room_to_scale(real: Topology) -> None:
    for name in ("im.up.msg", "im.up.ack", "im.fanout", "im.timer"):
        assert real.topic(name).partitions >= 8


def test_defaults_are_inherited_and_rendered_as_kafka_strings(real: Topology) -> None:
    spec = real.topic("im.up.msg")
    assert spec.configs["min.insync.replicas"] == "1"
    assert spec.configs["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert real.dlq_topic("im.up.msg").configs["retention.ms"] == str(14 * 24 * 3600 * 1000)


def test_gate_topic_from_template(real: Topology) -> None:
    spec = real.gate_topic("gate-7")
    assert spec.name == "im.gate.gate-7"
    assert spec.configs["retention.ms"] == "3600000"
    assert real.declared("im.gate.gate-7")
    assert real.template_for("im.gate.gate-7") is real.template("gate")
    for bad in ("", "a.b", "x y", "g" * 250):
        with pytest.raises(ValueError, match=r"gate_id|longer"):
            real.gate_topic(bad)


def test_undeclared_names_raise(real: Topology) -> None:
    with pytest.raises(UndeclaredTopicError, match=r"'im\.up\.mgs' is not declared"):
        real.topic("im.up.mgs")
    with pytest.raises(UndeclaredTopicError, match="no dead-letter topic"):
        real.dlq_topic("biz.webhooks.dead-letter")
    with pytest.raises(UndeclaredTopicError):
        real.group("nope")
    assert real.declared("im.up.msg")
    assert real.declared("im.up.msg.dlq")
    assert not real.declared("im.up.mgs")
    assert not real.declared("im.gate.")


def test_default_path_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_topology_path().name == "topology.yaml"
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("COFFEEBUS_TOPOLOGY", str(path))
    assert default_topology_path() == path
    assert set(load_topology().topics) == {"t.in", "t.in.dlq"}


# --- overlays ------------------------------------------------------------------------------


def test_production_overlay_raises_replication(tmp_path: Path) -> None:
    overlay = write(
        tmp_path,
        """\
        defaults:
          replication_factor: 3
          configs: {min.insync.replicas: 2}
          dlq: {partitions: 4}
        topics:
          im.up.msg: {partitions: 64}
        templates:
          gate: {partitions: 8}
        """,
        "prod.yaml",
    )
    prod = load_topology(overlay=overlay)
    assert prod.topic("im.up.msg").partitions == 64
    assert prod.topic("im.up.msg").configs["min.insync.replicas"] == "2"
    assert prod.topic("im.up.msg").configs["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert all(t.replication_factor == 3 for t in prod.topics.values())
    assert prod.dlq_topic("im.push").partitions == 4
    assert prod.gate_topic("g").partitions == 8
    assert prod.gate_topic("g").replication_factor == 3


def test_the_repository_production_overlay() -> None:
    """topology.prod.yaml: every topic (gate topics too) on three replicas, acked by two,
    no unclean leader election; the logs of record keep their two weeks."""
    prod = load_topology(overlay=default_topology_path().with_name("topology.prod.yaml"))
    specs = [*prod.topics.values(), prod.gate_topic("g")]
    for spec in specs:
        assert spec.replication_factor == 3, spec.name
        assert spec.configs["min.insync.replicas"] == "2", spec.name
        assert spec.configs["unclean.leader.election.enable"] == "false", spec.name
    for name in ("im.log.msg", "im.log.user"):
        assert int(prod.topic(name).configs["retention.ms"]) >= 14 * 24 * 3600 * 1000


def test_overlay_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = write(tmp_path, MINIMAL)
    overlay = write(tmp_path, "topics:\n  t.in: {partitions: 9}\n", "o.yaml")
    monkeypatch.setenv("COFFEEBUS_TOPOLOGY_OVERLAY", str(overlay))
    assert load_topology(base).topic("t.in").partitions == 9


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ("topics:\n  t.new: {partitions: 2}\n", r'topics\["t\.new"\]: not declared'),
        ("topics:\n  t.in: {key: other}\n", r'topics\["t\.in"\]\.key: an overlay may only set'),
        ("groups: {}\n", "groups: an overlay may only set defaults"),
        ("defaults: {replication_factor: x}\n", r"defaults\.replication_factor: expected `int`"),
    ],
)
def test_overlay_may_only_tune(tmp_path: Path, overlay: str, expected: str) -> None:
    base = write(tmp_path, MINIMAL)
    path = write(tmp_path, overlay, "o.yaml")
    with pytest.raises(TopologyError, match=expected) as info:
        load_topology(base, overlay=path)
    assert str(path) in str(info.value)


def test_overlay_checked_against_replication(tmp_path: Path) -> None:
    base = write(tmp_path, MINIMAL)
    path = write(tmp_path, "defaults:\n  configs: {min.insync.replicas: 2}\n", "o.yaml")
    with pytest.raises(TopologyError, match="exceeds replication_factor 1"):
        load_topology(base, overlay=path)


# --- bad files -----------------------------------------------------------------------------


def test_missing_partitions_names_topic_and_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("    partitions: 4\n", ""))
    assert error.where == 'topics["t.in"]'
    assert error.line == 3
    assert "missing required field `partitions`" in str(error)


def test_wrong_type_names_field(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("partitions: 4", "partitions: four"))
    assert error.where == 'topics["t.in"].partitions'
    assert error.line == 4
    assert "expected `int`, got `str`" in str(error)


def test_boolean_is_not_a_partition_count(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("partitions: 4", "partitions: true"))
    assert "expected `int`, got `bool`" in str(error)


def test_wrong_type_in_list(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("[gateway]", "[gateway, 3]"))
    assert error.where == 'topics["t.in"].producers[1]'


def test_unknown_field_is_a_typo(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, MINIMAL.replace("partitions: 4", "partitions: 4\n    partition: 4")
    )
    assert "unknown field `partition`" in str(error)


def test_zero_partitions(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("partitions: 4", "partitions: 0"))
    assert error.where == 'topics["t.in"].partitions'
    assert "expected an integer >= 1, got 0" in str(error)


def test_zero_replication(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, MINIMAL.replace("partitions: 4", "partitions: 4\n    replication_factor: 0")
    )
    assert error.where == 'topics["t.in"].replication_factor'


def test_undeclared_group_topic(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("topics: [t.in]", "topics: [t.in, t.typo]"))
    assert error.where == "groups.g.topics"
    assert "topic 't.typo' is not declared" in str(error)


@pytest.mark.parametrize("name", ["t in", "t/in", "ü", "x" * 250, ".."])
def test_illegal_topic_name(tmp_path: Path, name: str) -> None:
    error = load_error(tmp_path, MINIMAL.replace("t.in", f"'{name}'"))
    assert "illegal topic name" in str(error) or "longer than Kafka's 249" in str(error)


def test_names_colliding_in_kafka_metrics(tmp_path: Path) -> None:
    text = MINIMAL + "  # \n"
    text = text.replace(
        "topics:\n",
        "topics:\n  t_in:\n    partitions: 1\n    key: k\n    producers: [p]\n    carries: c\n",
        1,
    )
    error = load_error(tmp_path, text)
    assert "collides with 't_in'" in str(error)


def test_consumed_topic_needs_dlq(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("    dlq: true\n", ""))
    assert error.where == 'topics["t.in"].dlq'
    assert "consumed by group 'g'" in str(error)


def test_dlq_without_consumer(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("    topics: [t.in]\n", "    topics: []\n"))
    assert "no declared group consumes it" in str(error)


def test_dlq_names_are_generated_only(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL.replace("t.in:", "t.in.dlq:", 1))
    assert "dead-letter topics are generated" in str(error)


def test_duplicate_topic_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "groups:",
        "  t.in:\n    partitions: 1\n    key: k\n    producers: [p]\n    carries: c\ngroups:",
    )
    error = load_error(tmp_path, text)
    assert "duplicate key 't.in'" in str(error)
    assert error.line == 9


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("retention.ms: soon", "expected an integer >= -1"),
        ("min.insync.replicas: 2", "exceeds replication_factor 1"),
        ("cleanup.policy: forever", "expected delete, compact or both"),
        ("Retention: 1", "not a Kafka config name"),
    ],
)
def test_bad_configs(tmp_path: Path, config: str, expected: str) -> None:
    error = load_error(
        tmp_path,
        MINIMAL.replace("    dlq: true\n", f"    dlq: true\n    configs:\n      {config}\n"),
    )
    assert expected in str(error)
    assert error.where.startswith('topics["t.in"].configs')
    assert error.line == 10


def test_config_values_become_kafka_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace(
            "    dlq: true\n",
            "    dlq: true\n    configs:\n      unclean.leader.election.enable: false\n"
            "      min.cleanable.dirty.ratio: 0.25\n",
        ),
    )
    configs = load_topology(path).topic("t.in").configs
    assert configs["unclean.leader.election.enable"] == "false"
    assert configs["min.cleanable.dirty.ratio"] == "0.25"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("im.gate", "exactly one {placeholder}"),
        ("im.{a}.{b}", "exactly one {placeholder}"),
        ("im.gate.{Gate}", "exactly one {placeholder}"),
        ("im gate.{gate_id}", "illegal template name"),
        ("t.{x}", "declared topic 't.in' would be one of its instances"),
    ],
)
def test_bad_templates(tmp_path: Path, pattern: str, expected: str) -> None:
    text = MINIMAL + textwrap.dedent(
        f"""\
        templates:
          gate:
            pattern: "{pattern}"
            partitions: 1
            key: k
            producers: [p]
            carries: c
            consumer: someone
        """
    )
    error = load_error(tmp_path, text)
    assert expected in str(error)
    assert error.where.startswith("templates.gate")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("topics: [1\n", "invalid YAML"),
        ("- a\n", "expected a mapping at the top level"),
        (MINIMAL.replace("version: 1", "version: 2"), "version: expected version: 1"),
        (MINIMAL + "extras: {}\n", "extras: unknown section"),
        ("version: 1\ntopics: {}\n", "topics: expected at least one topic"),
        (MINIMAL.replace("group_id: test.g", "group_id: 'a b'"), "illegal group id name"),
    ],
)
def test_broken_files(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(load_error(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope\.yaml: cannot read topology file"):
        load_topology(tmp_path / "nope.yaml")
