"""Metadata written into PNGs and read back from Sandstorm and foreign tools' images."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from desktop.engine.gallery import save_png_with_metadata
from desktop.engine.metadata import (
    decode_user_comment,
    format_number,
    format_parameters,
    map_a1111_sampler,
    map_comfy_sampler,
    map_invoke_scheduler,
    metadata_from_chunks,
    parse_parameters,
    read_metadata,
    workflow_to_prompt,
)
from desktop.engine.models import ModelInfo
from desktop.engine.parts import ControlUnit, HiresSpec, LoraRef, MaskSpec, ReferenceImage
from desktop.engine.request import GenerationRequest, request_fields
from desktop.engine.schema import FieldInfo


def _request(**changes) -> GenerationRequest:
    base = GenerationRequest(
        prompt="a castle on a hill, golden hour: dramatic\nsecond line (detailed:1.2)",
        negative_prompt="blurry, lowres",
        sampler="DPM++ 2M",
        schedule="Karras",
        steps=25,
        cfg_scale=7.5,
        seed=123456,
        width=512,
        height=768,
    )
    return base.replace(**changes)


def _png_with_text(chunks: dict[str, str], size: tuple[int, int] = (16, 16)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 80, 120)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


# -- writing ----------------------------------------------------------------------------------


def test_parameters_text_matches_a1111_layout() -> None:
    request = _request(vae="/models/vae/kl-f8, anime.safetensors")
    text = format_parameters(request, model_name="dream: shaper, v8", model_hash="0123456789")
    expected = (
        "a castle on a hill, golden hour: dramatic\n"
        "second line (detailed:1.2)\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 123456, "
        'Size: 512x768, Model hash: 0123456789, Model: "dream: shaper, v8", '
        'VAE: "kl-f8, anime.safetensors"'
    )
    assert text == expected


def test_parameters_text_without_negative_and_with_img2img() -> None:
    request = GenerationRequest(
        prompt="a fox",
        sampler="Euler a",
        cfg_scale=7.0,
        seed=5,
        init_image="/tmp/in.png",
        strength=0.55,
        model="/models/checkpoints/fox.safetensors",
    )
    text = format_parameters(request)
    assert text == (
        "a fox\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Model: fox, "
        "Denoising strength: 0.55"
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(7.0, "7"), (7.5, "7.5"), (7, "7"), (0.3, "0.3"), (12.25, "12.25")]
)
def test_numbers_are_formatted_like_a1111(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_round_trip_through_png(tmp_path: Path) -> None:
    request = _request(init_image="/inputs/photo.png", strength=0.6, vae="ema.safetensors")
    model_file = tmp_path / "dreamshaper_8.safetensors"
    model_file.write_bytes(b"not really a model, but it hashes")
    model = ModelInfo("dreamshaper_8", model_file, "safetensors", "sd1")
    path = save_png_with_metadata(
        Image.new("RGB", (64, 96), "red"), request, tmp_path / "a.png", model
    )

    meta = read_metadata(path)
    assert meta.source == "sandstorm"
    assert meta.request == request
    assert meta.model_name == "dreamshaper_8"
    assert len(meta.model_hash) == 10
    assert meta.error == ""

    # Strip our chunk: the AUTOMATIC1111 infotext alone must give the same settings. It cannot
    # carry the init image's path, and it names the model by its display name.
    with Image.open(path) as image:
        parameters = image.info["parameters"]
    stripped = tmp_path / "stripped.png"
    stripped.write_bytes(_png_with_text({"parameters": parameters}))
    foreign = read_metadata(stripped)
    assert foreign.source == "a1111"
    assert foreign.request == request.replace(model="dreamshaper_8", init_image=None)
    assert foreign.model_hash == meta.model_hash
    assert foreign.extras == {}


def test_round_trip_of_unicode_prompt_in_itxt(tmp_path: Path) -> None:
    request = _request(prompt="東京の夜景, ネオン: 雨", negative_prompt="")
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), request, tmp_path / "u.png")
    assert read_metadata(path).request == request
    with Image.open(path) as image:
        stripped = _png_with_text({"parameters": image.info["parameters"]})
    assert read_metadata(stripped).request == request


# -- derived from the declarations ------------------------------------------------------------

_INFOTEXT_FIELDS = [
    info for info in request_fields() if info.spec.infotext and info.kind not in ("part", "parts")
]
# init_image makes strength relevant (so it is written); seed and batch size leave room.
_BASE = GenerationRequest(prompt="a quiet harbour", seed=1000, init_image="/inputs/a.png")


def _other_value(info: FieldInfo) -> object:
    """A valid value of a setting other than its default (within limits, on its step)."""
    default = info.default
    if info.kind in ("int", "float"):
        step = info.spec.step or 1
        value = default + step
        if info.spec.maximum is not None and value > info.spec.maximum:
            value = default - step
        return int(value) if info.kind == "int" else float(value)
    if info.kind == "bool":
        return not default
    allowed = info.spec.allowed()
    if allowed is None:
        return "other-value"
    for choice in allowed:
        if choice == default:
            continue
        try:
            _BASE.replace(**{info.name: choice})
        except Exception:  # e.g. a schedule the default sampler does not support
            continue
        return choice
    raise AssertionError(f"no other valid value for {info.name}")


def test_infotext_fields_are_declared() -> None:
    names = [info.name for info in _INFOTEXT_FIELDS]
    assert names[:4] == ["steps", "sampler", "schedule", "cfg_scale"]
    assert {"seed", "width", "height", "model", "vae", "strength", "batch_size"} <= set(names)


@pytest.mark.parametrize("info", _INFOTEXT_FIELDS, ids=lambda info: info.name)
def test_every_infotext_setting_is_written_and_read_back(info: FieldInfo) -> None:
    value = _other_value(info)
    assert value != info.default
    request = _BASE.replace(**{info.name: value})
    text = format_parameters(request)
    assert f"{info.spec.infotext}: " in text.splitlines()[-1]

    meta = metadata_from_chunks({"parameters": text})
    assert meta.source == "a1111"
    assert meta.extras == {}
    assert meta.request is not None
    assert getattr(meta.request, info.name) == value
    # Everything else the infotext holds came back unchanged too.
    for other in _INFOTEXT_FIELDS:
        assert getattr(meta.request, other.name) == getattr(request, other.name), other.name


def test_infotext_leaves_out_defaults_and_irrelevant_values() -> None:
    text = format_parameters(GenerationRequest(prompt="p", strength=0.3, seed=4))
    assert text == "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 4, Size: 512x512"
    text = format_parameters(
        GenerationRequest(prompt="p", seed=4, batch_size=3, schedule="Exponential")
    )
    assert "Schedule type: Exponential, " in text
    assert text.endswith("Size: 512x512, Batch size: 3")


def test_loras_and_hires_round_trip_through_the_infotext_alone() -> None:
    request = _request(
        loras=(LoraRef("add_detail", 0.8, 0.8), LoraRef("film grain", 1.0, 0.5)),
        hires=HiresSpec(scale=1.5, upscaler="Lanczos", steps=12, denoise=0.35),
    )
    text = format_parameters(request, model_hash="abcdef0123")
    first, second = text.split("\nNegative prompt:")[0].splitlines()
    assert first == "a castle on a hill, golden hour: dramatic"
    assert second == "second line (detailed:1.2) <lora:add_detail:0.8> <lora:film grain:0.5:1>"
    assert text.endswith(
        "Model hash: abcdef0123, Hires upscale: 1.5, Hires steps: 12, Hires upscaler: Lanczos, "
        "Denoising strength: 0.35"
    )
    meta = metadata_from_chunks({"parameters": text})
    assert meta.request == request
    assert (meta.model_hash, meta.extras) == ("abcdef0123", {})


def test_lora_tags_alone_make_the_prompt_line() -> None:
    request = GenerationRequest(prompt="", seed=1, loras=(LoraRef("x", 2.0, 2.0),))
    text = format_parameters(request)
    assert text.startswith("<lora:x:2>\nSteps: 20")
    assert metadata_from_chunks({"parameters": text}).request == request


def test_unusable_lora_tags_stay_in_the_prompt() -> None:
    meta = metadata_from_chunks(
        {"parameters": "cat <lora:a:0.5> <lora:b:lots>\nSteps: 5, Sampler: Euler, Seed: 2"}
    )
    assert meta.request is not None
    assert meta.request.prompt == "cat <lora:b:lots>"
    assert meta.request.loras == (LoraRef("a", 0.5, 0.5),)
    assert list(meta.extras) == ["LoRA tags"]


def _all_parts_request() -> GenerationRequest:
    return _request(
        init_image="/inputs/photo.png",
        strength=0.7,
        loras=(LoraRef("add_detail", unet_strength=0.6, text_strength=0.9),),
        controls=(
            ControlUnit("canny", "/inputs/edges.png", strength=0.8, start=0.1, end=0.9),
            ControlUnit("tile", "/inputs/tile.png", model="control_v11f1e_sd15_tile"),
        ),
        references=(ReferenceImage("/inputs/face.png", weight=0.5, model="ip-adapter_sd15"),),
        mask=MaskSpec("/inputs/mask.png", blur=8, mode="fill", padding=16, only_masked=False),
        hires=HiresSpec(scale=2.0, upscaler="Latent", steps=10, denoise=0.5),
    )


def test_all_parts_round_trip_through_the_sandstorm_chunk(tmp_path: Path) -> None:
    request = _all_parts_request()
    assert len(request.used_parts()) == 5
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), request, tmp_path / "parts.png")
    meta = read_metadata(path)
    assert meta.source == "sandstorm"
    assert meta.request == request


def test_parts_without_image_paths_stay_in_extras_from_the_infotext() -> None:
    request = _all_parts_request()
    text = format_parameters(request)
    line = text.splitlines()[-1]
    assert (
        'ControlNet 0: "Module: canny, Model: None, Weight: 0.8, Resize Mode: Crop and Resize, '
        "Guidance Start: 0.1, "
    ) in line
    assert 'IP-Adapter 0: "Model: ip-adapter_sd15, Weight: 0.5"' in line
    assert "Mask blur: 8, Masked content: fill, Inpaint area: Whole picture, " in line
    # img2img: "Denoising strength" is the img2img strength, written once.
    assert line.count("Denoising strength") == 1

    meta = metadata_from_chunks({"parameters": text})
    read = meta.request
    assert read is not None
    assert read.loras == request.loras
    assert (read.controls, read.references, read.mask) == ((), (), None)
    assert read.hires is not None and read.hires.scale == 2.0
    assert meta.extras["ControlNet 1"] == (
        "Module: tile, Model: control_v11f1e_sd15_tile, Weight: 1, "
        "Resize Mode: Crop and Resize, Guidance Start: 0, Guidance End: 1"
    )
    assert meta.extras["IP-Adapter 0"] == "Model: ip-adapter_sd15, Weight: 0.5"
    assert meta.extras["Masked content"] == "fill"


@pytest.mark.parametrize(
    ("pair", "extras"),
    [
        ("Batch size: 99", {"Batch size": "99"}),
        ("Batch size: two", {"Batch size": "two"}),
        ("Denoising strength: nan", {"Denoising strength": "nan"}),
        ("Steps: 1e999", {"Steps": "1e999"}),
        ("Hires upscale: 2, Hires steps: 1e999", {"Hires upscale": "2", "Hires steps": "1e999"}),
    ],
)
def test_unusable_values_are_kept_in_extras(pair: str, extras: dict[str, str]) -> None:
    meta = metadata_from_chunks({"parameters": f"x\nSampler: Euler, Seed: 3, {pair}"})
    assert meta.request is not None
    assert meta.extras == extras
    if "Batch size: 99" in pair:
        assert meta.request.batch_size == 16  # clamped to the declared maximum


# -- AUTOMATIC1111 ----------------------------------------------------------------------------

A1111_FULL = (
    "masterpiece, (best quality:1.2), a castle\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 987654321, Size: 768x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", '
    "Version: v1.6.0"
)


def test_a1111_with_negative_and_extras() -> None:
    meta = read_metadata(_png_with_text({"parameters": A1111_FULL}))
    assert meta.source == "a1111"
    request = meta.request
    assert request is not None
    assert request.prompt == "masterpiece, (best quality:1.2), a castle"
    assert request.negative_prompt == "lowres, bad anatomy"
    assert (request.sampler, request.schedule) == ("DPM++ 2M", "Karras")
    assert (request.steps, request.cfg_scale, request.seed) == (28, 6.5, 987654321)
    assert (request.width, request.height) == (768, 512)
    assert request.model == "v1-5-pruned-emaonly"
    # A txt2img infotext's "Denoising strength" is the hires pass's denoise.
    assert request.hires == HiresSpec(scale=2.0, upscaler="Latent", denoise=0.45)
    assert request.strength == GenerationRequest(prompt="").strength
    assert (meta.model_name, meta.model_hash) == ("v1-5-pruned-emaonly", "6ce0161689")
    assert meta.extras == {"Version": "v1.6.0"}
    assert meta.resources.loras == (("add_detail", "7c6bad76eb54"),)


def test_a1111_without_negative_new_style_schedule() -> None:
    text = (
        "a photo of a cat\n"
        "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, Seed: 7, "
        "Size: 1024x1024, Model: sdxl_base"
    )
    meta = read_metadata(_png_with_text({"parameters": text}))
    assert meta.request == GenerationRequest(
        prompt="a photo of a cat",
        sampler="Euler a",
        steps=30,
        cfg_scale=5.0,
        seed=7,
        width=1024,
        height=1024,
        model="sdxl_base",
    )
    assert meta.extras == {}


def test_a1111_out_of_range_values_are_clamped_and_kept() -> None:
    text = (
        "x\nSteps: 500, Sampler: DPM++ 3M SDE, Schedule type: Align Your Steps, CFG scale: 45, "
        "Seed: 99999999999, Size: 515x9000"
    )
    meta = read_metadata(_png_with_text({"parameters": text}))
    request = meta.request
    assert request is not None
    assert (request.steps, request.cfg_scale, request.seed) == (150, 30.0, -1)
    assert (request.width, request.height) == (512, 4096)
    assert request.sampler == "Euler"  # the default: DPM++ 3M SDE is not available
    assert meta.extras == {
        "Steps": "500",
        "CFG scale": "45",
        "Seed": "99999999999",
        "Size": "515x9000",
        "Sampler": "DPM++ 3M SDE",
        "Schedule type": "Align Your Steps",
    }


def test_parse_parameters_keeps_plain_prompts_and_quoted_values() -> None:
    assert parse_parameters("just a prompt, nothing else") is None
    meta = metadata_from_chunks({"parameters": "just a prompt, nothing else"})
    assert meta.request is not None
    assert meta.request.prompt == "just a prompt, nothing else"
    prompt, negative, params = parse_parameters(
        'p\nNegative prompt: n1\nn2\nSteps: 3, Sampler: Euler, Note: "a, \\"b\\": c", Seed: 1'
    )
    assert (prompt, negative) == ("p", "n1\nn2")
    assert params["Note"] == 'a, "b": c'


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
        ("euler a", ("Euler a", None)),
        ("LMS Karras", ("LMS", "Karras")),
        ("DPM adaptive", (None, None)),
    ],
)
def test_a1111_sampler_names(name: str, expected: tuple) -> None:
    assert map_a1111_sampler(name) == expected


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("dpmpp_2m", "karras", ("DPM++ 2M", "Karras")),
        ("euler_ancestral", "normal", ("Euler a", "Automatic")),
        ("dpmpp_2m_sde_gpu", "exponential", ("DPM++ 2M SDE", "Exponential")),
        ("uni_pc", "sgm_uniform", ("UniPC", None)),
        ("res_multistep", "normal", (None, "Automatic")),
    ],
)
def test_comfy_sampler_names(sampler: str, scheduler: str, expected: tuple) -> None:
    assert map_comfy_sampler(sampler, scheduler) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dpmpp_2m_k", ("DPM++ 2M", "Karras")),
        ("euler_a", ("Euler a", "Automatic")),
        ("unipc", ("UniPC", "Automatic")),
        ("kdpm_2_a", ("DPM2 a", "Automatic")),
        ("tcd", (None, None)),
    ],
)
def test_invoke_scheduler_names(name: str, expected: tuple) -> None:
    assert map_invoke_scheduler(name) == expected


# -- EXIF UserComment (JPEG / WebP) -----------------------------------------------------------


def _with_user_comment(fmt: str, comment: bytes) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def test_jpeg_with_unicode_user_comment() -> None:
    text = (
        "a lake, misty\nNegative prompt: people\n"
        "Steps: 12, Sampler: DDIM, CFG scale: 4, Seed: 77, Size: 640x448"
    )
    data = _with_user_comment("JPEG", b"UNICODE\0" + text.encode("utf-16-be"))
    meta = read_metadata(data)
    assert meta.source == "a1111"
    assert meta.request == GenerationRequest(
        prompt="a lake, misty",
        negative_prompt="people",
        sampler="DDIM",
        steps=12,
        cfg_scale=4.0,
        seed=77,
        width=640,
        height=448,
    )
    assert meta.raw["UserComment"] == text


def test_webp_with_little_endian_user_comment() -> None:
    text = "night city\nSteps: 8, Sampler: LCM, CFG scale: 1.5, Seed: 3, Size: 512x512"
    data = _with_user_comment("WEBP", b"UNICODE\0" + text.encode("utf-16-le"))
    meta = read_metadata(data)
    assert meta.request is not None
    assert (meta.request.prompt, meta.request.sampler, meta.request.cfg_scale) == (
        "night city",
        "LCM",
        1.5,
    )


def test_user_comment_prefixes() -> None:
    assert decode_user_comment(b"ASCII\0\0\0hello") == "hello"
    assert decode_user_comment(b"\0" * 8 + "héllo".encode()) == "héllo"
    assert decode_user_comment(b"UNICODE\0" + "\ufeffhi".encode("utf-16-le")) == "hi"
    assert decode_user_comment(b"raw text without prefix") == "raw text without prefix"


# -- ComfyUI ----------------------------------------------------------------------------------

COMFY_GRAPH = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 22,
            "cfg": 6.5,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 1,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd15\\v1-5-pruned-emaonly.safetensors"},
    },
    "10": {
        "class_type": "LoraLoader",
        "inputs": {"lora_name": "detail.safetensors", "model": ["4", 0], "clip": ["4", 1]},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 640, "batch_size": 1},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["12", 0], "clip": ["10", 1]}},
    "12": {"class_type": "PrimitiveString", "inputs": {"value": "beautiful scenery, mountains"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["10", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
}


def test_comfyui_api_graph() -> None:
    data = _png_with_text({"prompt": json.dumps(COMFY_GRAPH), "workflow": "{}"})
    meta = read_metadata(data)
    assert meta.source == "comfyui"
    assert meta.request == GenerationRequest(
        prompt="beautiful scenery, mountains",
        negative_prompt="text, watermark",
        sampler="DPM++ 2M",
        schedule="Karras",
        steps=22,
        cfg_scale=6.5,
        seed=42,
        width=512,
        height=640,
        model="v1-5-pruned-emaonly",
    )
    assert meta.model_name == "v1-5-pruned-emaonly"


def test_comfyui_advanced_sampler_with_foreign_values() -> None:
    graph = json.loads(json.dumps(COMFY_GRAPH))
    graph["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "enable",
            "noise_seed": 156680208700286,
            "steps": 30,
            "cfg": 8,
            "sampler_name": "euler_ancestral",
            "scheduler": "karras",
            "start_at_step": 0,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    }
    meta = metadata_from_chunks({"prompt": json.dumps(graph)})
    request = meta.request
    assert request is not None
    # Euler a has no Karras schedule and the seed is out of range: both kept in extras.
    assert (request.sampler, request.schedule, request.seed) == ("Euler a", "Automatic", -1)
    assert meta.extras["Schedule type"] == "Karras"
    assert meta.extras["noise_seed"] == 156680208700286
    assert meta.extras["end_at_step"] == 10000


def test_comfyui_workflow_only() -> None:
    workflow = {
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "inputs": [
                    {"name": "model", "link": 1},
                    {"name": "positive", "link": 4},
                    {"name": "negative", "link": 6},
                    {"name": "latent_image", "link": 2},
                ],
                "widgets_values": [1234, "randomize", 18, 5.5, "euler", "normal", 1],
            },
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["dream.safetensors"]},
            {"id": 5, "type": "EmptyLatentImage", "widgets_values": [768, 768, 1]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a red bicycle"]},
            {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["ugly"]},
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
        ],
    }
    assert workflow_to_prompt(workflow)["3"]["inputs"]["steps"] == 18
    meta = metadata_from_chunks({"workflow": json.dumps(workflow)})
    assert meta.source == "comfyui"
    assert meta.request == GenerationRequest(
        prompt="a red bicycle",
        negative_prompt="ugly",
        sampler="Euler",
        steps=18,
        cfg_scale=5.5,
        seed=1234,
        width=768,
        height=768,
        model="dream",
    )


def test_comfyui_graph_without_sampler_is_reported() -> None:
    meta = metadata_from_chunks({"prompt": json.dumps({"1": {"class_type": "SaveImage"}})})
    assert meta.source == "comfyui"
    assert meta.request is None
    assert "KSampler" in meta.extras["error"]


# -- InvokeAI ---------------------------------------------------------------------------------


def test_invokeai_metadata() -> None:
    data = {
        "generation_mode": "sdxl_txt2img",
        "positive_prompt": "a fox in the snow",
        "negative_prompt": "cartoon",
        "width": 1024,
        "height": 1024,
        "seed": 2_000_000_000,
        "rand_device": "cpu",
        "cfg_scale": 7.5,
        "steps": 30,
        "scheduler": "dpmpp_2m_k",
        "model": {"key": "abc", "hash": "blake3:ffff", "name": "juggernautXL", "base": "sdxl"},
    }
    meta = read_metadata(_png_with_text({"invokeai_metadata": json.dumps(data)}))
    assert meta.source == "invokeai"
    assert meta.request == GenerationRequest(
        prompt="a fox in the snow",
        negative_prompt="cartoon",
        sampler="DPM++ 2M",
        schedule="Karras",
        steps=30,
        cfg_scale=7.5,
        seed=2_000_000_000,
        width=1024,
        height=1024,
        model="juggernautXL",
    )
    assert (meta.model_name, meta.model_hash) == ("juggernautXL", "blake3:ffff")
    assert meta.extras == {"generation_mode": "sdxl_txt2img", "rand_device": "cpu"}


def test_fooocus_json_parameters() -> None:
    data = {
        "prompt": "a lighthouse",
        "negative_prompt": "",
        "steps": 30,
        "guidance_scale": 4,
        "seed": "12345",
        "resolution": "(896, 1152)",
        "sampler": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "base_model": "juggernautXL_v8Rundiffusion",
        "styles": "['Fooocus V2']",
    }
    meta = metadata_from_chunks({"parameters": json.dumps(data)})
    assert meta.request == GenerationRequest(
        prompt="a lighthouse",
        sampler="DPM++ 2M SDE",
        schedule="Karras",
        steps=30,
        cfg_scale=4.0,
        seed=12345,
        width=896,
        height=1152,
        model="juggernautXL_v8Rundiffusion",
    )
    assert meta.extras == {"styles": "['Fooocus V2']"}


# -- robustness -------------------------------------------------------------------------------


def test_image_without_metadata() -> None:
    meta = read_metadata(_png_with_text({}))
    assert (meta.source, meta.request, meta.error) == ("none", None, "")


def test_non_image_and_truncated_files(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not a picture")
    meta = read_metadata(text_file)
    assert meta.source == "none"
    assert meta.error

    full = _png_with_text({"parameters": A1111_FULL}, size=(64, 64))
    truncated = read_metadata(full[:60])
    assert truncated.source == "none"
    assert truncated.error

    missing = read_metadata(tmp_path / "missing.png")
    assert missing.error


def test_broken_sandstorm_chunk_falls_back_to_parameters() -> None:
    meta = metadata_from_chunks(
        {"sandstorm": '{"version": 1, "request": {"prompt": 5}}', "parameters": A1111_FULL}
    )
    assert meta.source == "a1111"
    assert meta.request is not None
    assert "sandstorm chunk unreadable" in meta.extras["problems"][0]
    newer = metadata_from_chunks({"sandstorm": '{"version": 99, "request": {"prompt": "x"}}'})
    assert newer.source == "none"


def test_text_chunk_after_image_data_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some tools write their text chunk after IDAT; PIL only sees it once the image is loaded,
    # but the reader finds it without decoding a pixel.
    data = _png_with_text({})
    iend = data.rindex(b"IEND") - 4
    body = b"parameters\0" + b"late prompt\nSteps: 4, Sampler: Euler, Seed: 9"
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body))
    path = tmp_path / "late.png"
    path.write_bytes(data[:iend] + chunk + data[iend:])

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    meta = read_metadata(path)
    assert meta.request is not None
    assert (meta.request.prompt, meta.request.steps, meta.request.seed) == ("late prompt", 4, 9)


def test_huge_image_metadata_is_read_without_decoding() -> None:
    # 30000x30000 is past PIL's bomb limit; the text chunks are still readable.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    text = b"parameters\0big\nSteps: 5, Sampler: Heun, Seed: 8, Size: 1024x1024"

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    start = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data = start + chunk(b"tEXt", text) + chunk(b"IEND", b"")
    meta = read_metadata(data)
    assert meta.request is not None
    assert (meta.request.prompt, meta.request.sampler, meta.request.steps) == ("big", "Heun", 5)
    assert read_metadata(start + chunk(b"IEND", b"")).error == (
        "the image is too large to open safely"
    )


def test_hostile_long_lines_parse_in_linear_time() -> None:
    # A1111's own regex is quadratic on these; each must finish at once here.
    for text in (":" * 2_000_000, "a: " + '"' + "x" * 2_000_000, "k:," * 1_000_000):
        meta = metadata_from_chunks({"parameters": text})
        assert meta.source == "a1111"


def test_read_from_an_open_pil_image(tmp_path: Path) -> None:
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), _request(), tmp_path / "open.png")
    with Image.open(path) as image:
        image.load()
        assert read_metadata(image).request == _request()
    assert read_metadata(Image.new("RGB", (4, 4))).source == "none"
