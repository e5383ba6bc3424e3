"""The arithmetic of `make bench`: percentiles, step summaries, the highest good rate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The latency bound of the headline figure ("the highest rate with p99 ≤ 100 ms").
P99_BOUND_MS = 100.0
#: A step keeps up when at least this share of what was sent is acked and delivered within
#: the drain time; below it the system has fallen behind and the stepping stops.
KEEPS_UP_SHARE = 0.99


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0 < q ≤ 1) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50 / p99 / p999 / max of latencies given in seconds, in milliseconds."""

    def ms(q: float) -> float | None:
        value = percentile(seconds, q)
        return None if value is None else round(value * 1000, 2)

    return {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": ms(1.0)}


def c2c_step(
    offered: float,
    duration_s: float,
    sends: Sequence[Mapping[str, Any]],
    deliver_latencies: Sequence[float],
) -> dict[str, Any]:
    """One step of the c2c ramp from the workers' answers: rates, latencies, keeps-up."""
    sent = sum(s["sent"] for s in sends)
    acked = sum(s["acked"] for s in sends)
    ack_latencies = [x for s in sends for x in s["ack_latencies"]]
    send_s = max((s["send_s"] for s in sends), default=duration_s) or duration_s
    delivered = len(deliver_latencies)
    ack = latency_ms(ack_latencies)
    deliver = latency_ms(deliver_latencies)
    keeps_up = sent > 0 and min(acked, delivered) >= KEEPS_UP_SHARE * sent
    return {
        "offered_per_s": offered,
        "sent_per_s": round(sent / send_s, 1),
        # Rates over the send window: what was acked/delivered late (within the drain)
        # counts, so a step that falls behind shows as latency, and as a shortfall once
        # messages miss the drain.
        "acked_per_s": round(acked / send_s, 1),
        "delivered_per_s": round(delivered / send_s, 1),
        "sent": sent,
        "acked": acked,
        "delivered": delivered,
        "failed": sum(s["failed"] for s in sends),
        "send_ack_ms": ack,
        "send_deliver_ms": deliver,
        "keeps_up": keeps_up,
    }


def max_rate_within(steps: Sequence[Mapping[str, Any]], bound_ms: float = P99_BOUND_MS) -> float:
    """The highest offered rate of a step that kept up with send→ack and send→deliver p99
    both ≤ `bound_ms`; 0 when no step did."""
    good = [
        s["offered_per_s"]
        for s in steps
        if s["keeps_up"]
        and s["send_ack_ms"]["p99"] is not None
        and s["send_deliver_ms"]["p99"] is not None
        and max(s["send_ack_ms"]["p99"], s["send_deliver_ms"]["p99"]) <= bound_ms
    ]
    return max(good, default=0.0)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """`value / baseline` rounded, None when either is missing or the baseline is 0."""
    if value is None or not baseline:
        return None
    return round(value / baseline, 4)


def projection_figures(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    lags: Sequence[tuple[float, int]],
    *,
    started: float,
    load_ended: float,
    caught_up: float | None,
) -> dict[str, Any]:
    """The projection's figures over one scenario.

    `before` and `after` are the projection process's stats (`bench._projection.stats`) at
    the start of the scenario's load and at its end; `lags` the (time, records) samples of
    the group's lag; `started` when the load began, `load_ended` when it was done (every
    message acked and delivered), `caught_up` when the lag was 0 with everything written
    (None: not within the wait). Rates run from `started` to `caught_up` (or to `after`, a
    lower bound, when it did not catch up)."""
    messages = int(after["messages"] - before["messages"])
    inbox_entries = int(after["inbox_entries"] - before["inbox_entries"])
    end = caught_up if caught_up is not None else float(after["at"])
    window = end - started

    def per_s(count: int) -> float | None:
        return round(count / window, 1) if window > 0 else None

    return {
        "max_lag": max((lag for _, lag in lags), default=None),
        "end_lag": lags[-1][1] if lags else None,
        "caught_up_s": None if caught_up is None else round(max(0.0, caught_up - load_ended), 2),
        "window_s": round(window, 2),
        "messages": messages,
        "inbox_entries": inbox_entries,
        "messages_per_s": per_s(messages),
        "inbox_entries_per_s": per_s(inbox_entries),
        "cpu_s": round(float(after["cpu_s"] - before["cpu_s"]), 2),
        "lag_samples": len(lags),
    }
