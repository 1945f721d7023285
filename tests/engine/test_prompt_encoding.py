"""Weighted, chunked prompt encoding by AUTOMATIC1111's rules, on the tiny SD1.5 and SDXL
pipelines (real tokenizers) and the built-in model (a 32-token window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.engine import paths
from desktop.engine.prompt_conditioning import Conditioning
from desktop.engine.prompt_encoding import PromptEncoder
from desktop.engine.prompt_syntax import parse_prompt
from desktop.engine.prompt_tokens import CHUNK, token_count, tokenize
from desktop.engine.request import GenerationRequest


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True)


@pytest.fixture(scope="module")
def sdxl_pipe(tiny_sdxl: Path):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)


def _pieces(text: str):
    return parse_prompt(text).pieces


def test_the_reference_prompt_tokenizes_to_clip_ids(sd_pipe):
    chunks = tokenize(sd_pipe.tokenizer, _pieces("a photo of an astronaut riding a horse")).chunks
    assert [c.ids for c in chunks] == [[320, 1125, 539, 550, 18376, 6765, 320, 4558]]


def test_long_prompts_fill_chunks_of_75_and_break_starts_a_new_one(sd_pipe):
    tok = sd_pipe.tokenizer
    words = " ".join(["cat"] * 100)
    chunks = tokenize(tok, _pieces(words)).chunks
    assert [len(c.ids) for c in chunks] == [CHUNK, 25]
    assert token_count(tok, _pieces(words)) == (100, 150)
    assert token_count(tok, _pieces("a red circle")) == (3, 75)
    broken = tokenize(tok, _pieces("a red circle BREAK a blue square")).chunks
    assert [len(c.ids) for c in broken] == [3, 3]


def test_a_full_chunk_ends_after_a_recent_comma(sd_pipe):
    tok = sd_pipe.tokenizer
    # 70 words, a comma, 10 words: the chunk would end mid-phrase; it ends after the comma.
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = tokenize(tok, _pieces(text)).chunks
    assert [len(c.ids) for c in chunks] == [71, 10]
    assert chunks[0].ids[-1] == tok(",", add_special_tokens=False).input_ids[0]
    # A comma too far back (more than 20 tokens before the end) does not move anything.
    far = "cat, " + " ".join(["dog"] * 80)
    assert [len(c.ids) for c in tokenize(tok, _pieces(far)).chunks] == [75, 7]


def test_unweighted_short_prompt_matches_diffusers_exactly(sd_pipe):
    ours = PromptEncoder(sd_pipe).encode(_pieces("a red circle")).embeds
    with torch.no_grad():
        theirs, _ = sd_pipe.encode_prompt("a red circle", "cpu", 1, False)
    assert ours.embeds.shape == theirs.shape == (1, 77, theirs.shape[-1])
    assert torch.equal(ours.embeds, theirs)


def test_weights_change_the_tokens_and_keep_the_mean(sd_pipe):
    encoder = PromptEncoder(sd_pipe)
    with torch.no_grad():
        plain = encoder.encode(_pieces("a red circle")).embeds.embeds
        weighted = encoder.encode(_pieces("a (red:1.5) circle")).embeds.embeds
        same = encoder.encode(_pieces("a (red:1.0) circle")).embeds.embeds
    assert torch.equal(plain, same)
    assert not torch.allclose(plain, weighted)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4, abs=1e-6)
    # Every value is rescaled by one factor c (the mean restoration); "red" also by 1.5.
    c = (weighted[0, 5] / plain[0, 5]).mean()
    assert torch.allclose(weighted[0, 5], plain[0, 5] * c, rtol=1e-4, atol=1e-6)
    assert torch.allclose(weighted[0, 2], plain[0, 2] * 1.5 * c, rtol=1e-4, atol=1e-6)


def test_long_prompt_is_154_positions_and_the_negative_is_padded(sd_pipe):
    request = GenerationRequest(prompt=" ".join(["cat"] * 100), negative_prompt="blurry")
    with torch.no_grad():
        conditioning = Conditioning.build(sd_pipe, request)
    assert conditioning.warnings == []
    kwargs = conditioning.pipeline_kwargs()
    assert kwargs["prompt_embeds"].shape[1] == kwargs["negative_prompt_embeds"].shape[1] == 154


def test_sdxl_uses_both_encoders_pooled_from_the_first_chunk_and_zero_negative(sdxl_pipe):
    request = GenerationRequest(prompt="a red circle")
    with torch.no_grad():
        kwargs = Conditioning.build(sdxl_pipe, request).pipeline_kwargs()
        theirs = sdxl_pipe.encode_prompt("a red circle", device="cpu")
    embeds, negative, pooled, _ = theirs
    assert torch.allclose(kwargs["prompt_embeds"], embeds, atol=1e-6)
    assert torch.allclose(kwargs["pooled_prompt_embeds"], pooled, atol=1e-6)
    assert not kwargs["negative_prompt_embeds"].any()
    assert not kwargs["negative_pooled_prompt_embeds"].any()
    assert negative.shape == kwargs["negative_prompt_embeds"].shape
    long = GenerationRequest(prompt=" ".join(["cat"] * 100) + " BREAK (dog:1.3)")
    with torch.no_grad():
        long_kwargs = Conditioning.build(sdxl_pipe, long).pipeline_kwargs()
    assert long_kwargs["prompt_embeds"].shape[1] == 231
    assert long_kwargs["negative_prompt_embeds"].shape == long_kwargs["prompt_embeds"].shape


class _FakePipe:
    """What ``Conditioning.switch`` reads from a pipeline in its denoising loop."""

    def __init__(self, unet_dtype: torch.dtype, timesteps: int, guided: bool = True) -> None:
        self.unet = type("U", (), {"dtype": unet_dtype})()
        self.num_timesteps = timesteps
        self.do_classifier_free_guidance = guided
        self._execution_device = torch.device("cpu")


def test_prompt_editing_hands_the_pipeline_new_embeddings_at_the_switch(sd_pipe):
    request = GenerationRequest(prompt="a [red:blue:0.5] circle", steps=4, batch_size=2)
    with torch.no_grad():
        conditioning = Conditioning.build(sd_pipe, request)
        blue = PromptEncoder(sd_pipe).encode(_pieces("a blue circle")).embeds.embeds
    assert [last for last, _, _ in conditioning.segments] == [2, 4]
    first = conditioning.pipeline_kwargs()["prompt_embeds"]
    pipe = _FakePipe(torch.float32, timesteps=4)
    assert conditioning.switch(pipe, 1) == {}  # still step 2: no change
    out = conditioning.switch(pipe, 2)  # step 3 starts the second range
    assert out["prompt_embeds"].shape == (4, 77, first.shape[-1])  # negative x2, positive x2
    assert torch.equal(out["prompt_embeds"][2], blue[0])
    assert conditioning.switch(pipe, 3) == {}
    # A second-order sampler runs more timesteps than steps: the switch follows the steps.
    heun = Conditioning.build(sd_pipe, request)
    heun.pipeline_kwargs()
    seven = _FakePipe(torch.float32, timesteps=7)
    assert [bool(heun.switch(seven, i)) for i in range(1, 7)] == [0, 0, 1, 0, 0, 0]


def test_prompt_editing_changes_the_picture(engine_fp32, tiny_sd):
    def pixels(prompt: str) -> np.ndarray:
        request = GenerationRequest(prompt=prompt, model=str(tiny_sd), steps=6, width=64,
                                    height=64, seed=3)  # fmt: skip
        return np.asarray(engine_fp32.generate(request).images[0].image, dtype=int)

    red, blue = pixels("a red circle"), pixels("a blue circle")
    edited = pixels("a [red:blue:0.5] circle")
    alternated = pixels("a [red|blue] circle")
    for image in (edited, alternated):
        assert not np.array_equal(image, red) and not np.array_equal(image, blue)
    assert np.array_equal(pixels("a [red:blue:6] circle"), red)  # switches after the end


@pytest.fixture(scope="module")
def engine_fp32():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"))


@pytest.mark.skipif(not (paths.BUILTIN_MODEL / "model_index.json").is_file(), reason="no model")
def test_built_in_model_takes_weights(engine_fp32):
    def pixels(prompt: str) -> np.ndarray:
        request = GenerationRequest(
            prompt=prompt, model=str(paths.BUILTIN_MODEL), seed=5, width=64, height=64, steps=12
        )
        return np.asarray(engine_fp32.generate(request).images[0].image, dtype=int)

    plain = pixels("a big red circle in the center, blue background")
    assert np.array_equal(pixels("a big (red:1.0) circle in the center, blue background"), plain)
    weighted = pixels("a big (red:1.5) circle in the center, blue background")
    assert np.abs(weighted - plain).mean() > 1.0


def test_built_in_model_still_says_when_a_prompt_is_cut(engine_fp32):
    if not (paths.BUILTIN_MODEL / "model_index.json").is_file():
        pytest.skip("no built-in model")
    prompt = ", ".join(["a big red circle in the center"] * 6)
    request = GenerationRequest(
        prompt=prompt, model=str(paths.BUILTIN_MODEL), steps=2, width=64, height=64
    )
    result = engine_fp32.generate(request)
    assert any("the model reads only 30" in w for w in result.warnings), result.warnings
    # The warning's length is the prompt box's count.
    from desktop.engine.prompt_tokens import count_prompt, counting_tokenizer

    used = count_prompt(counting_tokenizer(paths.BUILTIN_MODEL), prompt).used
    assert any(f"The prompt is {used} tokens long" in w for w in result.warnings)


def test_network_tags_are_taken_out_of_the_text_and_only_unknown_kinds_warn(sd_pipe):
    request = GenerationRequest(prompt="a red circle <lora:detail:0.8> <hypernet:x:1>")
    with torch.no_grad():
        tagged = Conditioning.build(sd_pipe, request)
        plain = Conditioning.build(sd_pipe, GenerationRequest(prompt="a red circle  "))
    # LoRA tags go to the engine, which fuses the LoRA; other kinds are not applied.
    assert tagged.warnings == [
        "<hypernet:x:1> was ignored: hypernet tags are not applied by this version of "
        "Sandstorm yet."
    ]
    assert torch.equal(
        tagged.pipeline_kwargs()["prompt_embeds"], plain.pipeline_kwargs()["prompt_embeds"]
    )


def test_clip_skip_reads_an_earlier_layer_through_the_final_norm(sd_pipe):
    pieces = _pieces("a red circle")
    with torch.no_grad():
        last = PromptEncoder(sd_pipe, clip_skip=1).encode(pieces).embeds.embeds
        skip2 = PromptEncoder(sd_pipe, clip_skip=2).encode(pieces).embeds.embeds
        ids = sd_pipe.tokenizer("a red circle", padding="max_length", return_tensors="pt")
        out = sd_pipe.text_encoder(ids.input_ids, output_hidden_states=True)
        norm = getattr(sd_pipe.text_encoder, "text_model", sd_pipe.text_encoder).final_layer_norm
        expected = norm(out.hidden_states[-2])
    assert not torch.allclose(last, skip2)
    assert torch.allclose(skip2, expected, atol=1e-6)
    # Deeper than the encoder has layers: the first layer, not an error.
    PromptEncoder(sd_pipe, clip_skip=12).encode(pieces)


def test_clip_skip_changes_the_picture_and_is_in_the_infotext(engine_fp32, tiny_sd):
    from desktop.engine.metadata import format_parameters

    base = dict(prompt="a red circle", model=str(tiny_sd), steps=3, width=64, height=64, seed=2)
    one = engine_fp32.generate(GenerationRequest(**base))
    two = engine_fp32.generate(GenerationRequest(**base, clip_skip=2))
    assert not np.array_equal(np.asarray(one.images[0].image), np.asarray(two.images[0].image))
    assert "Clip skip: 2" in format_parameters(two.images[0].request)
    assert "Clip skip" not in format_parameters(one.images[0].request)
