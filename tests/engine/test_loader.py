"""Offline model loading: single files, pickles, diffusers folders, VAE and prediction overrides.

The tiny SD1 model is written in the original single-file layout, so it goes through the same
``from_single_file`` path as a real checkpoint, with a config root shaped like the shipped one.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from desktop.engine import paths
from desktop.engine.errors import ModelError
from desktop.engine.loader import LoadedPipelines, load_pipeline
from desktop.engine.models import ModelInfo, inspect_file, inspect_folder
from tests.helpers import ldm


@dataclass
class Tiny:
    folder: Path  # the diffusers folder
    pipe: object  # the same model loaded in memory (float32), for comparisons
    config_root: Path
    safetensors: Path
    ckpt: Path


@pytest.fixture(scope="module")
def tiny(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("loader")
    pipe = ldm.load_tiny_pipeline(tiny_sd)
    return Tiny(
        folder=tiny_sd,
        pipe=pipe,
        config_root=ldm.make_config_root(tiny_sd, root / "configs"),
        safetensors=ldm.write_single_file(pipe, root / "models" / "tiny-sd1.safetensors"),
        ckpt=ldm.write_single_file(pipe, root / "models" / "tiny-sd1.ckpt"),
    )


def _load(tiny: Tiny, info: ModelInfo, **kwargs) -> LoadedPipelines:
    kwargs.setdefault("config_root", tiny.config_root)
    return load_pipeline(info, "cpu", kwargs.pop("dtype", torch.float32), **kwargs)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


# -- single files ----------------------------------------------------------------------------


def test_single_file_loads_through_shipped_layout_and_generates(tiny: Tiny) -> None:
    info = inspect_file(tiny.safetensors)
    assert (info.family, info.usable) == ("sd1", True)

    loaded = _load(tiny, info)

    pipe = loaded.txt2img
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert (loaded.device, loaded.dtype, loaded.info) == ("cpu", torch.float32, info)
    for name in ("unet", "vae", "text_encoder"):
        assert _same_weights(getattr(pipe, name), getattr(tiny.pipe, name)), name
    # The shipped tokenizer, not a download: CLIP's start/end ids around "a cat".
    ids = pipe.tokenizer("a cat").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 4
    assert pipe.safety_checker is None
    # The shipped SD1.5 training schedule.
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert (pipe.scheduler.config.beta_start, pipe.scheduler.config.beta_end) == (0.00085, 0.012)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    result = pipe(
        "a cat", num_inference_steps=2, height=64, width=64, generator=torch.manual_seed(0)
    )
    image = result.images[0]
    assert image.size == (64, 64)
    assert any(low != high for low, high in image.getextrema())  # not a flat canvas


def test_img2img_shares_modules_and_dtype(tiny: Tiny) -> None:
    # bfloat16 on purpose: a float32 cast (what from_pipe does, diffusers #12754) would show.
    loaded = _load(tiny, inspect_file(tiny.safetensors), dtype=torch.bfloat16)

    t2i, i2i = loaded.txt2img, loaded.img2img
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(i2i, name) is getattr(t2i, name), name
    assert loaded.dtype == torch.bfloat16
    assert t2i.unet.dtype == i2i.unet.dtype == torch.bfloat16
    assert i2i.vae.dtype == torch.bfloat16


def test_img2img_runs(tiny: Tiny) -> None:
    from PIL import Image

    loaded = _load(tiny, inspect_file(tiny.safetensors))
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    out = loaded.img2img(
        "a cat",
        image=init,
        strength=0.5,
        num_inference_steps=4,
        generator=torch.manual_seed(0),
    ).images[0]
    assert out.size == (64, 64)


def test_fp16_is_not_used_on_cpu(tiny: Tiny) -> None:
    loaded = _load(tiny, inspect_file(tiny.safetensors), dtype=torch.float16)
    assert loaded.dtype == torch.float32
    assert loaded.txt2img.unet.dtype == torch.float32


def _corrupt_random(good: Path, target: Path) -> None:
    target.write_bytes(os.urandom(4096))


def _corrupt_truncated(good: Path, target: Path) -> None:
    data = good.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _corrupt_empty(good: Path, target: Path) -> None:
    target.write_bytes(b"")


@pytest.mark.parametrize("damage", [_corrupt_random, _corrupt_truncated, _corrupt_empty])
def test_corrupt_safetensors_gives_clear_error(tiny: Tiny, tmp_path: Path, damage) -> None:
    bad = tmp_path / "broken-model.safetensors"
    damage(tiny.safetensors, bad)
    with pytest.raises(ModelError, match=r"broken-model\.safetensors is not a usable"):
        _load(tiny, inspect_file(bad))


def test_checkpoint_missing_weights_gives_clear_error(tiny: Tiny, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny.safetensors))
    # Drop the decoder: the header is fine, the file is classified as SD1, but it is incomplete.
    partial = {k: v for k, v in state.items() if ".decoder." not in k}
    path = tmp_path / "partial.safetensors"
    save_file(partial, str(path))
    info = inspect_file(path)
    assert info.family == "sd1"
    with pytest.raises(ModelError, match=r"partial\.safetensors.*incomplete"):
        _load(tiny, info)


def test_weights_of_another_layout_give_clear_error(tiny: Tiny, tmp_path: Path) -> None:
    # The tiny weights read with a config describing a different (bigger) UNet.
    configs = tmp_path / "configs"
    ldm.make_config_root(tiny.folder, configs)
    unet_config = configs / "sd15" / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    config["block_out_channels"] = [64, 128]
    unet_config.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"tiny-sd1\.safetensors.*do not fit.*expected \[256"):
        _load(tiny, inspect_file(tiny.safetensors), config_root=configs)


def test_missing_config_folder_is_reported(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"configuration .* is missing"):
        _load(tiny, inspect_file(tiny.safetensors), config_root=tmp_path)


def test_unusable_model_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    lora = tmp_path / "style-lora.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(lora))
    with pytest.raises(ModelError, match="LoRA"):
        _load(tiny, inspect_file(lora))


def test_missing_file_is_reported(tiny: Tiny, tmp_path: Path) -> None:
    info = replace(inspect_file(tiny.safetensors), path=tmp_path / "gone.safetensors")
    with pytest.raises(ModelError, match="does not exist"):
        _load(tiny, info)


# -- pickled checkpoints -------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _torch_save_evil(tiny: Tiny, path: Path, marker: Path) -> None:
    state = ldm.pipeline_to_ldm(tiny.pipe)
    torch.save({"state_dict": state, "payload": _TouchOnUnpickle(marker)}, path)


def _plain_pickle_evil(tiny: Tiny, path: Path, marker: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "payload": _TouchOnUnpickle(marker)}, handle, protocol=2)


@pytest.mark.parametrize("write", [_torch_save_evil, _plain_pickle_evil])
def test_malicious_ckpt_is_refused_without_running_code(tiny: Tiny, tmp_path: Path, write) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    write(tiny, path, marker)
    info = inspect_file(path)
    assert info.format == "ckpt"

    with pytest.raises(ModelError, match=r"evil\.ckpt needs full unpickling.*\.safetensors"):
        _load(tiny, info)
    assert not marker.exists()


def test_corrupt_ckpt_gives_clear_error(tiny: Tiny, tmp_path: Path) -> None:
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(tiny.ckpt.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"damaged\.ckpt is not a readable checkpoint"):
        _load(tiny, inspect_file(path))


def test_safe_ckpt_is_classified_and_loads(tiny: Tiny) -> None:
    info = inspect_file(tiny.ckpt)
    assert (info.format, info.family) == ("ckpt", "unknown")

    loaded = _load(tiny, info)

    assert loaded.info.family == "sd1"
    assert loaded.info.prediction_type == "epsilon"
    assert _same_weights(loaded.txt2img.unet, tiny.pipe.unet)
    assert _same_weights(loaded.txt2img.text_encoder, tiny.pipe.text_encoder)


def test_ckpt_that_is_not_a_checkpoint_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    path = tmp_path / "embedding.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}}, path)
    with pytest.raises(ModelError, match=r"embedding\.pt cannot be used"):
        _load(tiny, inspect_file(path))


# -- diffusers folders -----------------------------------------------------------------------


def test_diffusers_folder_loads(tiny: Tiny) -> None:
    info = inspect_folder(tiny.folder)
    loaded = _load(tiny, info)
    assert _same_weights(loaded.txt2img.unet, tiny.pipe.unet)
    assert loaded.img2img.unet is loaded.txt2img.unet


def test_folder_with_another_pipeline_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    info = ModelInfo("kandinsky", folder, "diffusers", "sd1")
    with pytest.raises(ModelError, match="KandinskyPipeline"):
        _load(tiny, info)


# -- overrides -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_vae(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    """A VAE with the same architecture as the tiny model's, but different weights."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1234)
    vae = AutoencoderKL.from_config(tiny.pipe.vae.config)
    path = ldm.write_vae_file(vae, tmp_path_factory.mktemp("vae") / "other-vae.safetensors")
    assert not _same_weights(vae, tiny.pipe.vae)
    return vae, path


