import pytest

from desktop.engine.errors import RequestError
from desktop.engine.request import SEED_MAX, GenerationRequest, snap_size


def test_defaults_are_valid_and_frozen():
    request = GenerationRequest(prompt="a cat")
    with pytest.raises(AttributeError):
        request.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"width": 500}, "multiple of 8"),
        ({"height": 16}, "between"),
        ({"steps": 0}, "Steps must be between 1"),
        ({"cfg_scale": -1}, "CFG scale"),
        ({"seed": SEED_MAX + 1}, "Seed must be"),
        ({"seed": -2}, "Seed must be"),
        ({"batch_size": 0}, "Batch size"),
        ({"sampler": "Nope"}, "Unknown sampler"),
        ({"schedule": "Karras", "sampler": "DDIM"}, "does not support"),
        ({"init_image": "x.png", "strength": 0.0}, "would not change"),
        ({"init_image": "x.png", "strength": 0.04, "steps": 20}, "would run no step"),
        ({"steps": 2.5}, "whole number"),
        ({"prompt": None}, "text"),
    ],
)
def test_invalid_values_give_clear_errors(changes, fragment):
    with pytest.raises(RequestError, match=fragment):
        GenerationRequest(**{"prompt": "x", **changes})


def test_cfg_zero_is_allowed_and_seed_resolution_is_recorded():
    request = GenerationRequest(prompt="x", cfg_scale=0)
    resolved = request.resolved()
    assert 0 <= resolved.seed <= SEED_MAX
    assert resolved.resolved() is resolved
    assert resolved.replace(batch_size=3).for_image(2).seed == resolved.seed + 2


def test_json_round_trip_and_version_guard():
    request = GenerationRequest(
        prompt="a, b: c\nd", seed=5, init_image="/tmp/i.png", strength=0.5, sampler="DPM++ 2M"
    )
    assert GenerationRequest.from_json(request.to_json()) == request
    data = request.to_dict() | {"version": 99}
    with pytest.raises(RequestError, match="newer"):
        GenerationRequest.from_dict(data)
    with pytest.raises(RequestError, match="JSON"):
        GenerationRequest.from_json("{nope")


def test_snap_size():
    assert snap_size(500) == 496
    assert snap_size(1) == 32
    assert snap_size(10_000) == 4096


def test_img2img_steps_follow_diffusers_strength():
    request = GenerationRequest(prompt="x", steps=20, init_image="a.png", strength=0.5)
    assert request.img2img_steps == 10
