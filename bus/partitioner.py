"""Key → partition: the rule of the Java client (and of aiokafka's `DefaultPartitioner`).

`partition = (murmur2(key) & 0x7fffffff) % partitions`. Both buses use this one function —
MemoryBus directly, KafkaBus by handing `kafka_partitioner` to the aiokafka producer — so a
key lands on the same partition in the embedded mode, on Kafka, and in any Java or librdkafka
(`murmur2_random`) producer of the same topic. Keyless records are spread: round-robin in
MemoryBus, random over the available partitions on Kafka (aiokafka's behaviour).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 as `org.apache.kafka.common.utils.Utils.murmur2` (unsigned result)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    # Little-endian 4-byte words, as the Java code assembles them byte by byte.
    for i in range(0, tail, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=1 << 16)
def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of `key` in a topic of `partitions` partitions.

    Cached: keys (users, conversations) recur, and a cache hit costs a tenth of the hash.
    """
    if partitions <= 0:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def kafka_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """`partitioner=` callable for `AIOKafkaProducer`, same contract as its default one."""
    if key is None:
        return random.choice(available or all_partitions)  # spreading, not crypto
    # Kafka partitions are numbered 0..n-1, so the index is the partition id (as in Java).
    return partition_for_key(key, len(all_partitions))
