"""The LoRAs and embeddings a request uses, and ``Lora hashes`` / ``TI hashes`` in metadata."""

from __future__ import annotations

import hashlib

from PIL import Image

from desktop.engine import paths
from desktop.engine.metadata import format_parameters, metadata_from_chunks, read_metadata
from desktop.engine.parts import LoraRef
from desktop.engine.request import GenerationRequest
from desktop.engine.resources import (
    Resources,
    hash_resources,
    parse_hash_list,
    used_loras,
)

#: An infotext as AUTOMATIC1111 1.9 writes it (the settings line of a model-site image).
A1111_LINE = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
    "Size: 512x768, Model hash: 19bbe9faa4, Model: fantasticmix_k2, Clip skip: 2, "
    'Lora hashes: "LCM_15: aaebf6360f7d, add_detail: a95a0f4bdcb9", '
    'TI hashes: "MajicNegative_V2: a53884ef726b, badhandv4: 5e40d722fc3d", Version: v1.9.4'
)


def test_tags_and_the_loras_list_both_count_once_each():
    request = GenerationRequest(
        prompt="a cat <lora:Detail:0.5:0.25>, <lyco:grain:1>",
        negative_prompt="<lora:detail:2>",
        loras=(LoraRef("extra", 0.3, 0.4),),
    )
    assert used_loras(request) == [("Detail", 0.25, 0.5), ("grain", 1.0, 1.0), ("extra", 0.3, 0.4)]


def test_hash_lists_read_back_as_written():
    text = "LCM_15: aaebf6360f7d, ip-adapter-faceid-plusv2_sd15_lora: a95a0f4bdcb9"
    assert parse_hash_list(f'"{text}"') == [
        ("LCM_15", "aaebf6360f7d"),
        ("ip-adapter-faceid-plusv2_sd15_lora", "a95a0f4bdcb9"),
    ]


def test_an_a1111_infotext_gives_its_resources_and_keeps_the_loras():
    text = "masterpiece, <lora:add_detail:0.8>\nNegative prompt: badhandv4\n" + A1111_LINE
    meta = metadata_from_chunks({"parameters": text})
    assert meta.resources.loras == (("LCM_15", "aaebf6360f7d"), ("add_detail", "a95a0f4bdcb9"))
    assert meta.resources.embeddings[1] == ("badhandv4", "5e40d722fc3d")
    assert "Lora hashes" not in meta.extras and "TI hashes" not in meta.extras
    assert meta.request is not None and meta.request.clip_skip == 2
    assert meta.request.loras == (LoraRef("add_detail", 0.8, 0.8),)


def test_saved_images_carry_the_hashes_of_the_files(tmp_path):
    loras = paths.user_models_dir() / "loras" / "styles"
    embeddings = paths.user_models_dir() / "embeddings"
    loras.mkdir(parents=True)
    embeddings.mkdir(parents=True)
    (loras / "add_detail.safetensors").write_bytes(b"lora bytes")
    (embeddings / "badhandv4.pt").write_bytes(b"embedding bytes")
    lora_hash = hashlib.sha256(b"lora bytes").hexdigest()[:12]
    ti_hash = hashlib.sha256(b"embedding bytes").hexdigest()[:12]
    request = GenerationRequest(
        prompt="a cat, <lora:add_detail:0.8>",
        negative_prompt="blurry, badhandv4",
        clip_skip=2,
        seed=3,
    )
    resources = hash_resources(
        [("add_detail", loras / "add_detail.safetensors"), ("gone", tmp_path / "gone")],
        [("badhandv4", embeddings / "badhandv4.pt")],
    )
    assert resources == Resources((("add_detail", lora_hash),), (("badhandv4", ti_hash),))
    line = format_parameters(request, "model", "0123456789", resources).splitlines()[-1]
    assert line.endswith(
        f'Clip skip: 2, Lora hashes: "add_detail: {lora_hash}", TI hashes: "badhandv4: {ti_hash}"'
    )
    from desktop.engine.gallery import save_png_with_metadata

    path = save_png_with_metadata(
        Image.new("RGB", (8, 8)), request, tmp_path / "x.png", resources=resources
    )
    meta = read_metadata(path)
    assert meta.source == "sandstorm" and meta.request == request
    assert meta.resources == resources


def test_a_generated_image_records_the_lora_and_embedding_it_used(tiny_sd, tmp_path):
    import torch

    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine
    from desktop.engine.results import save_results
    from tests.helpers import network_files as nf

    engine = Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])
    pipe = engine.load(engine.resolve_model(str(tiny_sd))).txt2img
    lora = nf.save(nf.kohya_lora(pipe), paths.user_models_dir() / "loras" / "ink.safetensors")
    embedding = nf.save(
        {"emb_params": torch.randn(1, 32)}, paths.user_models_dir() / "embeddings" / "bad.pt"
    )
    request = GenerationRequest(
        prompt="a cat, <lora:ink:0.7>",
        negative_prompt="bad, blurry",
        model=str(tiny_sd),
        steps=2,
        width=64,
        height=64,
        seed=5,
    )
    result = engine.generate(request)
    expected = hash_resources([("ink", lora)], [("bad", embedding)])
    assert result.images[0].resources == expected and expected.loras and expected.embeddings
    saved = save_results(result.images, result.model, tmp_path / "out")
    meta = read_metadata(saved[0].path)
    assert meta.resources == expected
    assert f'Lora hashes: "ink: {expected.loras[0][1]}"' in meta.raw["parameters"]
