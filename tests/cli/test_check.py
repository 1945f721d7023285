"""``sandstorm --check``: the report, and a non-zero exit on a broken install."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from desktop.cli import check
from desktop.engine import paths


def _fake_sd1_checkpoint(path: Path) -> None:
    """A header-only SD1 .safetensors: discovery classifies it without reading tensors."""
    header = {
        "model.diffusion_model.input_blocks.0.0.weight": {
            "dtype": "F16",
            "shape": [320, 4, 3, 3],
            "data_offsets": [0, 0],
        },
        "cond_stage_model.transformer.text_model.embeddings.position_ids": {
            "dtype": "I64",
            "shape": [1, 77],
            "data_offsets": [0, 0],
        },
    }
    blob = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


@pytest.fixture
def no_bundled_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide the repository's models/ (the built-in model may or may not be there)."""
    bundled = tmp_path / "bundled-models"
    bundled.mkdir()
    monkeypatch.setattr(paths, "BUNDLED_MODELS", bundled)
    monkeypatch.setattr(paths, "BUILTIN_MODEL", bundled / "builtin")
    return bundled


@pytest.fixture
def fast_qt_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Qt probe starts a child process; one test runs it for real, the rest skip it."""
    monkeypatch.setattr(check, "_qt_offscreen", lambda: (True, "ok (probe skipped in tests)"))


def test_healthy_install_reports_everything_and_exits_zero(
    capsys, no_bundled_models: Path, sandstorm_home: Path
):
    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    (paths.user_models_dir() / "checkpoints" / "notes.ckpt").write_bytes(b"")
    (paths.user_models_dir() / "checkpoints" / "weird.bin").write_bytes(b"")

    assert check.run_check() == 0
    out = capsys.readouterr().out
    import importlib.metadata
    import sys

    import torch

    assert "Sandstorm:    0." in out
    # The distribution's version (PyPI's CUDA wheel says 2.14.1 where torch.__version__ says
    # 2.14.1+cu130) and the build it is, read here from torch itself.
    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    elif sys.platform == "darwin":
        build = "default (Metal/MPS)"
    else:
        build = "CPU"
    assert f"torch:        {importlib.metadata.version('torch')} ({build} build)\n" in out
    assert "Device:       cpu" in out or "Device:       cuda" in out or "Device:       mps" in out
    for package in ("diffusers:", "transformers:", "PySide6:", "pyyaml:"):
        assert package in out
    assert "Qt:           ok (offscreen QGuiApplication" in out
    assert f"Data:         {sandstorm_home / 'data'}" in out
    assert f"Models in:    {no_bundled_models}" in out
    assert "Built-in:     missing" in out
    assert "dreamy  [SD1.5]  usable" in out
    assert "weird  [Unknown]  not usable: '.bin' files are not supported" in out
    assert "Sandstorm is ready." in out


def test_no_usable_model_is_a_broken_install(capsys, no_bundled_models, fast_qt_probe):
    assert check.run_check() == 1
    out = capsys.readouterr().out
    assert "Models found: 0" in out
    assert "problem: no usable model" in out
    assert "found 1 problem(s)" in out


def test_missing_package_is_reported(capsys, monkeypatch, no_bundled_models, fast_qt_probe):
    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    monkeypatch.setattr(
        check,
        "REQUIRED_PACKAGES",
        (*check.REQUIRED_PACKAGES, ("sandstorm_no_such_module", "no-such-package")),
    )
    assert check.run_check() == 1
    out = capsys.readouterr().out
    assert "problem: the package no-such-package does not import (ModuleNotFoundError" in out


def test_missing_model_configs_is_reported(
    capsys, monkeypatch, tmp_path: Path, no_bundled_models, fast_qt_probe
):
    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    monkeypatch.setattr(paths, "MODEL_CONFIGS", tmp_path / "gone")
    assert check.run_check() == 1
    assert "the model configs folder" in capsys.readouterr().out


def test_extra_model_folders_from_settings_are_scanned(
    capsys, tmp_path: Path, no_bundled_models, fast_qt_probe
):
    from desktop.engine.settings import Settings, save_settings

    webui = tmp_path / "stable-diffusion-webui"
    _fake_sd1_checkpoint(webui / "models" / "Stable-diffusion" / "from-webui.safetensors")
    save_settings(Settings(extra_model_folders=[str(webui)]))
    assert check.run_check() == 0
    out = capsys.readouterr().out
    assert f"Models in:    {webui / 'models' / 'Stable-diffusion'}" in out
    assert "from-webui  [SD1.5]  usable" in out


def test_unavailable_device_setting_falls_back_and_says_why(
    capsys, no_bundled_models, fast_qt_probe
):
    import torch

    from desktop.engine.settings import Settings, save_settings

    if torch.backends.mps.is_available():
        pytest.skip("this machine has the device the test pretends is missing")
    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    save_settings(Settings(device="mps"))
    assert check.run_check() == 0
    assert "(the setting 'mps' cannot be used:" in capsys.readouterr().out


def test_misspelt_device_setting_is_reported_with_the_accepted_forms(
    capsys, no_bundled_models, fast_qt_probe
):
    from desktop.engine.devices import DEVICE_CHOICES_HELP
    from desktop.engine.settings import Settings, save_settings

    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    save_settings(Settings(device="gpu0"))
    assert check.run_check() == 0
    out = capsys.readouterr().out
    assert "(the setting 'gpu0' cannot be used: Unknown device" in out
    assert DEVICE_CHOICES_HELP in out


def test_own_checkpoint_folders_and_source_vae_folders_are_listed(
    capsys, tmp_path: Path, no_bundled_models, fast_qt_probe
):
    from desktop.engine.settings import Settings, save_settings

    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "vae").mkdir(parents=True)
    _fake_sd1_checkpoint(comfy / "models" / "checkpoints" / "from-comfy.safetensors")
    save_settings(Settings(extra_model_folders=[str(comfy)]))
    assert check.run_check() == 0
    out = capsys.readouterr().out
    own = paths.user_models_dir() / "checkpoints"
    assert f"Models in:    {no_bundled_models / 'checkpoints'}  (does not exist yet)" in out
    assert f"Models in:    {own}" in out
    assert f"Models in:    {comfy / 'models' / 'checkpoints'}" in out
    assert f"VAEs in:      {comfy / 'models' / 'vae'}" in out
    assert "from-comfy  [SD1.5]  usable" in out


def test_compute_plan_follows_the_performance_settings(capsys, no_bundled_models, fast_qt_probe):
    from desktop.engine.settings import Settings, save_settings

    _fake_sd1_checkpoint(paths.user_models_dir() / "checkpoints" / "dreamy.safetensors")
    save_settings(Settings(device="cpu", precision="fp32", torch_compile=True))
    assert check.run_check() == 0
    out = capsys.readouterr().out
    assert "Compute:      UNet and text encoder in fp32; VAE in fp32" in out
    assert "Compute:      torch.compile on" in out
    assert "Compute:      because fp32 was asked for in the settings" in out
