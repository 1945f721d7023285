"""The engine end to end on tiny models: samplers, previews, seeds, img2img, cancel, cache."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from desktop.engine.devices import torch_dtype
from desktop.engine.errors import Cancelled, GenerationError, ModelError
from desktop.engine.generate import Engine, _X0Recorder
from desktop.engine.progress import RecordingProgress
from desktop.engine.request import GenerationRequest
from desktop.engine.samplers import SAMPLERS, SCHEDULES, available_samplers, make_scheduler


@pytest.fixture(scope="module")
def engine():
    return Engine(device="cpu")


def _request(model, **changes) -> GenerationRequest:
    values = dict(prompt="a red circle", model=str(model), steps=3, width=64, height=64, seed=7)
    values.update(changes)
    return GenerationRequest(**values)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_with_a_preview_per_step(engine, tiny_sd, sampler):
    if sampler not in available_samplers():
        pytest.skip(f"{sampler} needs {SAMPLERS[sampler].requires}")
    progress = RecordingProgress(job_id="job-1")
    result = engine.generate(_request(tiny_sd, sampler=sampler), progress)
    assert result.images[0].image.size == (64, 64)
    updates = progress.updates
    total = updates[0].total
    assert total >= 3  # second-order samplers take two model calls per step
    assert [u.step for u in updates] == list(range(1, total + 1))
    assert all(u.job_id == "job-1" and u.total == total for u in updates)
    assert all(u.preview is not None and u.preview.size == (8, 8) for u in updates)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_run(engine, tiny_sd, schedule):
    result = engine.generate(_request(tiny_sd, sampler="DPM++ 2M", schedule=schedule))
    assert len(result.images) == 1


def test_same_seed_gives_identical_pixels(engine, tiny_sd):
    for sampler in ("Euler a", "DPM++ 2M SDE"):
        first = engine.generate(_request(tiny_sd, sampler=sampler, seed=1234))
        second = engine.generate(_request(tiny_sd, sampler=sampler, seed=1234))
        assert np.array_equal(_pixels(first), _pixels(second))
    other = engine.generate(_request(tiny_sd, seed=1235))
    assert not np.array_equal(_pixels(first), _pixels(other))


def test_batch_uses_consecutive_seeds(engine, tiny_sd):
    batch = engine.generate(_request(tiny_sd, seed=50, batch_size=2))
    assert [g.request.seed for g in batch.images] == [50, 51]
    assert all(g.request.batch_size == 1 for g in batch.images)
    single = engine.generate(_request(tiny_sd, seed=51))
    diff = np.abs(np.asarray(batch.images[1].image, int) - _pixels(single).astype(int))
    assert diff.max() <= 2


def test_random_seed_is_resolved_and_recorded(engine, tiny_sd):
    result = engine.generate(_request(tiny_sd, seed=-1))
    assert result.request.seed >= 0
    assert result.images[0].request.seed == result.request.seed


def test_img2img_runs_strength_share_of_steps(engine, tiny_sd, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (80, 48), (200, 30, 30)).save(init)
    progress = RecordingProgress()
    request = _request(tiny_sd, steps=10, init_image=str(init), strength=0.5, sampler="Euler")
    result = engine.generate(request, progress)
    assert len(progress.updates) == 5
    assert result.images[0].image.size == (64, 64)


def test_img2img_shares_components_without_reload(engine, tiny_sd, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (20, 30, 200)).save(init)
    engine.generate(_request(tiny_sd))
    loads = engine.loads
    engine.generate(_request(tiny_sd, init_image=str(init), strength=0.6))
    assert engine.loads == loads
    loaded = engine._loaded
    assert loaded.img2img.unet is loaded.txt2img.unet
    assert loaded.img2img.unet.dtype == loaded.txt2img.unet.dtype == engine.dtype


def test_cancel_stops_within_one_step_and_engine_stays_usable(engine, tiny_sd):
    class CancelAtTwo(RecordingProgress):
        def set_progress(self, update):
            super().set_progress(update)
            if update.step == 2:
                self.cancel()

    progress = CancelAtTwo()
    decoded = []
    vae = engine.load(engine.resolve_model(str(tiny_sd))).txt2img.vae
    hook = vae.decoder.register_forward_hook(lambda *a: decoded.append(1))
    try:
        with pytest.raises(Cancelled):
            engine.generate(_request(tiny_sd, steps=20), progress)
    finally:
        hook.remove()
    assert len(progress.updates) == 2
    assert decoded == []  # the VAE decode was skipped
    assert engine.generate(_request(tiny_sd)).images


def test_cancel_before_start(engine, tiny_sd):
    progress = RecordingProgress()
    progress.cancel()
    with pytest.raises(Cancelled):
        engine.generate(_request(tiny_sd), progress)


def test_model_cache_and_release(tiny_sd, tiny_sdxl):
    engine = Engine(device="cpu")
    engine.generate(_request(tiny_sd))
    engine.generate(_request(tiny_sd, prompt="another prompt"))
    assert engine.loads == 1
    old = weakref.ref(engine._loaded.txt2img.unet)
    result = engine.generate(_request(tiny_sdxl))
    assert engine.loads == 2 and result.model.family == "sdxl"
    gc.collect()
    assert old() is None, "switching models must release the old one"


def test_sdxl_previews_and_size(tiny_sdxl):
    progress = RecordingProgress()
    result = Engine(device="cpu").generate(_request(tiny_sdxl, width=64, height=96), progress)
    assert result.images[0].image.size == (64, 96)
    assert progress.updates[-1].preview.size == (8, 12)


def test_out_of_memory_gives_clear_message_and_recovers(engine, tiny_sd):
    class Oom(RecordingProgress):
        def set_progress(self, update):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    with pytest.raises(GenerationError, match="smaller size"):
        engine.generate(_request(tiny_sd), Oom())
    assert engine.generate(_request(tiny_sd)).images


def test_nan_output_is_refused(engine, tiny_sd, monkeypatch):
    loaded = engine.load(engine.resolve_model(str(tiny_sd)))
    unet = loaded.txt2img.unet
    hook = unet.register_forward_hook(lambda m, a, out: (out[0] * float("nan"),))
    try:
        with pytest.raises(GenerationError, match="NaN"):
            engine.generate(_request(tiny_sd))
    finally:
        hook.remove()
    assert engine.generate(_request(tiny_sd)).images


def test_long_prompt_is_encoded_whole_without_a_warning(engine, tiny_sd):
    progress = RecordingProgress()
    result = engine.generate(_request(tiny_sd, prompt="red circle, " * 60), progress)
    assert result.warnings == [] and progress.warnings == []
    assert result.images[0].request.prompt == "red circle, " * 60


def test_unusable_and_missing_models_fail_clearly(engine, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ModelError, match="cannot be used"):
        engine.generate(_request(bad))
    with pytest.raises(ModelError, match="No model named"):
        engine.generate(_request("does-not-exist"))


def test_x0_recorder_keeps_pred_original_sample():
    scheduler = make_scheduler("Euler", "Automatic", {})
    recorder = _X0Recorder(scheduler, from_model_outputs=False)
    scheduler.set_timesteps(4)
    sample = torch.randn(1, 4, 8, 8)
    out = scheduler.step(
        torch.zeros_like(sample), scheduler.timesteps[0], sample, return_dict=False
    )
    assert isinstance(out, tuple)
    assert recorder.latest() is not None and recorder.latest().shape == sample.shape
    # x0 with a zero noise prediction is the (unscaled) sample itself
    assert torch.allclose(recorder.latest(), sample, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_identical_pixels_within_one_precision(tiny_sd, precision):
    from desktop.engine.devices import ComputeOptions

    engine = Engine(device="cpu", options=ComputeOptions(precision=precision))
    assert engine.plan.dtype == precision
    first = engine.generate(_request(tiny_sd, seed=99))
    again = engine.generate(_request(tiny_sd, seed=99))
    assert np.array_equal(_pixels(first), _pixels(again))
    assert engine._loaded.txt2img.unet.dtype == torch_dtype(precision)
