"""LoRAs through the engine: formats, strengths, exact removal, and files that cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.engine import paths
from desktop.engine.errors import ModelError
from desktop.engine.lora import LoraState, LoraUse, read_lora_file
from desktop.engine.request import GenerationRequest
from tests.helpers import network_files as nf


def _loras_dir() -> Path:
    folder = paths.user_models_dir() / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def engine():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])


def _request(model: Path, prompt: str, **changes) -> GenerationRequest:
    values = dict(model=str(model), prompt=prompt, steps=3, width=64, height=64, seed=7)
    values.update(changes)
    return GenerationRequest(**values)


def _pixels(engine, model: Path, prompt: str, **changes) -> np.ndarray:
    result = engine.generate(_request(model, prompt, **changes))
    return np.asarray(result.images[0].image), result


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _pipe(engine, model: Path):
    return engine.load(engine.resolve_model(str(model))).txt2img


def test_a_kohya_lora_changes_the_image_and_removing_it_gives_the_base_image_bit_for_bit(
    engine, tiny_sd
):
    pipe = _pipe(engine, tiny_sd)
    nf.save(nf.kohya_lora(pipe), _loras_dir() / "style.safetensors")
    base_unet, base_text = _weights(pipe.unet), _weights(pipe.text_encoder)
    loads = engine.loads
    base, _ = _pixels(engine, tiny_sd, "a red circle")
    styled, result = _pixels(engine, tiny_sd, "a red circle, <lora:style:0.8>")
    assert not np.array_equal(base, styled)
    assert not result.warnings
    assert not _same(base_unet, _weights(pipe.unet))
    assert not _same(base_text, _weights(pipe.text_encoder))
    again, _ = _pixels(engine, tiny_sd, "a red circle")
    assert np.array_equal(base, again)
    assert _same(base_unet, _weights(pipe.unet)) and _same(base_text, _weights(pipe.text_encoder))
    assert engine.loads == loads  # LoRAs on and off never reload the checkpoint


def test_the_fused_weight_is_base_plus_strength_alpha_over_rank_up_down(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    state = nf.kohya_lora(pipe, rank=4, alphas=lambda i: [1.0, 4.0, 0.5][i % 3], text=False)
    path = nf.save(state, _loras_dir() / "mixed.safetensors")
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    key = "lora_unet_" + name.replace(".", "_")
    module = pipe.unet.get_submodule(name)
    before = module.weight.detach().clone()
    lora = LoraState(pipe, "sd1", "tiny")
    lora.apply([LoraUse("mixed", path, unet=0.5, text=1.0)])
    # Each module is scaled by its own alpha (files whose alphas differ are common).
    alpha = float(state[f"{key}.alpha"])
    delta = state[f"{key}.lora_up.weight"] @ state[f"{key}.lora_down.weight"]
    assert torch.allclose(module.weight, before + 0.5 * alpha / 4 * delta, atol=1e-6)
    lora.apply([LoraUse("mixed", path, unet=1.0, text=1.0)])  # from the base, not on top
    assert torch.allclose(module.weight, before + alpha / 4 * delta, atol=1e-6)
    lora.restore()
    assert torch.equal(module.weight, before)


def test_separate_text_encoder_and_unet_strengths(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    nf.save(nf.kohya_lora(pipe, seed=3), _loras_dir() / "parts.safetensors")
    base_unet, base_text = _weights(pipe.unet), _weights(pipe.text_encoder)
    engine.generate(_request(tiny_sd, "a cat <lora:parts:0:1>"))  # te 0, unet 1
    assert _same(base_text, _weights(pipe.text_encoder))
    assert not _same(base_unet, _weights(pipe.unet))
    engine.generate(_request(tiny_sd, "a cat <lora:parts:te=1:unet=0>"))
    assert not _same(base_text, _weights(pipe.text_encoder))
    assert _same(base_unet, _weights(pipe.unet))
    engine.generate(_request(tiny_sd, "a cat"))
    assert _same(base_unet, _weights(pipe.unet))


def test_locon_peft_loha_and_lokr_files_apply_to_their_layers(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    folder = _loras_dir()
    files = {
        "locon": nf.kohya_lora(pipe, convs=True, seed=1),
        "peft": nf.peft_lora(pipe, seed=2),
        "loha": nf.loha(pipe, seed=4),
        "lokr": nf.lokr(pipe, seed=5),
    }
    for name, state in files.items():
        nf.save(state, folder / f"{name}.safetensors")
    conv = pipe.unet.get_submodule("down_blocks.0.resnets.0.conv1")
    linear_name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    linear = pipe.unet.get_submodule(linear_name)
    conv0, linear0 = conv.weight.detach().clone(), linear.weight.detach().clone()
    lora = LoraState(pipe, "sd1", "tiny")
    for name in files:
        assert lora.apply([LoraUse(name, folder / f"{name}.safetensors")]) == []
        assert not torch.equal(linear.weight, linear0), name
        key = "lora_unet_" + linear_name.replace(".", "_")
        state = files[name]
        if name == "loha":
            left = state[f"{key}.hada_w1_a"] @ state[f"{key}.hada_w1_b"]
            right = state[f"{key}.hada_w2_a"] @ state[f"{key}.hada_w2_b"]
            assert torch.allclose(linear.weight, linear0 + left * right, atol=1e-6)
        if name == "lokr":
            delta = torch.kron(state[f"{key}.lokr_w1"], state[f"{key}.lokr_w2"])
            assert torch.allclose(linear.weight, linear0 + delta, atol=1e-6)
        if name == "peft":
            k = f"unet.{linear_name}"
            delta = state[f"{k}.lora_B.weight"] @ state[f"{k}.lora_A.weight"]
            assert torch.allclose(linear.weight, linear0 + delta, atol=1e-6)
    lora.apply([LoraUse("locon", folder / "locon.safetensors")])
    assert not torch.equal(conv.weight, conv0)  # LoCon reaches the convolutions
    lora.restore()
    assert torch.equal(conv.weight, conv0) and torch.equal(linear.weight, linear0)


def test_two_loras_on_the_same_layers_add_up(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    folder = _loras_dir()
    a = nf.save(nf.kohya_lora(pipe, seed=10, text=False), folder / "a.safetensors")
    b = nf.save(nf.kohya_lora(pipe, seed=11, text=False), folder / "b.safetensors")
    module = pipe.unet.get_submodule("down_blocks.1.attentions.0.proj_in")
    base = module.weight.detach().clone()
    lora = LoraState(pipe, "sd1", "tiny")
    lora.apply([LoraUse("a", a)])
    only_a = module.weight.detach().clone() - base
    lora.apply([LoraUse("b", b)])
    only_b = module.weight.detach().clone() - base
    lora.apply([LoraUse("a", a), LoraUse("b", b)])
    assert torch.allclose(module.weight, base + only_a + only_b, atol=1e-6)
    lora.restore()


def test_an_sdxl_kohya_lora_with_original_names_reaches_both_text_encoders(engine, tiny_sdxl):
    pipe = _pipe(engine, tiny_sdxl)
    nf.save(nf.kohya_lora(pipe), _loras_dir() / "xl.safetensors")
    base = {n: _weights(getattr(pipe, n)) for n in ("unet", "text_encoder", "text_encoder_2")}
    plain, _ = _pixels(engine, tiny_sdxl, "a cat")
    styled, result = _pixels(engine, tiny_sdxl, "a cat <lora:xl:1>")
    assert not result.warnings  # every layer found a module
    assert not np.array_equal(plain, styled)
    for name, weights in base.items():
        assert not _same(weights, _weights(getattr(pipe, name))), name
    engine.generate(_request(tiny_sdxl, "a cat"))
    for name, weights in base.items():
        assert _same(weights, _weights(getattr(pipe, name))), name


# -- files and names that cannot be used: the job does not start, the model stays as it was --


def _refused(engine, model: Path, prompt: str) -> str:
    pipe = _pipe(engine, model)
    before = _weights(pipe.unet)
    with pytest.raises(ModelError) as caught:
        engine.generate(_request(model, prompt))
    assert _same(before, _weights(pipe.unet))
    return str(caught.value)


def test_a_missing_lora_is_named_and_the_job_does_not_start(engine, tiny_sd):
    message = _refused(engine, tiny_sd, "a cat <lora:detail_tweaker:0.8>")
    assert "detail_tweaker" in message and "not installed" in message


def test_an_sdxl_lora_on_an_sd1_model_says_so(engine, tiny_sd, tiny_sdxl):
    xl = _pipe(engine, tiny_sdxl)
    nf.save(nf.kohya_lora(xl), _loras_dir() / "xl_only.safetensors")
    message = _refused(engine, tiny_sd, "a cat <lora:xl_only>")
    assert "xl_only.safetensors" in message and "SDXL" in message


def test_a_truncated_or_corrupt_lora_file_is_refused_clearly(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    path = nf.save(nf.kohya_lora(pipe), _loras_dir() / "cut.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = _refused(engine, tiny_sd, "a cat <lora:cut>")
    assert "cut.safetensors" in message and "damaged or incomplete" in message
    (_loras_dir() / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    assert "damaged or incomplete" in _refused(engine, tiny_sd, "<lora:junk>")


def test_a_pickled_pt_lora_is_refused_like_a_ckpt(engine, tiny_sd, tmp_path):
    pipe = _pipe(engine, tiny_sd)
    path = nf.save(nf.kohya_lora(pipe), _loras_dir() / "old.pt")
    message = _refused(engine, tiny_sd, "a cat <lora:old>")
    assert "old.pt" in message and "pickle" in message
    with pytest.raises(ModelError, match="pickle"):
        read_lora_file(path)


def test_tucker_and_dora_files_are_named_as_not_supported(engine, tiny_sd):
    pipe = _pipe(engine, tiny_sd)
    tucker = nf.kohya_lora(pipe, text=False)
    key = next(k for k in tucker if k.endswith(".lora_down.weight"))
    tucker[key.replace("lora_down", "lora_mid")] = torch.zeros(4, 4)
    nf.save(tucker, _loras_dir() / "tucker.safetensors")
    assert "Tucker" in _refused(engine, tiny_sd, "<lora:tucker>")
    dora = nf.kohya_lora(pipe, text=False)
    dora[key.replace("lora_down.weight", "dora_scale")] = torch.ones(1, 4)
    nf.save(dora, _loras_dir() / "dora.safetensors")
    message = _refused(engine, tiny_sd, "<lora:dora>")
    assert "DoRA" in message and "dora.safetensors" in message


def test_the_loras_list_of_a_request_applies_too(engine, tiny_sd):
    from desktop.engine.parts import LoraRef

    pipe = _pipe(engine, tiny_sd)
    nf.save(nf.kohya_lora(pipe, seed=8), _loras_dir() / "listed.safetensors")
    base, _ = _pixels(engine, tiny_sd, "a cat")
    tagged, _ = _pixels(engine, tiny_sd, "a cat <lora:listed:0.7>")
    listed, _ = _pixels(
        engine, tiny_sd, "a cat", loras=(LoraRef("listed", unet_strength=0.7, text_strength=0.7),)
    )
    assert np.array_equal(tagged, listed) and not np.array_equal(base, listed)
