"""User settings: defaults, round trip, damaged files, and the version 1 -> 2 migration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from desktop.engine import paths, settings
from desktop.engine.settings import SETTINGS_VERSION, Settings, load_settings, save_settings


def test_settings_live_in_the_config_folder(sandstorm_home: Path):
    assert settings.settings_file() == sandstorm_home / "config" / "settings.json"
    assert settings.settings_file().parent == paths.config_dir()


def test_missing_file_gives_defaults():
    loaded = load_settings()
    assert loaded == Settings()
    assert loaded.version == SETTINGS_VERSION == 2
    assert loaded.device == "auto" and loaded.queue_on_start == "run"
    assert loaded.output_path == paths.pictures_dir()


def test_round_trip_keeps_every_field(tmp_path: Path):
    original = Settings(
        last_request={"prompt": "a fox", "steps": 12, "cfg_scale": 6.5},
        queue_on_start="paused",
        output_dir=str(tmp_path / "out"),
        extra_model_folders=["/opt/ComfyUI", "~/webui"],
        device="cuda:1",
        precision="bf16",
        vae_precision="fp32",
        memory_mode="offload",
        torch_compile=True,
        window_geometry="AAAA",
        window_state="BBBB",
    )
    save_settings(original)
    assert load_settings() == original
    assert load_settings().output_path == tmp_path / "out"


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    path = tmp_path / "nested" / "settings.json"
    save_settings(Settings(device="cpu"), path)
    save_settings(Settings(device="mps"), path)
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]
    assert json.loads(path.read_text(encoding="utf-8"))["device"] == "mps"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "settings.json"
    save_settings(Settings(device="cpu"), path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_settings(Settings(device="mps"), path)
    monkeypatch.undo()
    assert load_settings(path).device == "cpu"
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


@pytest.mark.parametrize(
    "text",
    ["", "{", "[1, 2]", '"settings"', '{"device": "cpu"}', '{"version": "2"}'],
)
def test_damaged_files_give_defaults(tmp_path: Path, text: str):
    path = tmp_path / "settings.json"
    path.write_text(text, encoding="utf-8")
    assert load_settings(path) == Settings()


def test_values_of_the_wrong_type_and_unknown_keys_are_dropped(tmp_path: Path):
    path = tmp_path / "settings.json"
    data = {
        "version": 2,
        "device": 3,
        "extra_model_folders": "/not/a/list",
        "output_dir": "/pictures",
        "queue_on_start": "explode",
        "from_the_future": True,
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_settings(path)
    assert loaded.device == "auto"
    assert loaded.extra_model_folders == []
    assert loaded.output_dir == "/pictures"
    assert loaded.queue_on_start == "run"
    assert not hasattr(loaded, "from_the_future")


def test_version_1_panel_values_move_into_last_request(tmp_path: Path):
    path = tmp_path / "settings.json"
    version_1 = {
        "version": 1,
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "sampler": "Euler a",
        "schedule": "Karras",
        "steps": 28,
        "cfg_scale": 6.5,
        "width": 768,
        "height": 512,
        "batch_size": 2,
        "strength": 0.6,
        "last_model": "/models/dreamshaper.safetensors",
        "output_dir": "/pictures/sd",
        "extra_model_folders": ["/opt/ComfyUI"],
        "device": "cpu",
    }
    path.write_text(json.dumps(version_1), encoding="utf-8")
    loaded = load_settings(path)
    assert loaded.version == SETTINGS_VERSION
    assert loaded.last_request == {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "sampler": "Euler a",
        "schedule": "Karras",
        "steps": 28,
        "cfg_scale": 6.5,
        "width": 768,
        "height": 512,
        "batch_size": 2,
        "strength": 0.6,
        "model": "/models/dreamshaper.safetensors",
    }
    # The settings that kept their place are read as before.
    assert loaded.output_dir == "/pictures/sd"
    assert loaded.extra_model_folders == ["/opt/ComfyUI"]
    assert loaded.device == "cpu"
    # Saving writes version 2, without the old top-level keys.
    save_settings(loaded, path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["version"] == 2
    assert "prompt" not in saved and "last_model" not in saved
    assert load_settings(path) == loaded


def test_version_1_unset_values_are_not_carried_over(tmp_path: Path):
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"version": 1, "prompt": "", "steps": 0, "cfg_scale": 0.0, "last_model": ""}),
        encoding="utf-8",
    )
    assert load_settings(path).last_request == {}


def test_version_2_last_request_is_not_touched(tmp_path: Path):
    path = tmp_path / "settings.json"
    request = {"prompt": "kept", "steps": 9}
    path.write_text(
        json.dumps({"version": 2, "last_request": request, "prompt": "stray"}), encoding="utf-8"
    )
    assert load_settings(path).last_request == request


def test_performance_settings_become_compute_options(tmp_path: Path):
    from desktop.engine.devices import ComputeOptions

    assert Settings().compute_options() == ComputeOptions()
    chosen = Settings(precision="BF16", memory_mode="tiling", torch_compile=True)
    assert chosen.compute_options() == ComputeOptions(
        precision="bf16", memory_mode="tiling", compile=True
    )
    # A hand-edited value that the engine does not know falls back to auto on load.
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 2, "precision": "fp64", "torch_compile": True}))
    loaded = load_settings(path)
    assert (loaded.precision, loaded.torch_compile) == ("auto", True)
    assert loaded.compute_options() == ComputeOptions(compile=True)


def test_servers_round_trip_and_the_file_is_readable_by_its_owner_only(tmp_path: Path):
    import os
    import stat
    import sys

    from desktop.engine.remote.comfy_client import ServerConfig
    from desktop.engine.settings import ALL_SERVERS, server_entry

    first = ServerConfig("https://gpu.example:8443", token="t0ken", verify_tls=False, name="GPU")
    second = ServerConfig("http://192.168.1.20:8188")
    path = tmp_path / "settings.json"
    settings = Settings(servers=[server_entry(first), server_entry(second)], backend=first.url)
    save_settings(settings, path)
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the tokens live here
    loaded = load_settings(path)
    assert loaded.server_configs() == [first, second]
    assert loaded.backend_servers() == [first]
    loaded.backend = ALL_SERVERS
    assert loaded.backend_servers() == [first, second]
    loaded.backend = "http://gone:8188"
    assert loaded.backend_servers() == []  # a removed server runs nothing
    loaded.backend = "local"
    assert loaded.backend_servers() == []


def test_malformed_server_entries_are_dropped_on_load(tmp_path: Path):
    path = tmp_path / "settings.json"
    entries = [
        {"url": "ftp://nope"},
        {"name": "no url"},
        "http://a-string:8188",
        {"url": "http://ok:8188", "token": 5, "verify_tls": "yes"},
    ]
    path.write_text(json.dumps({"version": 2, "servers": entries}), encoding="utf-8")
    loaded = load_settings(path)
    (config,) = loaded.server_configs()
    assert (config.url, config.token, config.verify_tls) == ("http://ok:8188", "", True)
