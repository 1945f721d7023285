"""Hires fix: the second pass's arithmetic, and the engine running it on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from desktop.engine.errors import Cancelled, GenerationError, RequestError
from desktop.engine.generate import Engine
from desktop.engine.hires import hires_size, plan_hires, scheduler_steps
from desktop.engine.metadata import png_info, read_metadata
from desktop.engine.parts import HiresSpec, MaskSpec
from desktop.engine.progress import RecordingProgress
from desktop.engine.request import GenerationRequest


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu")


def _request(model, **changes) -> GenerationRequest:
    values = dict(prompt="a red circle", model=str(model), steps=3, width=64, height=64, seed=7)
    values.update(changes)
    return GenerationRequest(**values)


def _pixels(result, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image).astype(int)


# -- arithmetic ------------------------------------------------------------------------------


def test_hires_size_rounds_each_side_to_a_multiple_of_eight():
    assert hires_size(512, 512, 2.0) == (1024, 1024)
    assert hires_size(512, 768, 1.5) == (768, 1152)
    assert hires_size(512, 512, 1.33) == (680, 680)  # 680.96 → 680


@pytest.mark.parametrize("denoise", [0.05, 0.2, 0.3, 0.33, 0.45, 0.5, 0.7, 0.99, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 13, 20, 30, 150])
def test_scheduler_steps_make_img2img_run_exactly_the_hires_steps(steps, denoise):
    n = scheduler_steps(steps, denoise)
    assert min(int(n * denoise), n) == steps  # what diffusers' img2img runs of n
    assert scheduler_steps(steps, 0.0) == 0


def test_plan_uses_the_base_steps_unless_hires_steps_are_given():
    base = GenerationRequest(prompt="x", steps=20, hires=HiresSpec(scale=1.5, denoise=0.4))
    plan = plan_hires(base)
    assert plan is not None and (plan.width, plan.height, plan.steps) == (768, 768, 20)
    assert plan.scheduler_steps == 50 and plan.latent
    own = GenerationRequest(prompt="x", steps=20, hires=HiresSpec(steps=8, denoise=0.4))
    assert plan_hires(own).steps == 8
    assert plan_hires(GenerationRequest(prompt="x")) is None


def test_plan_refuses_img2img_and_a_size_past_the_limit(tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    with pytest.raises(RequestError, match="text to image"):
        plan_hires(GenerationRequest(prompt="x", init_image=str(init), hires=HiresSpec()))
    with pytest.raises(RequestError, match="text to image"):
        masked = GenerationRequest(
            prompt="x", init_image=str(init), mask=MaskSpec(image=str(init)), hires=HiresSpec()
        )
        plan_hires(masked)
    big = GenerationRequest(prompt="x", width=1536, height=1024, hires=HiresSpec(scale=3.0))
    with pytest.raises(RequestError, match=r"4608×3072.*at most ×2\.67"):
        plan_hires(big)


# -- the engine ------------------------------------------------------------------------------


def test_latent_hires_doubles_the_size_and_previews_both_passes(engine, tiny_sd):
    progress = RecordingProgress(job_id="hires")
    request = _request(tiny_sd, hires=HiresSpec(scale=2.0, steps=2, denoise=0.6))
    result = engine.generate(request, progress)
    assert result.images[0].image.size == (128, 128)
    updates = progress.updates
    # One count for the job: 3 base steps, then the 2 hires steps, every one previewed.
    assert [u.step for u in updates] == [1, 2, 3, 4, 5]
    assert all(u.total == 5 and u.job_id == "hires" for u in updates)
    assert [u.preview.size for u in updates] == [(8, 8)] * 3 + [(16, 16)] * 2
    assert any("Hires fix" in status for status in progress.statuses)
    # The result's request is the one to reuse: base size plus the hires pass.
    assert result.images[0].request.hires == request.hires
    assert (result.images[0].request.width, result.images[0].request.height) == (64, 64)


def test_hires_is_reproducible_and_changes_the_picture(engine, tiny_sd):
    request = _request(tiny_sd, hires=HiresSpec(scale=1.5, steps=2, denoise=0.5))
    first = engine.generate(request)
    second = engine.generate(request)
    assert first.images[0].image.size == (96, 96)
    assert np.array_equal(_pixels(first), _pixels(second))
    base = engine.generate(_request(tiny_sd))
    resized = np.asarray(base.images[0].image.resize((96, 96), Image.Resampling.LANCZOS))
    assert np.abs(_pixels(first) - resized.astype(int)).mean() > 1  # the second pass worked


def test_lanczos_hires_with_no_denoise_is_the_base_image_resized(engine, tiny_sd):
    base = engine.generate(_request(tiny_sd, seed=11))
    progress = RecordingProgress()
    hires = engine.generate(
        _request(tiny_sd, seed=11, hires=HiresSpec(scale=2.0, upscaler="Lanczos", denoise=0.0)),
        progress,
    )
    expected = base.images[0].image.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(_pixels(hires), np.asarray(expected).astype(int))
    assert [u.step for u in progress.updates] == [1, 2, 3]


def test_lanczos_hires_runs_a_second_pass_on_a_batch(engine, tiny_sd):
    request = _request(
        tiny_sd, seed=40, batch_size=2, hires=HiresSpec(upscaler="Lanczos", steps=2, denoise=0.5)
    )
    batch = engine.generate(request)
    assert [g.image.size for g in batch.images] == [(128, 128)] * 2
    assert [g.request.seed for g in batch.images] == [40, 41]
    single = engine.generate(batch.images[1].request)
    assert np.abs(_pixels(batch, 1) - _pixels(single)).max() <= 3


def test_hires_on_sdxl(tiny_sdxl):
    progress = RecordingProgress()
    request = _request(tiny_sdxl, width=64, height=96, hires=HiresSpec(scale=1.5, steps=1))
    result = Engine(device="cpu").generate(request, progress)
    assert result.images[0].image.size == (96, 144)
    assert progress.updates[-1].preview.size == (12, 18)


def test_cancel_in_the_second_pass_stops_before_the_decode(engine, tiny_sd):
    class CancelInHires(RecordingProgress):
        def set_progress(self, update):
            super().set_progress(update)
            if update.step == 4:
                self.cancel()

    progress = CancelInHires()
    with pytest.raises(Cancelled):
        engine.generate(_request(tiny_sd, hires=HiresSpec(steps=5)), progress)
    assert [u.step for u in progress.updates] == [1, 2, 3, 4]
    assert engine.generate(_request(tiny_sd)).images  # still usable


def test_an_upscaler_that_is_not_installed_fails_clearly(engine, tiny_sd, sandstorm_home):
    request = _request(tiny_sd, hires=HiresSpec(upscaler="4x-NotThere"))
    with pytest.raises(Exception, match="4x-NotThere") as caught:
        engine.generate(request)
    assert "upscale_models" in str(caught.value)
    assert engine.generate(_request(tiny_sd)).images


def test_the_saved_image_reads_back_with_its_hires_pass(engine, tiny_sd, tmp_path):
    request = _request(tiny_sd, hires=HiresSpec(scale=1.5, upscaler="Lanczos", steps=1))
    result = engine.generate(request)
    path = tmp_path / "out.png"
    made = result.images[0]
    made.image.save(path, pnginfo=png_info(made.request, "tiny"))
    params = Image.open(path).text["parameters"]
    assert "Hires upscale: 1.5, Hires steps: 1, Hires upscaler: Lanczos" in params
    assert "Denoising strength: 0.5" in params
    read = read_metadata(path).request
    assert read is not None and read.hires == request.hires


# -- memory ----------------------------------------------------------------------------------


def test_the_memory_estimate_follows_the_measured_figures():
    from desktop.engine import memory

    # bench.memory_bench: a UNet step ~640 B/px in bf16 (batch 2 for guidance); the VAE
    # 3,840 B/px untiled in fp32 and ~1 GiB tiled whatever the size.
    one = memory.estimate(512, 512)
    assert 600 <= one.unet / (512 * 512) <= 700
    assert memory.estimate(2048, 2048).vae == 2048 * 2048 * 3840
    tiled = memory.estimate(2048, 2048, tiled_vae=True)
    assert tiled.vae == memory.estimate(4096, 4096, tiled_vae=True).vae < 1.1 * memory.GIB
    assert memory.estimate(512, 512, batch=4).unet == 4 * one.unet
    assert memory.estimate(1024, 1024, family="sdxl").unet > memory.estimate(1024, 1024).unet
    assert memory.system_available() is not None


def test_a_hires_scale_that_cannot_fit_is_refused_with_what_fits(engine, tiny_sd, monkeypatch):
    from desktop.engine import memory

    loaded = engine.load(engine.resolve_model(str(tiny_sd)))
    fits = memory.FitsAt(
        1,
        loaded.info.family,
        loaded.dtype.itemsize,
        loaded.vae_dtype.itemsize,
        engine.plan.tiled_vae_pixels,
    )
    free = int(fits(96, 96) / memory.USABLE_SHARE) + 64  # up to 96² (×1.55 rounds to it)
    monkeypatch.setattr(memory, "available", lambda device: free)
    request = _request(tiny_sd, hires=HiresSpec(scale=4.0, steps=1))
    with pytest.raises(
        GenerationError, match=r"Hires fix ×4 makes 256×256.*a hires upscale of ×1\.55 fits"
    ):
        engine.generate(request)
    monkeypatch.setattr(memory, "available", lambda device: 1000)
    with pytest.raises(GenerationError, match=r"64×64 needs about .* working memory.*smaller size"):
        engine.generate(_request(tiny_sd))
    monkeypatch.undo()
    assert engine.generate(request).images[0].image.size == (256, 256)
