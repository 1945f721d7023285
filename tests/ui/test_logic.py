"""The window's plain logic: job queue bookkeeping and request building."""

from __future__ import annotations

import pytest

from desktop.engine.errors import RequestError
from desktop.engine.settings import Settings
from desktop.ui.form import FormState, size_presets
from desktop.ui.jobs import JobQueue


def _request(prompt: str = "p"):
    return FormState(prompt=prompt, model="m", width=64, height=64).to_request()


def test_job_queue_order_remove_and_cancel():
    jobs = JobQueue()
    a, b, c = (jobs.add(_request(x)) for x in "abc")
    assert [j.job_id for j in jobs.pending] == [a.job_id, b.job_id, c.job_id]
    assert len({a.job_id, b.job_id, c.job_id}) == 3
    assert jobs.mark_started(a.job_id) is a
    assert jobs.running is a and jobs.is_current(a.job_id)
    assert jobs.remove(b.job_id) is b and b.cancelled
    assert jobs.remove(a.job_id) is None  # the running job is cancelled, not removed
    assert jobs.cancel_current() is a and a.cancelled and not jobs.is_current(a.job_id)
    assert jobs.mark_done(a.job_id) is a and jobs.running is None
    assert jobs.mark_started(b.job_id) is None  # removed jobs never start
    assert jobs.cancel_all() == [c] and c.cancelled and len(jobs) == 0


def test_form_state_builds_a_request_and_refuses_bad_values():
    state = FormState(prompt="a cat", model="m", sampler="Euler a", width=64, height=96, seed=7)
    request = state.to_request()
    assert (request.width, request.height, request.seed, request.sampler) == (64, 96, 7, "Euler a")
    assert not request.is_img2img
    state.schedule = "Karras"  # Euler a supports Automatic only
    with pytest.raises(RequestError, match="does not support"):
        state.to_request()
    state.schedule, state.width = "Automatic", 65
    with pytest.raises(RequestError, match="multiple of 8"):
        state.to_request()
    state.width, state.init_image, state.strength = 64, "/tmp/x.png", 0.3
    assert state.to_request().strength == 0.3


def test_form_state_settings_round_trip():
    settings = Settings()
    FormState(prompt="hi", model="/m", steps=9, cfg_scale=3.5, width=128, height=64).store(settings)
    back = FormState.from_settings(settings)
    assert (back.prompt, back.model, back.steps, back.cfg_scale) == ("hi", "/m", 9, 3.5)
    assert (back.width, back.height) == (128, 64)
    # Empty settings keep the defaults instead of zeros.
    assert FormState.from_settings(Settings()).steps == FormState().steps


def test_size_presets_per_family():
    assert size_presets("sd1")[0] == (512, 512)
    assert size_presets("sd2")[0] == (768, 768)
    assert size_presets("sdxl")[0] == (1024, 1024)
    assert size_presets("builtin", 64)[0] == (64, 64)
    assert all(
        w % 8 == 0 and h % 8 == 0 for f in ("sd1", "sd2", "sdxl") for w, h in size_presets(f)
    )
