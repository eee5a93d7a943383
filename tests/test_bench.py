"""Latency timing helpers: turn-taking blocks, the percentiles they report, the allocator set-up."""

from __future__ import annotations

from pipeline.allocator import steady_allocator
from pipeline.bench import markdown_table, time_runs


def test_time_runs_takes_turns_in_blocks_after_warm_up():
    calls: list[str] = []
    out = time_runs(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2, runs=3, block=2, pause_s=0
    )
    # warm-up: each runtime alone (a a, b b); round 0 in order a, b: one untimed call then a block of 2 timed;
    # round 1 rotated to b, a: one untimed call then the 1 timed call left (3 = 2 + 1)
    assert calls == ["a", "a", "b", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 2 + ["a"] * 2
    assert set(out) == {"a", "b"} and out["a"]["runs"] == 3 and out["b"]["runs"] == 3
    assert 0 <= out["a"]["p50_ms"] <= out["a"]["p90_ms"] <= out["a"]["p99_ms"]


def test_steady_allocator_takes_effect_under_glibc():
    import platform

    # glibc accepts both mallopt settings (Linux CI); elsewhere the call reports False, never raises
    assert steady_allocator() is (platform.libc_ver()[0] == "glibc")


def test_markdown_table_gives_speed_up_against_torch():
    row = lambda ms: {"p50_ms": ms, "p90_ms": ms, "p99_ms": ms, "images_per_s": 64 / (ms / 1e3)}  # noqa: E731
    res = {
        "latency": {"torch_fp32": {"b64": row(12.0)}, "ort_int8": {"b64": row(4.0)}},
        "env": {
            "cpu": "x",
            "threads": 2,
            "providers": {"ort_int8": "CPUExecutionProvider"},
            "versions": {},
            "warmup": 1,
            "runs": 3,
        },
    }
    text = markdown_table(res)
    # 12 ms / 4 ms = 3.00x; 64 / 0.004 s = 16000/s
    assert "| ORT INT8 | 64 | 4.00 | 4.00 | 4.00 | 16000 | 3.00x |" in text
