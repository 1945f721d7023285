"""The sampler table and ``make_scheduler``: names users know mapped to diffusers schedulers.

The end-to-end runs of every sampler live in test_generate.py; these check the table and the
scheduler each row builds, without any model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import diffusers
import pytest

from desktop.engine import paths, samplers
from desktop.engine.errors import RequestError
from desktop.engine.samplers import SAMPLERS, SCHEDULES, make_scheduler

SD15_SCHEDULER = json.loads(
    (paths.MODEL_CONFIGS / "sd15" / "scheduler" / "scheduler_config.json").read_text()
)


def test_table_rows_name_real_schedulers_and_valid_schedules():
    assert len(SAMPLERS) == len(samplers._TABLE), "two rows share a name"
    for name, spec in SAMPLERS.items():
        assert spec.name == name
        assert hasattr(diffusers, spec.scheduler), spec.scheduler
        assert spec.schedules and set(spec.schedules) <= set(SCHEDULES)
        assert "Automatic" in spec.schedules
        assert spec.default_steps > 0


def test_the_names_users_know_are_there():
    for name in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "UniPC", "LCM"):
        assert name in SAMPLERS


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_builds_its_scheduler_from_a_model_config(name: str):
    if not samplers.is_available(name):
        pytest.skip(f"{name} needs {SAMPLERS[name].requires}")
    spec = SAMPLERS[name]
    scheduler = make_scheduler(name, "Automatic", SD15_SCHEDULER)
    assert type(scheduler).__name__ == spec.scheduler
    # The model's training schedule is carried over ...
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == pytest.approx(0.00085)
    assert scheduler.config.prediction_type == "epsilon"
    # ... and the row's own options win.
    for key, value in spec.options.items():
        assert scheduler.config[key] == value


def test_dpm_solver_variants_differ_only_in_algorithm():
    plain = make_scheduler("DPM++ 2M", "Automatic", SD15_SCHEDULER)
    sde = make_scheduler("DPM++ 2M SDE", "Automatic", SD15_SCHEDULER)
    assert type(plain) is type(sde)
    assert plain.config.algorithm_type == "dpmsolver++"
    assert sde.config.algorithm_type == "sde-dpmsolver++"
    # Without a zero final sigma the last step leaves visible noise.
    assert plain.config.final_sigmas_type == "zero"


def test_v_prediction_models_keep_their_prediction_type():
    config = dict(SD15_SCHEDULER, prediction_type="v_prediction")
    assert make_scheduler("Euler", "Automatic", config).config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("schedule", "key"),
    [("Karras", "use_karras_sigmas"), ("Exponential", "use_exponential_sigmas")],
)
def test_schedules_switch_the_sigma_spacing(schedule: str, key: str):
    assert make_scheduler("Euler", schedule, SD15_SCHEDULER).config[key] is True
    assert not make_scheduler("Euler", "Automatic", SD15_SCHEDULER).config.get(key)


def test_a_models_own_sigma_flags_do_not_leak_into_another_schedule():
    config = dict(SD15_SCHEDULER, use_karras_sigmas=True)
    assert not make_scheduler("Euler", "Automatic", config).config.get("use_karras_sigmas")


def test_unknown_sampler_and_unsupported_schedule_are_request_errors():
    with pytest.raises(RequestError, match="Unknown sampler 'Euler b'"):
        make_scheduler("Euler b", "Automatic", SD15_SCHEDULER)
    with pytest.raises(RequestError, match="does not support the Karras schedule"):
        make_scheduler("DDIM", "Karras", SD15_SCHEDULER)


def test_a_missing_optional_package_hides_the_sampler(monkeypatch: pytest.MonkeyPatch):
    real = samplers.importlib.util.find_spec
    monkeypatch.setattr(
        samplers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchsde" else real(name, *a),
    )
    assert not samplers.is_available("DPM++ SDE")
    assert "DPM++ SDE" not in samplers.available_samplers()
    assert samplers.is_available("Euler")
    with pytest.raises(RequestError, match="needs the 'torchsde' package"):
        make_scheduler("DPM++ SDE", "Automatic", SD15_SCHEDULER)


def test_available_samplers_keep_table_order():
    available = samplers.available_samplers()
    assert available == [name for name in SAMPLERS if name in available]
    assert available[0] == "Euler"


def test_importing_samplers_does_not_import_diffusers():
    code = (
        "import sys, desktop.engine.samplers as s; s.available_samplers(); "
        "print('diffusers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=paths.PROJECT_ROOT,
    ).stdout.split()
    assert out == ["False", "False"]
