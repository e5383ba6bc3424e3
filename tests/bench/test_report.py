"""`make bench`'s report generator, JSON schema and arithmetic, on a fixture (no benchmark)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench import report
from bench.stats import (
    c2c_step,
    latency_ms,
    max_rate_within,
    percentile,
    projection_figures,
    ratio,
)

FIXTURE = Path(__file__).parent / "result_fixture.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(data))
    return path


def test_generate_writes_plots_and_the_page_keeping_the_hand_written_text(tmp_path: Path) -> None:
    template = tmp_path / "page.md.in"
    template.write_text(
        "# Title\n\nHand-written analysis stays.\n\n<!-- bench:run -->\n\n<!-- bench:summary -->\n"
        "\n<!-- bench:c2c -->\n\n<!-- bench:group -->\n\n<!-- bench:pull -->\n"
        "\n<!-- bench:connections -->\n\n<!-- bench:baselines -->\n\nTail prose.\n"
    )
    doc = tmp_path / "page.md"
    report.generate(write(tmp_path, fixture()), template=template, doc=doc)

    text = doc.read_text()
    assert "Hand-written analysis stays." in text
    assert text.rstrip().endswith("Tail prose.")
    assert "<!-- bench:" not in text
    # The exact command and the machine.
    assert "uv run python -m bench.run --mode quick" in text
    assert "Intel(R) Xeon(R) Processor, 2 cores" in text
    assert "Kafka 4.1.2" in text
    assert "FerretDB v1.24.2" in text
    # Headline figures, from the fixture, formatted.
    assert "Highest rate with p99 ≤ 100 ms: 500 msg/s" in text
    assert "| 2,000 | 2,000 | 1,000 | 800 |" in text  # the step that fell behind
    assert "**no**" in text
    assert "| 19,800 | 3.97 |" in text
    assert "20,375 records/s" in text
    assert "| c2c real (highest rate, p99 ≤ 100 ms) / Kafka round trip | 0.1 % |" in text
    assert "| real | 2,000 SUPER | 1,000 | 2 | 2,000 / 2,000 | 58 | - |" in text
    # The projection beside c2c, group and pull real; none on the embedded wiring.
    assert "highest lag **41 records**, caught up **1.5 s** after the load" in text
    assert "| yes | 41 |" in text  # the c2c step's highest projection lag
    assert "| 250.0 / 300.0 | 250 | 230 | 3.2 |" in text  # group: inbox writes/s, lag, catch-up
    assert "| 250.0 / 300.0 | 23 | 410 | **not** |" in text
    assert "caught up **12.5 s** after the load; it wrote 10,000 messages" in text
    assert "The embedded runs have no projection process" in text
    # pull real: sent through the gate, the unmeasured first read apart.
    assert "| real | 100 / 10,000 | 6.2 (1,600/s) | 6.4 | 35.5 (100 / 10,000) |" in text
    assert "first session list is not in the percentiles" in text
    # The bare three-hop chain beside the raw round trip.
    assert "p99 ≤ 100 ms up to 2,000 records/s; saturates at 14,250 records/s" in text
    assert "| 16,000 | 15,800 | 14,250 | 900.0 / 2,500.0 / 2,650.0 | **no** |" in text
    assert "/ Kafka chain (highest rate, p99 ≤ 100 ms) | 0.5 % |" in text
    assert "Figures missing" not in text
    for name in (report.LATENCY_PLOT, report.GROUP_PLOT):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
        assert f"../bench/results/{name}" in text


def test_the_fixture_has_every_required_figure() -> None:
    assert report.missing(fixture()) == []


def test_a_projection_that_did_not_catch_up_is_named_as_missing(tmp_path: Path) -> None:
    data = fixture()
    pull = data["scenarios"]["pull_real"]
    pull["projection"].update(caught_up_s=None, end_lag=7)
    assert report.missing(data) == ["scenarios.pull_real.projection.caught_up_s"]
    result, raw = report.load(write(tmp_path, data))
    assert "**not caught up** within 120 s after the load (lag 7 at the end)" in report.block_pull(
        result, raw
    )


def test_a_result_from_before_the_projection_still_renders(tmp_path: Path) -> None:
    """Results recorded before issue 13: seeded pull messages, no projection, no chain."""
    data = fixture()
    for name in ("pull_embedded", "pull_real"):
        pull = data["scenarios"][name]
        for key in ("send_s", "sent_per_s", "send_failed", "send_ack_ms", "inbox_complete_s"):
            del pull[key]
        del pull["first_session_list"]
        pull.pop("projection", None)
        pull["seed_s"] = 0.5
    for name in ("c2c_real", "group_real"):
        del data["scenarios"][name]["projection"]
    for run in data["scenarios"]["group_real"]["runs"]:
        del run["projection"]
    for step in data["scenarios"]["c2c_real"]["steps"]:
        del step["projection_max_lag"]
    for key in ("kafka_chain", "kafka_chain_max_rate_p99_100ms", "kafka_chain_saturation_per_s"):
        del data["baselines"][key]
    del data["ratios"]["c2c_real_vs_kafka_chain"]

    result, raw = report.load(write(tmp_path, data))
    assert "| real | 100 / 10,000 | seeded in 0.5 | - | - |" in report.block_pull(result, raw)
    assert "**Projection**" not in report.block_c2c(result, raw)
    assert "not measured in this run | p99 ≤ 100 ms up to - records/s" in report.block_baselines(
        result, raw
    )
    assert "`baselines.kafka_chain_saturation_per_s`" in report.block_run(result, raw)


def test_a_missing_required_figure_is_named_in_the_page(tmp_path: Path) -> None:
    data = fixture()
    del data["scenarios"]["c2c_real"]
    data["ratios"]["c2c_real_vs_kafka"] = None
    data["errors"] = {"real": "BenchError: server start: no answer in 120 s"}
    assert report.missing(data) == [
        "scenarios.c2c_real.max_rate_p99_100ms",
        "ratios.c2c_real_vs_kafka",
        "scenarios.c2c_real.projection.caught_up_s",
    ]
    result, raw = report.load(write(tmp_path, data))
    run = report.block_run(result, raw)
    assert "`scenarios.c2c_real.max_rate_p99_100ms`" in run
    assert "- `real`: BenchError: server start" in run
    assert "Real services.** not measured" in report.block_c2c(result, raw)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("scenarios", "c2c_embedded", "steps", 0, "keeps_up"), "yes"),
        (("scenarios", "connections", "idle_per_gate"), "many"),
        (("machine", "cores"), None),
    ],
)
def test_the_schema_rejects_a_malformed_result(
    tmp_path: Path, path: tuple[Any, ...], value: object
) -> None:
    data = fixture()
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(msgspec.ValidationError):
        report.load(write(tmp_path, data))


def test_an_unknown_block_in_the_template_is_an_error(tmp_path: Path) -> None:
    result, raw = report.load(write(tmp_path, fixture()))
    with pytest.raises(ValueError, match="unknown block 'nope'"):
        report.render("<!-- bench:nope -->\n", result, raw)


def test_the_committed_page_is_rendered_from_the_committed_results() -> None:
    latest = report.ROOT / "bench" / "results" / "latest.json"
    result, raw = report.load(latest)
    assert report.DOC.read_text() == report.render(report.TEMPLATE.read_text(), result, raw), (
        "docs/benchmarks.md is stale: run `make bench-report`"
    )


# --- arithmetic ----------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    assert latency_ms([0.001, 0.002]) == {"p50": 1.0, "p99": 2.0, "p999": 2.0, "max": 2.0}


def sends(sent: int, acked: int, ack_s: float) -> list[dict[str, Any]]:
    return [
        {"sent": sent, "acked": acked, "failed": 0, "send_s": 2.0, "ack_latencies": [ack_s] * acked}
    ]


def test_a_step_keeps_up_only_when_nearly_all_is_acked_and_delivered() -> None:
    ok = c2c_step(100, 2.0, sends(200, 200, 0.01), [0.02] * 199)
    assert ok["keeps_up"]
    assert (ok["sent_per_s"], ok["delivered_per_s"]) == (100, 99.5)
    assert not c2c_step(100, 2.0, sends(200, 200, 0.01), [0.02] * 150)["keeps_up"]
    assert not c2c_step(100, 2.0, sends(200, 150, 0.01), [0.02] * 200)["keeps_up"]
    assert not c2c_step(100, 2.0, sends(0, 0, 0.01), [])["keeps_up"]


def test_the_highest_good_rate_needs_both_p99s_within_the_bound_and_the_step_kept_up() -> None:
    steps = [
        c2c_step(100, 2.0, sends(200, 200, 0.010), [0.020] * 200),
        c2c_step(200, 2.0, sends(400, 400, 0.050), [0.090] * 400),
        c2c_step(400, 2.0, sends(800, 800, 0.050), [0.150] * 800),  # deliver p99 too slow
        c2c_step(800, 2.0, sends(1600, 100, 0.010), [0.010] * 100),  # fell behind
    ]
    assert max_rate_within(steps) == 200
    assert max_rate_within(steps[2:]) == 0.0
    assert ratio(200, 20_000) == 0.01
    assert ratio(200, 0) is None
    assert ratio(None, 5) is None


def stats(at: float, messages: int, inbox_entries: int, cpu_s: float) -> dict[str, float]:
    return {"at": at, "messages": messages, "inbox_entries": inbox_entries, "cpu_s": cpu_s}


def test_the_projection_figures_run_from_the_load_start_until_it_caught_up() -> None:
    figures = projection_figures(
        stats(100.0, 50, 80, 1.0),
        stats(125.0, 1050, 2080, 4.5),
        [(101.0, 3), (106.0, 40), (111.0, 12), (120.0, 0)],
        started=100.0,
        load_ended=110.0,
        caught_up=120.0,
    )
    assert figures == {
        "max_lag": 40,
        "end_lag": 0,
        "caught_up_s": 10.0,
        "window_s": 20.0,
        "messages": 1000,
        "inbox_entries": 2000,
        "messages_per_s": 50.0,
        "inbox_entries_per_s": 100.0,
        "cpu_s": 3.5,
        "lag_samples": 4,
    }


def test_a_projection_that_did_not_catch_up_has_rates_up_to_the_last_stats() -> None:
    figures = projection_figures(
        stats(0.0, 0, 0, 0.0),
        stats(40.0, 400, 800, 2.0),
        [(5.0, 10), (35.0, 25)],
        started=0.0,
        load_ended=10.0,
        caught_up=None,
    )
    assert figures["caught_up_s"] is None
    assert (figures["end_lag"], figures["max_lag"]) == (25, 25)
    assert (figures["window_s"], figures["inbox_entries_per_s"]) == (40.0, 20.0)
    empty = projection_figures(
        stats(0.0, 0, 0, 0.0), stats(0.0, 0, 0, 0.0), [], started=0.0, load_ended=0.0, caught_up=0.0
    )
    assert (empty["max_lag"], empty["end_lag"], empty["messages_per_s"]) == (None, None, None)
