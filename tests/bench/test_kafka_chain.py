"""The bare three-hop Kafka chain's arithmetic (no broker): steps, the highest good rate and
the saturation rate."""

from __future__ import annotations

from bench.kafka_chain import RECORD_BYTES, STAMP, chain_step, summary


def source(sent: int, send_s: float = 2.0) -> dict[str, float]:
    return {"sent": sent, "send_s": send_s, "t0": 0.0}


def test_a_step_keeps_up_when_nearly_every_record_arrived() -> None:
    step = chain_step(1000, source(2000), [0.02] * 1990, (0.05, 2.05))
    assert step["keeps_up"]
    assert (step["sent_per_s"], step["delivered_per_s"]) == (1000.0, 994.5)
    assert step["end_to_end_ms"]["p99"] == 20.0
    assert not chain_step(1000, source(2000), [0.02] * 1900, (0.05, 2.05))["keeps_up"]
    nothing = chain_step(1000, source(0), [], (None, None))
    assert (nothing["keeps_up"], nothing["delivered_per_s"]) == (False, 0.0)


def test_the_summary_is_the_highest_good_rate_and_the_highest_delivered_rate() -> None:
    steps = [
        chain_step(500, source(1000), [0.03] * 1000, (0.0, 2.0)),
        chain_step(2000, source(4000), [0.09] * 4000, (0.0, 2.0)),
        chain_step(8000, source(16000), [0.3] * 16000, (0.0, 2.5)),  # p99 past 100 ms
        chain_step(16000, source(32000), [1.5] * 20000, (0.0, 1.6)),  # fell behind
    ]
    assert summary(steps) == (2000, 12499.4)
    assert summary([]) == (0.0, 0.0)


def test_a_record_is_the_size_the_issue_names() -> None:
    assert STAMP.size < RECORD_BYTES == 200
