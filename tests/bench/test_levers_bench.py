"""Pure helpers of bench/levers_bench.py (no model is built; the bench itself is run by hand)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bench import levers_bench as lb


def test_verdict_keeps_only_a_clear_win():
    assert lb.verdict(1.2) == "kept"
    assert lb.verdict(lb.KEEP_RATIO) == "kept"
    assert lb.verdict(1.0) == "not kept"
    assert lb.verdict(0.5) == "not kept"


def test_paired_alternates_and_warms_up_each_side():
    calls: list[str] = []
    state = {"inside": False}

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    def step() -> None:
        calls.append("B" if state["inside"] else "A")

    base, var = lb.paired(step, variant, repeats=2, settle=False)
    assert calls == ["A", "B", "A", "B", "B", "A"]
    assert base >= 0 and var >= 0


def test_paired_settles_after_every_switch():
    calls: list[str] = []
    state = {"inside": False}

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    lb.paired(lambda: calls.append("B" if state["inside"] else "A"), variant, repeats=2)
    # warm-ups, then (settle + timed) per switch: A A, B B | B, A A
    assert calls == ["A", "B", "A", "A", "B", "B", "B", "A", "A"]


def test_compile_caches_for_a_child_fill_only_its_environ(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    env: dict[str, str] = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}
    previous = lb.point_compile_caches_at(tmp_path, env)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
    assert env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    assert env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    assert previous["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "0"
    assert previous["TORCHINDUCTOR_CACHE_DIR"] is None
    import os

    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_peak_rss_is_at_least_the_current_rss():
    lb._reset_peak_rss()
    assert lb._peak_rss_bytes() >= lb._rss_bytes() * 0.9


def _metrics() -> dict:
    return {
        "lever_threads_default_n": 2,
        "lever_threads_physical_n": 2,
        "lever_threads_logical_n": 2,
        "lever_bf16_native": 0,
        "lever_channels_last_ratio": 1.3,
        "lever_channels_last_seconds": 1.0,
        "lever_classic_attention_ratio": 0.8,
        "lever_threads_1_ratio": 0.6,
        "lever_threads_physical_ratio": 1.0,
        "lever_threads_logical_ratio": 1.0,
        "lever_compile_error": "RuntimeError: no gcc",
        "lever_vae_size": 1024,
        "lever_vae_tile_px": 512,
        "lever_vae_decode_delta_mb": 3000.0,
        "lever_vae_tiled_decode_delta_mb": 600.0,
        "lever_vae_tiled_decode_memory_ratio": 5.0,
        "lever_vae_tiled_decode_ratio": 0.9,
        "lever_vae_tiled_decode_max_abs_diff": 0.01,
        "lever_vae_decode_output_abs_max": 1.0,
    }


def test_summary_says_which_levers_win():
    lines = lb.summary(_metrics(), {"capability": "AVX2", "attention": "AttnProcessor2_0"})
    text = "\n".join(lines)
    assert "channels_last: kept (1.30x" in text
    assert "classic AttnProcessor: not kept (0.80x vs AttnProcessor2_0" in text
    assert "threads: not kept: n=2 best" in text
    assert "physical cores = logical CPUs = 2" in text
    assert "bf16: skipped (no native bf16: AVX2)" in text
    assert "torch.compile: error (RuntimeError: no gcc)" in text
    assert "VAE tiling (decode 1024px): kept for memory" in text


def test_table_lists_numbers_summary_and_errors():
    metrics = _metrics()
    metrics["levers_summary"] = ["channels_last: kept (1.30x vs fp32 contiguous)"]
    text = lb.table(metrics)
    assert "| lever_channels_last_ratio | 1.3 |" in text
    assert "- channels_last: kept" in text
    assert "- lever_compile_error: RuntimeError: no gcc" in text