@pytest.mark.parametrize("source", ["safetensors", "folder"])
def test_vae_override_from_single_file(tiny: Tiny, other_vae, source: str) -> None:
    vae, path = other_vae
    info = (
        inspect_file(tiny.safetensors) if source == "safetensors" else inspect_folder(tiny.folder)
    )

    loaded = _load(tiny, info, vae_path=path)

    assert _same_weights(loaded.txt2img.vae, vae)
    assert loaded.img2img.vae is loaded.txt2img.vae
    assert _same_weights(loaded.txt2img.unet, tiny.pipe.unet)


def test_vae_override_from_folder(tiny: Tiny, other_vae, tmp_path: Path) -> None:
    vae, _ = other_vae
    vae.save_pretrained(tmp_path / "other-vae")
    loaded = _load(tiny, inspect_file(tiny.safetensors), vae_path=tmp_path / "other-vae")
    assert _same_weights(loaded.txt2img.vae, vae)


def test_broken_vae_is_reported(tiny: Tiny, tmp_path: Path) -> None:
    bad = tmp_path / "bad-vae.safetensors"
    bad.write_bytes(b"not a vae")
    with pytest.raises(ModelError, match=r"bad-vae\.safetensors"):
        _load(tiny, inspect_file(tiny.safetensors), vae_path=bad)


