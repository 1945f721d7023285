"""bench/full_bench.py: the figures it derives, and a real Sandstorm child on the tiny model
(the full-size run itself is started by hand: ``python -m bench --full``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import full_bench as fb


def test_job_metrics_use_the_gaps_between_steps():
    metrics = fb.job_metrics(10.0, [12.0, 13.0, 14.5, 15.5], 16.0)
    assert metrics["end_to_end_s"] == pytest.approx(6.0)
    assert metrics["first_preview_s"] == pytest.approx(2.0)
    assert metrics["seconds_per_step"] == pytest.approx(1.0)  # median of 1.0, 1.5, 1.0
    assert metrics["steps_seen"] == 4
    single = fb.job_metrics(0.0, [1.0], 2.0)
    assert single["seconds_per_step"] is None and single["first_preview_s"] == 1.0


def test_summary_takes_the_cold_job_for_loading_and_warm_jobs_for_speed():
    system = {
        "jobs": [
            {"end_to_end_s": 30.0, "first_preview_s": 12.0, "seconds_per_step": 2.2},
            {"end_to_end_s": 10.0, "first_preview_s": 2.0, "seconds_per_step": 2.0},
            {"end_to_end_s": 12.0, "first_preview_s": 2.1, "seconds_per_step": 2.4},
        ],
        "peak_rss_mb": 3000.0,
        "import_s": 1.5,
        "dtype": "bf16",
    }
    summary = fb.summarize(system)
    assert summary["seconds_per_step"] == pytest.approx(2.2)
    assert summary["end_to_end_s"] == pytest.approx(11.0)
    assert summary["cold_end_to_end_s"] == 30.0
    assert summary["load_to_first_preview_s"] == 12.0
    assert (summary["peak_rss_mb"], summary["import_s"], summary["dtype"]) == (3000.0, 1.5, "bf16")


def test_ratios_say_how_many_times_faster_the_first_system_is():
    summary = {
        "sandstorm": {"seconds_per_step": 1.0, "end_to_end_s": 25.0, "peak_rss_mb": 2000.0},
        "diffusers_fp32": {"seconds_per_step": 2.5, "end_to_end_s": 50.0, "peak_rss_mb": 4000.0},
        "sandstorm_fp32": {"seconds_per_step": 2.4, "end_to_end_s": 49.0, "peak_rss_mb": None},
    }
    out = fb.ratios(summary)
    assert out["sandstorm_vs_diffusers_fp32_seconds_per_step"] == pytest.approx(2.5)
    assert out["sandstorm_vs_diffusers_fp32_end_to_end_s"] == pytest.approx(2.0)
    assert out["sandstorm_vs_diffusers_fp32_peak_rss_mb"] == pytest.approx(2.0)
    assert out["sandstorm_fp32_vs_diffusers_fp32_seconds_per_step"] == pytest.approx(2.5 / 2.4)
    assert "sandstorm_fp32_vs_diffusers_fp32_peak_rss_mb" not in out  # a missing figure
    assert not any("comfyui" in key for key in out)  # ComfyUI was not run


def test_sandstorm_child_times_every_step_of_cold_and_warm_jobs(tiny_sd: Path):
    result = fb._sandstorm_child(tiny_sd, size=64, steps=3, jobs=2, dtype="fp32")
    assert result["dtype"] == "fp32" and result["peak_rss_mb"] > 0
    cold, warm = result["jobs"]
    for job in (cold, warm):
        assert job["steps_seen"] == 3
        assert 0 < job["first_preview_s"] < job["end_to_end_s"]
        assert job["seconds_per_step"] > 0 and job["overhead_ratio"] >= 1.0
    assert cold["load_s"] > 0 and warm["load_s"] == 0  # the second job reuses the model


def test_run_reports_each_system_and_a_failing_one_as_an_error(monkeypatch, tmp_path):
    import bench.ldm_checkpoint

    monkeypatch.setattr(bench.ldm_checkpoint, "build_sd15_checkpoint", lambda: tmp_path / "x")
    jobs = [{"end_to_end_s": 8.0, "first_preview_s": 3.0, "seconds_per_step": 1.0}] * 2

    def child(system: str, checkpoint: Path, size: int, steps: int, count: int) -> dict:
        assert (checkpoint, size, steps, count) == (tmp_path / "x", 256, 4, 2)
        if system == "diffusers_fp32":
            raise RuntimeError("diffusers_fp32 failed (exit 1)")
        return {"jobs": jobs, "peak_rss_mb": 100.0, "dtype": "bf16"}

    monkeypatch.setattr(fb, "run_child", child)
    out = fb.run(quick=True, log=lambda _text: None)
    assert (out["full_size"], out["full_steps"]) == fb.QUICK
    assert out["full_sandstorm_seconds_per_step"] == 1.0
    assert out["full_sandstorm_vs_sandstorm_fp32_seconds_per_step"] == pytest.approx(1.0)
    assert out["full_diffusers_fp32_error"].startswith("RuntimeError: diffusers_fp32 failed")
    assert set(out["full_raw"]) == {"sandstorm", "sandstorm_fp32"}
