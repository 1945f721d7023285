"""bench/peak_bench.py and bench/sdxl_memory.py on small inputs (the full-size runs are by
hand: ``python -m bench.peak_bench``, ``python -m bench.sdxl_memory``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import peak_bench, sdxl_memory


def test_matmul_peak_is_measured_in_gflops():
    assert peak_bench.matmul_gflops("fp32", n=128, repeats=2) > 0


def test_unet_flops_are_counted_from_shapes_and_grow_with_the_picture():
    small = peak_bench.unet_step_flops(256)
    large = peak_bench.unet_step_flops(512)
    # Convolutions grow with the pixel count (4x), attention faster than that.
    assert 300e9 < small < 400e9
    assert large > 4 * small


def test_sdxl_child_reports_memory_and_the_plan(tiny_sdxl: Path):
    result = sdxl_memory._child(tiny_sdxl, size=64, steps=2, precision="fp32")
    assert result["sdxl_dtype"] == "fp32" and result["sdxl_vae_dtype"] == "fp32"
    assert result["sdxl_peak_rss_mb"] > 0
    assert result["sdxl_seconds_per_step"] > 0
    assert result["sdxl_end_to_end_s"] >= result["sdxl_load_s"] > 0


def test_sdxl_folder_is_built_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    folder = tmp_path / "sdxl"
    folder.mkdir()
    (folder / ".complete").write_text("{}")
    import bench.ldm_checkpoint

    def never(**_kwargs):
        raise AssertionError("a complete folder must not be rebuilt")

    monkeypatch.setattr(bench.ldm_checkpoint, "build_sdxl_pipeline", never)
    assert sdxl_memory.build_sdxl_folder(folder) == folder