def test_prediction_type_reaches_scheduler_config(tiny: Tiny) -> None:
    info = replace(inspect_file(tiny.safetensors), prediction_type="v_prediction")
    loaded = _load(tiny, info)
    assert loaded.txt2img.scheduler.config.prediction_type == "v_prediction"
    assert loaded.img2img.scheduler.config.prediction_type == "v_prediction"

    plain = _load(tiny, inspect_file(tiny.safetensors))
    assert plain.txt2img.scheduler.config.prediction_type == "epsilon"


def test_ckpt_sidecar_prediction_type_is_kept(tiny: Tiny, tmp_path: Path) -> None:
    ckpt = tmp_path / tiny.ckpt.name
    ckpt.write_bytes(tiny.ckpt.read_bytes())
    ckpt.with_name(ckpt.name + ".sandstorm.json").write_text('{"prediction_type": "v_prediction"}')
    loaded = _load(tiny, inspect_file(ckpt))
    assert loaded.info.prediction_type == "v_prediction"
    assert loaded.txt2img.scheduler.config.prediction_type == "v_prediction"


# -- offline -------------------------------------------------------------------------------


def test_loading_makes_no_network_attempt(
    tiny: Tiny, other_vae, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers.utils.hub_utils
    import huggingface_hub.constants

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during model loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # An empty Hub cache and a Hub that believes it is online: nothing may be fetched anyway.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(diffusers.utils.hub_utils, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    _load(tiny, inspect_file(tiny.safetensors), vae_path=other_vae[1])
    _load(tiny, inspect_file(tiny.ckpt))
    _load(tiny, inspect_folder(tiny.folder))

    assert attempts == []
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# -- shipped configs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unet", "text_encoders", "pipeline"),
    [
        ("sd15", 859_520_964, {"text_encoder": 123_060_480}, "StableDiffusionPipeline"),
        ("sd2", 865_910_724, {"text_encoder": 340_387_840}, "StableDiffusionPipeline"),
        (
            "sdxl",
            2_567_463_684,
            {"text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
            "StableDiffusionXLPipeline",
        ),
    ],
)
def test_shipped_configs_describe_the_public_models(
    name: str, unet: int, text_encoders: dict[str, int], pipeline: str
) -> None:
    """Parameter counts of the published models prove the architecture configs are exact."""
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = paths.MODEL_CONFIGS / name
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    with init_empty_weights():
        unet_model = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(folder / "unet")
        )
        assert count(unet_model) == unet
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        assert count(vae) == 83_653_863
        for sub, expected in text_encoders.items():
            cls = getattr(transformers, index[sub][1])
            config = transformers.CLIPTextConfig.from_pretrained(folder / sub)
            assert count(cls(config)) == expected, sub
    for sub in ("tokenizer", "tokenizer_2"):
        if sub in index:
            assert (folder / sub / "vocab.json").is_file(), f"{name}/{sub} is missing"


def test_sdxl_folder_gets_sdxl_pipelines(tiny: Tiny, tiny_sdxl: Path) -> None:
    loaded = _load(tiny, inspect_folder(tiny_sdxl), dtype=torch.bfloat16)

    t2i, i2i = loaded.txt2img, loaded.img2img
    assert type(t2i).__name__ == "StableDiffusionXLPipeline"
    assert type(i2i).__name__ == "StableDiffusionXLImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer_2", "scheduler"):
        assert getattr(i2i, name) is getattr(t2i, name), name
    assert i2i.unet.dtype == torch.bfloat16
    # The VAE keeps its own rule for upcasting when decoding in half precision.
    assert i2i.vae.config.force_upcast == t2i.vae.config.force_upcast
    assert i2i.config.force_zeros_for_empty_prompt == t2i.config.force_zeros_for_empty_prompt
