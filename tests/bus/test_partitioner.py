"""Key → partition: Java's murmur2 rule, checked against Java's vectors and aiokafka."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from bus.partitioner import kafka_partitioner, murmur2, partition_for_key

# From Apache Kafka's UtilsTest.testMurmur2 (Java's signed ints).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected & 0xFFFFFFFF


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=0, max_size=40), st.integers(min_value=1, max_value=512))
def test_partition_matches_aiokafka_default_partitioner(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    expected = DefaultPartitioner()(key, all_partitions, all_partitions)
    assert partition_for_key(key, partitions) == expected
    assert kafka_partitioner(key, all_partitions, all_partitions) == expected


def test_keyless_records_go_to_an_available_partition() -> None:
    assert {kafka_partitioner(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {kafka_partitioner(None, [0, 1], []) for _ in range(50)} <= {0, 1}


def test_a_topic_has_partitions() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for_key(b"k", 0)
