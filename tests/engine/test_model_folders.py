"""Model folders of ComfyUI / AUTOMATIC1111 installs and ComfyUI's extra_model_paths.yaml."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from desktop.engine import model_folders, models
from desktop.engine.errors import ModelError


def _mkdirs(root: Path, *relative: str) -> None:
    for rel in relative:
        (root / rel).mkdir(parents=True, exist_ok=True)


def _fake_sd1_checkpoint(path: Path) -> None:
    """A header-only SD1 .safetensors: scan() classifies it without reading tensors."""
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
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


COMFY_YAML = """\
# A trimmed copy of ComfyUI's example file.
a111:
    base_path: {a1111}
    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
    embeddings: embeddings

comfyui:
     base_path: relative-comfy/
     is_default: true
     checkpoints: models/checkpoints/
     diffusers: models/diffusers
     vae: models/vae/
     loras: models/loras/

no_base:
    checkpoints: {absolute}
"""


def test_extra_model_paths_reads_sections_multiline_values_and_relative_base(tmp_path: Path):
    a1111 = tmp_path / "webui"
    absolute = tmp_path / "elsewhere" / "ckpts"
    yaml_file = tmp_path / "comfy" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(COMFY_YAML.format(a1111=a1111, absolute=absolute), encoding="utf-8")

    kinds = model_folders.read_extra_model_paths(yaml_file)

    relative_base = yaml_file.parent / "relative-comfy"
    assert kinds["checkpoints"] == [
        a1111 / "models/Stable-diffusion",
        relative_base / "models/checkpoints",
        relative_base / "models/diffusers",
        absolute,
    ]
    assert kinds["vae"] == [a1111 / "models/VAE", relative_base / "models/vae"]
    assert kinds["loras"] == [
        a1111 / "models/Lora",
        a1111 / "models/LyCORIS",
        relative_base / "models/loras",
    ]


def test_extra_model_paths_expands_home_and_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MY_MODELS", str(tmp_path / "env-models"))
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text("s:\n  base_path: $MY_MODELS\n  checkpoints: sd\n", encoding="utf-8")
    assert model_folders.read_extra_model_paths(yaml_file)["checkpoints"] == [
        tmp_path / "env-models" / "sd"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [("a: [unclosed", "not valid YAML"), ("- just\n- a list\n", "no named sections")],
)
def test_extra_model_paths_rejects_bad_files_with_a_clear_message(
    tmp_path: Path, content: str, message: str
):
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(content, encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        model_folders.read_extra_model_paths(yaml_file)


def test_yaml_source_keeps_only_existing_folders(tmp_path: Path):
    _mkdirs(tmp_path, "webui/models/Stable-diffusion", "webui/models/Lora")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(
        COMFY_YAML.format(a1111=tmp_path / "webui", absolute=tmp_path / "missing"),
        encoding="utf-8",
    )
    described = model_folders.describe_source(yaml_file)
    assert described.layout == "extra_model_paths"
    assert described.checkpoints == (tmp_path / "webui/models/Stable-diffusion",)
    assert described.vae == ()
    assert described.loras == (tmp_path / "webui/models/Lora",)


def test_comfyui_install_with_its_own_extra_paths_file(tmp_path: Path):
    comfy = tmp_path / "ComfyUI"
    _mkdirs(comfy, "models/checkpoints", "models/vae", "models/loras", "comfy")
    _mkdirs(tmp_path, "nas/sd")
    (comfy / "extra_model_paths.yaml").write_text(
        f"nas:\n  base_path: {tmp_path / 'nas'}\n  checkpoints: sd\n", encoding="utf-8"
    )
    described = model_folders.describe_source(comfy)
    assert described.layout == "comfyui"
    assert described.checkpoints == (comfy / "models/checkpoints", tmp_path / "nas/sd")
    assert described.vae == (comfy / "models/vae",)
    assert described.loras == (comfy / "models/loras",)


def test_a1111_install_layout(tmp_path: Path):
    webui = tmp_path / "stable-diffusion-webui"
    _mkdirs(webui, "models/Stable-diffusion", "models/VAE", "models/Lora", "models/LyCORIS")
    described = model_folders.describe_source(webui)
    assert described.layout == "a1111"
    assert described.checkpoints == (webui / "models/Stable-diffusion",)
    assert described.vae == (webui / "models/VAE",)
    assert described.loras == (webui / "models/Lora", webui / "models/LyCORIS")


def test_models_root_and_plain_folder(tmp_path: Path):
    _mkdirs(tmp_path, "a1111-models/Stable-diffusion", "a1111-models/VAE", "plain")
    root = model_folders.describe_source(tmp_path / "a1111-models")
    assert root.checkpoints == (tmp_path / "a1111-models/Stable-diffusion",)
    assert root.vae == (tmp_path / "a1111-models/VAE",)
    plain = model_folders.describe_source(tmp_path / "plain")
    assert (plain.layout, plain.checkpoints, plain.loras) == ("folder", (tmp_path / "plain",), ())


def test_missing_source_and_non_yaml_file_are_clear_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        model_folders.describe_source(tmp_path / "gone")
    stray = tmp_path / "model.safetensors"
    stray.write_bytes(b"x")
    with pytest.raises(ModelError, match="choose a models folder"):
        model_folders.describe_source(stray)


def test_checkpoint_folders_feed_scan_and_skip_broken_sources(tmp_path: Path):
    webui = tmp_path / "webui"
    comfy = tmp_path / "ComfyUI"
    _mkdirs(webui, "models/Stable-diffusion")
    _mkdirs(comfy, "models/checkpoints")
    _fake_sd1_checkpoint(webui / "models/Stable-diffusion/dreamy.safetensors")
    _fake_sd1_checkpoint(comfy / "models/checkpoints/comfy-one.safetensors")
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("a: [unclosed", encoding="utf-8")

    folders = model_folders.checkpoint_folders(
        [webui, comfy, tmp_path / "unplugged-drive", broken_yaml, webui]
    )
    assert folders == [webui / "models/Stable-diffusion", comfy / "models/checkpoints"]

    found = {m.name: m for m in models.scan(folders, include_builtin=False)}
    assert set(found) == {"dreamy", "comfy-one"}
    assert all(m.family == "sd1" and m.usable for m in found.values())


def test_vae_and_lora_folders(tmp_path: Path):
    webui = tmp_path / "webui"
    _mkdirs(webui, "models/Stable-diffusion", "models/VAE", "models/Lora")
    assert model_folders.vae_folders([webui]) == [webui / "models/VAE"]
    assert model_folders.lora_folders([webui]) == [webui / "models/Lora"]
    with pytest.raises(ValueError, match="unknown model kind"):
        model_folders.describe_source(webui).folders("textures")
    with pytest.raises(ValueError, match="unknown model kind"):
        model_folders.folders_for("textures", [webui])


def test_known_installs_finds_usual_locations(tmp_path: Path):
    _mkdirs(
        tmp_path, "ComfyUI/models/checkpoints", "stable-diffusion-webui/models/Stable-diffusion"
    )
    _mkdirs(tmp_path, "Documents/ComfyUI")  # not an install: no models/checkpoints, no comfy/
    assert model_folders.known_installs(tmp_path) == [
        tmp_path / "ComfyUI",
        tmp_path / "stable-diffusion-webui",
    ]


def test_folders_for_lists_own_folders_first_then_sources(tmp_path: Path):
    from desktop.engine import paths

    comfy = tmp_path / "ComfyUI"
    _mkdirs(comfy, "models/checkpoints", "models/vae", "models/embeddings", "models/controlnet")
    webui = tmp_path / "webui"
    _mkdirs(webui, "models/Stable-diffusion", "models/VAE", "models/ESRGAN", "embeddings")
    sources = [comfy, str(webui), tmp_path / "unplugged-drive"]

    vae = model_folders.folders_for("vae", sources)
    assert vae == [
        paths.BUNDLED_MODELS / "vae",
        paths.user_models_dir() / "vae",
        comfy / "models/vae",
        webui / "models/VAE",
    ]
    checkpoints = model_folders.checkpoint_search_folders(sources)
    assert checkpoints[:4] == [
        paths.BUNDLED_MODELS / "checkpoints",
        paths.BUNDLED_MODELS / "diffusers",
        paths.user_models_dir() / "checkpoints",
        paths.user_models_dir() / "diffusers",
    ]
    assert checkpoints[4:] == [comfy / "models/checkpoints", webui / "models/Stable-diffusion"]
    assert model_folders.folders_for("checkpoints", sources) == checkpoints
    # A1111 keeps embeddings next to models/, not in it.
    assert model_folders.folders_for("embeddings", sources)[2:] == [
        comfy / "models/embeddings",
        webui / "embeddings",
    ]
    assert model_folders.folders_for("upscale_models", sources)[2:] == [webui / "models/ESRGAN"]
    assert model_folders.folders_for("controlnet", sources)[2:] == [comfy / "models/controlnet"]
    # No sources: only Sandstorm's own folders, listed even before they exist.
    assert model_folders.folders_for("loras") == [
        paths.BUNDLED_MODELS / "loras",
        paths.user_models_dir() / "loras",
    ]
    assert models.default_model_folders() == model_folders.checkpoint_search_folders()


def test_ip_adapter_and_image_encoder_folders(tmp_path: Path):
    from desktop.engine import paths

    assert model_folders.MODEL_KINDS == (
        "checkpoints",
        "vae",
        "loras",
        "embeddings",
        "controlnet",
        "upscale_models",
        "vae_approx",
        "ipadapter",
        "clip_vision",
    )
    for kind in ("ipadapter", "clip_vision"):
        assert model_folders.own_folders(kind) == [
            paths.BUNDLED_MODELS / kind,
            paths.user_models_dir() / kind,
        ]
        assert (paths.BUNDLED_MODELS / kind / ".gitkeep").is_file()
    comfy = tmp_path / "ComfyUI"
    _mkdirs(comfy, "models/checkpoints", "models/ipadapter", "models/clip_vision")
    webui = tmp_path / "webui"
    _mkdirs(webui, "models/Stable-diffusion", "models/ControlNet")
    described = model_folders.describe_source(comfy)
    assert described.ipadapter == (comfy / "models/ipadapter",)
    assert described.clip_vision == (comfy / "models/clip_vision",)
    # AUTOMATIC1111 keeps IP-Adapters beside its ControlNets; its encoders are elsewhere.
    assert model_folders.describe_source(webui).ipadapter == (webui / "models/ControlNet",)
    assert model_folders.describe_source(webui).clip_vision == ()
    sources = [comfy, webui]
    assert model_folders.folders_for("ipadapter", sources)[2:] == [
        comfy / "models/ipadapter",
        webui / "models/ControlNet",
    ]
    assert model_folders.folders_for("clip_vision", sources)[2:] == [comfy / "models/clip_vision"]
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(
        "s:\n  base_path: shared\n  ipadapter: ip\n  clip_vision: |\n    cv\n    cv2\n",
        encoding="utf-8",
    )
    kinds = model_folders.read_extra_model_paths(yaml_file)
    assert kinds["ipadapter"] == [tmp_path / "shared/ip"]
    assert kinds["clip_vision"] == [tmp_path / "shared/cv", tmp_path / "shared/cv2"]


def test_folders_for_has_no_duplicates(tmp_path: Path):
    comfy = tmp_path / "ComfyUI"
    _mkdirs(comfy, "models/checkpoints", "models/vae")
    vae = model_folders.folders_for("vae", [comfy, comfy, comfy / "models"])
    assert len(vae) == len(set(vae)) == 3


def test_scan_without_folders_uses_the_settings_sources(tmp_path: Path):
    from desktop.engine.settings import Settings, save_settings

    webui = tmp_path / "webui"
    _mkdirs(webui, "models/Stable-diffusion")
    _fake_sd1_checkpoint(webui / "models/Stable-diffusion" / "from-webui.safetensors")
    save_settings(Settings(extra_model_folders=[str(webui)]))
    assert "from-webui" in [m.name for m in models.scan(include_builtin=False)]
    assert model_folders.checkpoint_search_folders([str(webui)]) == (
        models.configured_model_folders()
    )


def _engine_without_torch_device(**kwargs):
    """A CPU engine: building one loads no model, so it is cheap."""
    from desktop.engine.generate import Engine

    return Engine(device="cpu", **kwargs)


def test_engine_finds_vaes_in_comfyui_and_a1111_folders(tmp_path: Path):
    from desktop.engine import paths

    comfy = tmp_path / "ComfyUI"
    _mkdirs(comfy, "models/checkpoints", "models/vae")
    (comfy / "models/vae" / "comfy-vae.safetensors").write_bytes(b"x")
    webui = tmp_path / "webui"
    _mkdirs(webui, "models/Stable-diffusion", "models/VAE")
    (webui / "models/VAE" / "webui-vae.pt").write_bytes(b"x")
    (webui / "models/VAE" / "notes.txt").write_bytes(b"x")
    own = paths.user_models_dir() / "vae"
    own.mkdir(parents=True)
    (own / "comfy-vae.safetensors").write_bytes(b"mine")

    engine = _engine_without_torch_device(extra_sources=[str(comfy), str(webui)])
    assert engine._resolve_vae("") is None
    assert engine._resolve_vae("webui-vae") == webui / "models/VAE" / "webui-vae.pt"
    assert engine._resolve_vae("webui-vae.pt") == webui / "models/VAE" / "webui-vae.pt"
    # Sandstorm's own folders come first.
    assert engine._resolve_vae("comfy-vae") == own / "comfy-vae.safetensors"
    with pytest.raises(ModelError, match="No VAE named 'notes'"):
        engine._resolve_vae("notes")
    # Without extra_sources the engine reads them from the settings.
    from desktop.engine.settings import Settings, save_settings

    save_settings(Settings(extra_model_folders=[str(webui)]))
    assert _engine_without_torch_device()._resolve_vae("webui-vae") == (
        webui / "models/VAE" / "webui-vae.pt"
    )
    with pytest.raises(ModelError, match="No VAE named 'webui-vae'"):
        _engine_without_torch_device(extra_sources=[])._resolve_vae("webui-vae")
