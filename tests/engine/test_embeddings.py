"""Textual-inversion embeddings: file formats, triggers, placement in chunks, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.engine import paths
from desktop.engine.embeddings import EmbeddingSet, comfy_triggers, read_embedding
from desktop.engine.errors import ModelError
from desktop.engine.prompt_syntax import Piece
from desktop.engine.prompt_tokens import tokenize
from desktop.engine.request import GenerationRequest
from tests.helpers import network_files as nf


def _embeddings_dir() -> Path:
    folder = paths.user_models_dir() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def engine():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])


def _pixels(engine, model: Path, prompt: str, negative: str = "") -> np.ndarray:
    request = GenerationRequest(
        model=str(model), prompt=prompt, negative_prompt=negative, steps=3, width=64,
        height=64, seed=5,
    )  # fmt: skip
    return np.asarray(engine.generate(request).images[0].image)


def test_the_four_file_layouts_read_to_vectors(tmp_path):
    vectors = torch.randn(3, 32)
    pt = tmp_path / "a1111.pt"
    torch.save(nf.a1111_embedding(vectors), pt)
    st = nf.save({"emb_params": vectors}, tmp_path / "st.safetensors")
    diffusers = tmp_path / "learned_embeds.bin"
    torch.save({"<cat-toy>": vectors[0]}, diffusers)
    xl = nf.save({"clip_l": vectors, "clip_g": torch.randn(3, 64)}, tmp_path / "xl.safetensors")
    assert torch.equal(read_embedding(pt, "a").vectors["text_encoder"], vectors)
    assert torch.equal(read_embedding(st, "s").vectors["text_encoder"], vectors)
    assert read_embedding(diffusers, "d").count == 1
    both = read_embedding(xl, "x")
    assert set(both.vectors) == {"text_encoder", "text_encoder_2"} and both.count == 3


def test_a_pt_that_needs_unpickling_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "x": Path("/")}, path)
    with pytest.raises(ModelError, match="could run code"):
        read_embedding(path, "evil")


def test_triggers_become_placeholders_kept_in_one_chunk(tiny_sd):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    tokens = tokenize(tokenizer, [Piece("a photo, EasyNegative, embedding:style.pt")], {
        "easynegative": 2, "style": 3,
    })  # fmt: skip
    chunk = tokens.chunks[0]
    assert [(name, index) for _, name, index in chunk.slots] == [
        ("easynegative", 0), ("easynegative", 1), ("style", 0), ("style", 1), ("style", 2),
    ]  # fmt: skip
    assert len(chunk.ids) == 3 + 2 + 1 + 3  # "a photo ," + 2 + "," + 3
    # An embedding that does not fit the rest of a chunk moves to the next one whole.
    long = [Piece("word " * 73 + "style")]
    chunks = tokenize(tokenizer, long, {"style": 3}).chunks
    assert len(chunks) == 2 and [s[0] for s in chunks[1].slots] == [0, 1, 2]
    assert tokenize(tokenizer, [Piece("stylesheet")], {"style": 3}).chunks[0].slots == []
    assert comfy_triggers("x embedding:neg.safetensors, embedding:b") == ["neg", "b"]


def test_a_negative_embedding_changes_the_image_and_only_where_it_is_named(engine, tiny_sd):
    torch.manual_seed(0)
    torch.save(nf.a1111_embedding(torch.randn(2, 32) * 3), _embeddings_dir() / "badhands.pt")
    plain = _pixels(engine, tiny_sd, "a cat", "blurry")
    with_embedding = _pixels(engine, tiny_sd, "a cat", "blurry, badhands")
    comfy_style = _pixels(engine, tiny_sd, "a cat", "blurry, embedding:badhands")
    assert not np.array_equal(plain, with_embedding)
    assert np.array_equal(with_embedding, comfy_style)
    # The tokenizer is untouched after a job: nothing is left behind.
    pipe = engine.load(engine.resolve_model(str(tiny_sd))).txt2img
    assert "badhands" not in pipe.tokenizer.get_vocab()


def test_the_vectors_take_the_place_of_the_trigger_tokens(engine, tiny_sd):
    from desktop.engine.prompt_encoding import PromptEncoder

    pipe = engine.load(engine.resolve_model(str(tiny_sd))).txt2img
    vectors = torch.randn(2, 32)
    path = nf.save({"emb_params": vectors}, _embeddings_dir() / "shiny.safetensors")
    embeddings = EmbeddingSet({"shiny": read_embedding(path, "shiny")})
    captured = []
    # The token-embedding layer's own hook swaps the vectors in; what the layer after it
    # (token + position embeddings) puts out shows the swap took place.
    encoder = pipe.text_encoder
    layer = getattr(encoder, "text_model", encoder).embeddings
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    try:
        with torch.inference_mode():
            PromptEncoder(pipe, 1, embeddings).encode([Piece("a shiny cat")])
    finally:
        handle.remove()
    positions = layer.position_embedding.weight[2:4].detach()
    tokens = (captured[0][0, 2:4] - positions).float()  # BOS, "a", then the two vectors
    expected = vectors.to(layer.position_embedding.weight.dtype).float()
    assert torch.allclose(tokens, expected, atol=0.05, rtol=0.02)


def test_sdxl_embeddings_feed_each_encoder_its_own_vectors(engine, tiny_sdxl):
    torch.manual_seed(1)
    nf.save(
        {"clip_l": torch.randn(1, 32) * 3, "clip_g": torch.randn(1, 32) * 3},
        _embeddings_dir() / "xlstyle.safetensors",
    )
    assert not np.array_equal(
        _pixels(engine, tiny_sdxl, "a cat"), _pixels(engine, tiny_sdxl, "a cat xlstyle")
    )


def test_a_missing_comfy_embedding_or_one_for_another_model_stops_the_job(engine, tiny_sd):
    with pytest.raises(ModelError, match="'nowhere' is not installed"):
        _pixels(engine, tiny_sd, "a cat, embedding:nowhere")
    nf.save({"emb_params": torch.randn(1, 768)}, _embeddings_dir() / "sd15neg.safetensors")
    with pytest.raises(ModelError, match=r"sd15neg.safetensors is made for SD 1.x"):
        _pixels(engine, tiny_sd, "a cat", "sd15neg")


def test_the_token_count_counts_an_installed_embedding_as_its_vectors():
    from desktop.engine.embeddings import installed_triggers
    from desktop.engine.prompt_tokens import count_prompt, counting_tokenizer

    nf.save({"emb_params": torch.randn(5, 32)}, _embeddings_dir() / "easyneg.safetensors")
    (_embeddings_dir() / "broken.pt").write_bytes(b"not an embedding")
    triggers = installed_triggers([])
    assert triggers == {"easyneg": 5}
    tokenizer = counting_tokenizer(None)
    assert count_prompt(tokenizer, "a cat, easyneg", triggers).used == 2 + 1 + 5
    assert count_prompt(tokenizer, "a cat, embedding:easyneg", triggers).used == 2 + 1 + 5
    assert count_prompt(tokenizer, "a cat, easyneg").used != 8  # the word's own tokens


def test_the_vector_count_from_a_safetensors_header_matches_the_file(tmp_path: Path):
    from desktop.engine.embeddings import _safetensors_count

    cases = {
        "a1111.safetensors": {"emb_params": torch.randn(4, 32)},
        "xl.safetensors": {"clip_l": torch.randn(3, 32), "clip_g": torch.randn(3, 64)},
        "one.safetensors": {"<cat>": torch.randn(32)},
    }
    for name, tensors in cases.items():
        path = nf.save(tensors, tmp_path / name)
        assert _safetensors_count(path) == read_embedding(path, "x").count
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 12)
    assert _safetensors_count(broken) is None
    assert _safetensors_count(tmp_path / "missing.safetensors") is None
