"""The window's plain logic: job queue bookkeeping and request building."""

from __future__ import annotations

import pytest

from desktop.engine.errors import RequestError
from desktop.engine.request import GenerationRequest
from desktop.engine.settings import Settings
from desktop.ui.form import build_request, remember_values, restored_values, size_presets
from desktop.ui.jobs import JobQueue


def _request(prompt: str = "p"):
    return GenerationRequest(prompt=prompt, model="m", width=64, height=64)


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


def test_build_request_from_panel_values_and_refuses_bad_values():
    values = {"prompt": "a cat", "model": "m", "sampler": "Euler a", "width": 64, "height": 96}
    values["seed"] = 7
    request = build_request(values)
    assert (request.width, request.height, request.seed, request.sampler) == (64, 96, 7, "Euler a")
    assert not request.is_img2img
    with pytest.raises(RequestError, match="does not support"):
        build_request({**values, "schedule": "Karras"})  # Euler a supports Automatic only
    with pytest.raises(RequestError, match="multiple of 8"):
        build_request({**values, "width": 65})
    assert build_request({**values, "init_image": "/tmp/x.png", "strength": 0.3}).strength == 0.3
    # Strength does not matter without an init image: the request keeps the default.
    assert build_request({**values, "strength": 0.3}) == build_request(values)
    assert build_request({**values, "not a setting": 1}) == build_request(values)


def test_remembered_values_round_trip_and_bad_ones_are_dropped():
    settings = Settings()
    values = {"prompt": "hi", "model": "/m", "steps": 9, "cfg_scale": 3.5, "width": 128}
    remember_values({**values, "height": 64, "seed": 5, "init_image": "/i.png"}, settings)
    # Seed and init image are not remembered (declared remember=False).
    assert "seed" not in settings.last_request and "init_image" not in settings.last_request
    back = restored_values(settings)
    assert {k: back[k] for k in values} == values and back["height"] == 64
    settings.last_request.update(width=65, sampler="Gone", steps="many", seed=3)
    back = restored_values(settings)
    assert "width" not in back and "sampler" not in back and "steps" not in back
    assert "seed" not in back and back["prompt"] == "hi"
    assert restored_values(Settings()) == {}


def test_size_presets_per_family():
    assert size_presets("sd1")[0] == (512, 512)
    assert size_presets("sd2")[0] == (768, 768)
    assert size_presets("sdxl")[0] == (1024, 1024)
    assert size_presets("builtin", 64)[0] == (64, 64)
    assert all(
        w % 8 == 0 and h % 8 == 0 for f in ("sd1", "sd2", "sdxl") for w, h in size_presets(f)
    )
