"""The benchmark's report: which gateway its targets are about, and no section for an axis that did not run."""

from bench import report

SHIPPED, EMPTY = "gateway (shipped chain)", "gateway (empty chain)"
MACHINE = {"nproc": 2, "cpu": "cpu", "kernel": "k", "python": "3.11", "aiohttp": "3", "uvloop": "0",
           "nginx": "n", "wrk": "w"}


def run(**axes: object) -> dict:
    return {"started": "2026-11-26T07:00:25+00:00", "duration_s": 609.0, "machine": MACHINE,
            "chains": {"empty": [], "shipped": ["access_log"], "missing": []},
            "options": {"rounds": 2, "seconds": 5, "latency_seconds": 3, "soak_seconds": 600}, **axes}


def soak_on(peer: str) -> dict:
    return {"peer": peer, "streams": 500, "seconds": 600.0, "streams_run": 151500, "dropped": 0, "stalled": 0,
            "event_p99_ms": 1.47, "rss_start_kb": 51900, "rss_mid_kb": 63800, "rss_end_kb": 63810,
            "growth_second_half_pct": 0.02}


def test_a_soak_alone_is_reported_against_the_chain_it_ran_on():
    text = report.markdown(run(soak=soak_on(SHIPPED)))

    assert f"**Targets** (issue 9; {SHIPPED})" in text
    assert "| soak: RSS growth over the second half < 5% | 0.02% over 600 s | yes |" in text
    assert "Session minting" not in text  # the axis did not run: no heading without a table


def test_the_chain_cost_compares_the_shipped_chain_with_the_empty_one():
    relay = {EMPTY: {"rps": 6553.0, "p50_ms": 9.6, "p99_ms": 14.5, "errors": 0},
             SHIPPED: {"rps": 5084.0, "p50_ms": 12.4, "p99_ms": 24.5, "errors": 0}}
    rows = {name: (text, ok) for name, text, ok in report.targets(run(relay=relay))}

    assert rows["shipped chain costs ≤ 15% of the empty chain's throughput"] == ("22.4%", False)
    assert rows["relayed req/s ≥ 8,000"] == ("5,084 req/s", False)
    assert rows["session minting ≥ 3,000 req/s"] == ("not measured", None)
