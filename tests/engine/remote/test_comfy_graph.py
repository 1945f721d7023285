"""A GenerationRequest as a stock ComfyUI graph: structure, refusals, names and node
signatures (read from ComfyUI's source with ``ast``, never imported)."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from desktop.engine import parts
from desktop.engine.errors import RequestError
from desktop.engine.parts import ControlUnit, ExpandSpec, HiresSpec, LoraRef, MaskSpec
from desktop.engine.remote import comfy_graph
from desktop.engine.remote.comfy_graph import (
    HANDLING,
    SAMPLER_NAMES,
    SCHEDULE_NAMES,
    UNAVAILABLE_SAMPLERS,
    build_graph,
    describe_seed_difference,
    match_name,
    prompt_chunks,
    unsupported,
)
from desktop.engine.request import GenerationRequest
from desktop.engine.samplers import SAMPLERS, SCHEDULES
from tests.helpers.comfy_server import comfy_dir

CHECKPOINT = "SD1.5\\dreamshaper_8.safetensors"


@dataclass(frozen=True)
class Models:
    """A stand-in for ``comfy_client.ServerModels`` (the fields the graph reads)."""

    checkpoints: tuple[str, ...] = (CHECKPOINT, "SDXL\\juggernautXL.safetensors")
    loras: tuple[str, ...] = ("styles/detail.safetensors", "add_light.safetensors")
    vaes: tuple[str, ...] = ("vae-ft-mse-840000.safetensors",)
    controlnets: tuple[str, ...] = (
        "control_v11p_sd15_canny.safetensors",
        "control_v11p_sd15_scribble.safetensors",
        "diffusers_xl_canny_full.safetensors",
        "control_v11f1p_sd15_depth.safetensors",
    )
    upscale_models: tuple[str, ...] = ("4x-UltraSharp.pth",)
    samplers: tuple[str, ...] = tuple(SAMPLER_NAMES.values())
    schedulers: tuple[str, ...] = ("normal", "karras", "exponential", "ddim_uniform", "sgm_uniform")


@dataclass(frozen=True)
class ModelsWithEmbeddings(Models):
    embeddings: tuple[str, ...] = ("easynegative", "sub/badhands")


class Uploads:
    """The ``upload`` callback: records what was sent, answers a server name."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def __call__(self, filename: str, data: bytes) -> str:
        self.files[filename] = data
        return f"server-{filename}"

    def image(self, server_name: str) -> Image.Image:
        image = Image.open(io.BytesIO(self.files[server_name.removeprefix("server-")]))
        image.load()
        return image


def request(**changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {"prompt": "a cat", "model": "dreamshaper_8", "seed": 42}
    values.update(changes)
    return GenerationRequest(**values)


def of_type(graph: dict, class_type: str) -> list[tuple[str, dict]]:
    return [(k, n["inputs"]) for k, n in graph.items() if n["class_type"] == class_type]


def one(graph: dict, class_type: str) -> tuple[str, dict]:
    found = of_type(graph, class_type)
    assert len(found) == 1, f"{len(found)} {class_type} nodes"
    return found[0]


def source(graph: dict, link: list) -> str:
    """The class of the node a link comes from."""
    return graph[link[0]]["class_type"]


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A 640×480 picture with a white square (edges for canny)."""
    pixels = np.full((480, 640, 3), 40, dtype=np.uint8)
    pixels[140:340, 220:420] = 230
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def mask(tmp_path: Path) -> Path:
    pixels = np.zeros((480, 640), dtype=np.uint8)
    pixels[200:260, 300:360] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(pixels, "L").save(path)
    return path


# -- names ----------------------------------------------------------------------------------
def test_every_sandstorm_sampler_and_schedule_is_mapped_or_refused() -> None:
    assert set(SAMPLER_NAMES) | UNAVAILABLE_SAMPLERS == set(SAMPLERS)
    assert not set(SAMPLER_NAMES) & UNAVAILABLE_SAMPLERS
    assert set(SCHEDULE_NAMES) == set(SCHEDULES)
    assert "PLMS" not in SAMPLER_NAMES
    assert SAMPLER_NAMES["Euler a"] == "euler_ancestral"
    assert SAMPLER_NAMES["DPM++ 2M"] == "dpmpp_2m"
    assert SCHEDULE_NAMES == {
        "Automatic": "normal",
        "Karras": "karras",
        "Exponential": "exponential",
    }


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("SD1.5\\dreamshaper_8.safetensors", CHECKPOINT),  # exact
        ("SD1.5/dreamshaper_8.safetensors", CHECKPOINT),  # other separator
        ("/x/models/checkpoints/dreamshaper_8.safetensors", CHECKPOINT),  # local path
        ("C:\\models\\dreamshaper_8.safetensors", CHECKPOINT),  # Windows local path
        ("dreamshaper_8.safetensors", CHECKPOINT),  # file name, server subfolder ignored
        ("DreamShaper_8.SAFETENSORS", CHECKPOINT),  # case
        ("dreamshaper_8", CHECKPOINT),  # stem
        ("DREAMSHAPER_8", CHECKPOINT),  # stem, case
        ("/x/dreamshaper_8.ckpt", CHECKPOINT),  # another suffix: same stem
        ("dreamshaper", None),
        ("", None),
        ("juggernautXL", "SDXL\\juggernautXL.safetensors"),
    ],
)
def test_match_name(wanted: str, expected: str | None) -> None:
    assert match_name(wanted, Models().checkpoints) == expected


def test_match_name_prefers_the_exact_file_and_the_named_subfolder() -> None:
    available = ["a/model.safetensors", "b/model.safetensors", "model.ckpt"]
    assert match_name("b/model.safetensors", available) == "b/model.safetensors"
    assert match_name("b\\model.safetensors", available) == "b/model.safetensors"
    assert match_name("model.ckpt", available) == "model.ckpt"
    assert match_name("model", available) == "a/model.safetensors"  # first by stem
    # A dot in a LoRA's name is not a suffix.
    assert match_name("detail_v1.5", ["detail_v1.5.safetensors"]) == "detail_v1.5.safetensors"


# -- text to image --------------------------------------------------------------------------
def test_txt2img_graph() -> None:
    req = request(
        prompt="a cat", negative_prompt="blurry", steps=25, cfg_scale=6.5, width=640, height=448
    )
    graph = build_graph(req, Models(), Uploads(), output_node="out")
    assert sorted(n["class_type"] for n in graph.values()) == sorted(
        [
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "PreviewImage",
        ]
    )
    ckpt, loader = one(graph, "CheckpointLoaderSimple")
    assert loader == {"ckpt_name": CHECKPOINT}
    _, latent = one(graph, "EmptyLatentImage")
    assert latent == {"width": 640, "height": 448, "batch_size": 1}
    _, sampler = one(graph, "KSampler")
    assert sampler["seed"] == 42 and sampler["steps"] == 25 and sampler["cfg"] == 6.5
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["denoise"]) == (
        "euler",
        "normal",
        1.0,
    )
    assert sampler["model"] == [ckpt, 0]
    assert graph[sampler["positive"][0]]["inputs"]["text"] == "a cat"
    assert graph[sampler["negative"][0]]["inputs"]["text"] == "blurry"
    assert graph[sampler["positive"][0]]["inputs"]["clip"] == [ckpt, 1]
    _, decode = one(graph, "VAEDecode")
    assert decode["vae"] == [ckpt, 2]
    assert graph["out"] == {"class_type": "PreviewImage", "inputs": {"images": decode_link(graph)}}
    json.dumps(graph)  # what POST /prompt sends


def decode_link(graph: dict) -> list:
    node, _ = one(graph, "VAEDecode")
    return [node, 0]


def test_batch_gets_one_sampler_per_image_with_seed_plus_index() -> None:
    graph = build_graph(request(batch_size=3, seed=7), Models(), Uploads(), "out")
    samplers = of_type(graph, "KSampler")
    assert [inputs["seed"] for _, inputs in samplers] == [7, 8, 9]
    _, latent = one(graph, "EmptyLatentImage")  # shared by the three samplers
    assert latent["batch_size"] == 1
    assert len(of_type(graph, "CLIPTextEncode")) == 2  # shared conditioning
    batches = of_type(graph, "ImageBatch")
    assert len(batches) == 2
    # The output holds the images in batch order.
    images = graph["out"]["inputs"]["images"]
    last = graph[images[0]]["inputs"]
    first = graph[last["image1"][0]]["inputs"]
    decoded = [first["image1"], first["image2"], last["image2"]]
    seeds = [graph[graph[d[0]]["inputs"]["samples"][0]]["inputs"]["seed"] for d in decoded]
    assert seeds == [7, 8, 9]


def test_vae_override() -> None:
    graph = build_graph(
        request(vae="/local/vae/vae-ft-mse-840000.safetensors"), Models(), Uploads()
    )
    vae_node, loader = one(graph, "VAELoader")
    assert loader == {"vae_name": "vae-ft-mse-840000.safetensors"}
    _, decode = one(graph, "VAEDecode")
    assert decode["vae"] == [vae_node, 0]


def test_clip_skip() -> None:
    graph = build_graph(request(clip_skip=2), Models(), Uploads())
    node, skip = one(graph, "CLIPSetLastLayer")
    assert skip["stop_at_clip_layer"] == -2
    for _, encode in of_type(graph, "CLIPTextEncode"):
        assert encode["clip"] == [node, 0]
    # Clip skip 1 is the model's own default: no node.
    assert not of_type(build_graph(request(clip_skip=1), Models(), Uploads()), "CLIPSetLastLayer")


def test_two_loras_with_separate_strengths() -> None:
    loras = (
        LoraRef("detail", unet_strength=0.8, text_strength=0.5),
        LoraRef("add_light", unet_strength=-0.3, text_strength=1.2),
    )
    graph = build_graph(request(loras=loras, clip_skip=2), Models(), Uploads())
    (first_id, first), (second_id, second) = of_type(graph, "LoraLoader")
    assert (first["lora_name"], first["strength_model"], first["strength_clip"]) == (
        "styles/detail.safetensors",
        0.8,
        0.5,
    )
    assert (second["lora_name"], second["strength_model"], second["strength_clip"]) == (
        "add_light.safetensors",
        -0.3,
        1.2,
    )
    assert source(graph, first["clip"]) == "CLIPSetLastLayer"
    assert second["model"] == [first_id, 0] and second["clip"] == [first_id, 1]
    _, sampler = one(graph, "KSampler")
    assert sampler["model"] == [second_id, 0]
    for _, encode in of_type(graph, "CLIPTextEncode"):
        assert encode["clip"] == [second_id, 1]


def test_lora_tags_in_the_prompt_are_applied_and_removed_from_the_text() -> None:
    graph = build_graph(request(prompt="a cat <lora:add_light:0.7:0.4>"), Models(), Uploads())
    _, lora = one(graph, "LoraLoader")
    assert (lora["strength_clip"], lora["strength_model"]) == (0.7, 0.4)
    texts = [inputs["text"] for _, inputs in of_type(graph, "CLIPTextEncode")]
    assert not any("lora" in text for text in texts)


# -- prompts --------------------------------------------------------------------------------
def test_prompt_weights_are_written_in_comfyui_syntax() -> None:
    assert prompt_chunks("(masterpiece:1.2), [blurry], ((sharp)), a \\(cat\\)") == [
        "(masterpiece:1.2), (blurry:0.9091), (sharp:1.21), a \\(cat\\)"
    ]


def test_break_becomes_conditioning_concat() -> None:
    graph = build_graph(request(prompt="a cat BREAK night sky BREAK stars"), Models(), Uploads())
    _, sampler = one(graph, "KSampler")
    outer = graph[sampler["positive"][0]]
    assert outer["class_type"] == "ConditioningConcat"
    inner = graph[outer["inputs"]["conditioning_to"][0]]
    assert inner["class_type"] == "ConditioningConcat"
    texts = [
        graph[inner["inputs"]["conditioning_to"][0]]["inputs"]["text"],
        graph[inner["inputs"]["conditioning_from"][0]]["inputs"]["text"],
        graph[outer["inputs"]["conditioning_from"][0]]["inputs"]["text"],
    ]
    assert [t.strip() for t in texts] == ["a cat", "night sky", "stars"]


def test_embeddings_become_comfyui_triggers_when_the_server_lists_them() -> None:
    chunks = prompt_chunks(
        "easynegative,(BadHands:1.2), easynegativeX", 1, ("easynegative", "sub/badhands")
    )
    assert chunks == ["embedding:easynegative,(embedding:sub/badhands:1.2), easynegativeX"]
    graph = build_graph(request(negative_prompt="easynegative"), ModelsWithEmbeddings(), Uploads())
    assert any(i["text"] == "embedding:easynegative" for _, i in of_type(graph, "CLIPTextEncode"))
    # Without the server's list, words stay words.
    assert prompt_chunks("easynegative") == ["easynegative"]


# -- samplers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("DDIM", "Automatic", ("ddim", "ddim_uniform")),
        ("LCM", "Automatic", ("lcm", "sgm_uniform")),
        ("DPM++ 2M", "Karras", ("dpmpp_2m", "karras")),
        ("Euler a", "Automatic", ("euler_ancestral", "normal")),
        ("UniPC", "Exponential", ("uni_pc", "exponential")),
    ],
)
def test_sampler_and_scheduler(sampler: str, schedule: str, expected: tuple[str, str]) -> None:
    graph = build_graph(request(sampler=sampler, schedule=schedule), Models(), Uploads())
    _, inputs = one(graph, "KSampler")
    assert (inputs["sampler_name"], inputs["scheduler"]) == expected


# -- images ---------------------------------------------------------------------------------
def test_img2img_uploads_the_fitted_init_image(picture: Path) -> None:
    uploads = Uploads()
    req = request(init_image=str(picture), strength=0.6, steps=20, width=512, height=512)
    graph = build_graph(req, Models(), uploads)
    _, load = one(graph, "LoadImage")
    sent = uploads.image(load["image"])
    assert sent.format == "PNG" and sent.size == (512, 512) and sent.mode == "RGB"
    assert len(uploads.files) == 1
    _, encode = one(graph, "VAEEncode")
    assert source(graph, encode["pixels"]) == "LoadImage"
    _, sampler = one(graph, "KSampler")
    assert sampler["denoise"] == 0.6
    assert sampler["steps"] == req.img2img_steps == 12  # the steps that run, as locally
    assert source(graph, sampler["latent_image"]) == "VAEEncode"
    assert not of_type(graph, "EmptyLatentImage")


def test_img2img_batch_shares_one_encoded_image(picture: Path) -> None:
    graph = build_graph(request(init_image=str(picture), batch_size=2), Models(), Uploads())
    (encode_id, _) = one(graph, "VAEEncode")
    assert [s["latent_image"] for _, s in of_type(graph, "KSampler")] == [[encode_id, 0]] * 2


def test_inpaint_with_mask(picture: Path, mask: Path) -> None:
    uploads = Uploads()
    spec = MaskSpec(image=str(mask), blur=6, padding=32, only_masked=True)
    req = request(init_image=str(picture), mask=spec, strength=0.8, width=512, height=512)
    graph = build_graph(req, Models(), uploads)
    _, noise_mask = one(graph, "SetLatentNoiseMask")
    assert source(graph, noise_mask["samples"]) == "VAEEncode"
    mask_inputs = graph[noise_mask["mask"][0]]["inputs"]
    assert graph[noise_mask["mask"][0]]["class_type"] == "LoadImageMask"
    assert mask_inputs["channel"] == "red"
    work_mask = uploads.image(mask_inputs["image"])
    assert work_mask.mode == "L" and work_mask.size == (512, 512)
    values = np.unique(np.asarray(work_mask))
    assert values.min() == 0 and values.max() == 255 and len(values) > 2  # feathered
    _, sampler = one(graph, "KSampler")
    assert sampler["latent_image"][0] == one(graph, "SetLatentNoiseMask")[0]
    assert sampler["denoise"] == 0.8
    # The repaint goes back onto the whole picture through the feathered mask.
    _, paste = one(graph, "ImageCompositeMasked")
    base = uploads.image(graph[paste["destination"][0]]["inputs"]["image"])
    assert base.size == (640, 480)
    blend = uploads.image(graph[paste["mask"][0]]["inputs"]["image"])
    _, scale = one(graph, "ImageScale")
    assert blend.size == (scale["width"], scale["height"])
    assert 0 <= paste["x"] <= 300 and 0 <= paste["y"] <= 200
    assert paste["x"] + scale["width"] >= 360 and paste["y"] + scale["height"] >= 260
    assert source(graph, graph[last_id(graph)]["inputs"]["images"]) == "ImageCompositeMasked"


def last_id(graph: dict) -> str:
    return next(k for k, n in graph.items() if n["class_type"] == "PreviewImage")


def test_inpaint_whole_picture_and_latent_nothing(picture: Path, mask: Path) -> None:
    spec = MaskSpec(image=str(mask), only_masked=False, mode="latent nothing")
    req = request(init_image=str(picture), mask=spec, width=640, height=480, batch_size=2)
    graph = build_graph(req, Models(), Uploads())
    _, composite = one(graph, "LatentCompositeMasked")
    assert source(graph, composite["destination"]) == "VAEEncode"
    assert source(graph, composite["source"]) == "EmptyLatentImage"
    assert not of_type(graph, "ImageScale")  # the work size is the picture's
    pastes = of_type(graph, "ImageCompositeMasked")
    assert len(pastes) == 2 and all((p["x"], p["y"]) == (0, 0) for _, p in pastes)
    assert len(of_type(graph, "LoadImage")) == 2  # the work image and the base, shared


def test_outpaint_grows_the_canvas(picture: Path) -> None:
    uploads = Uploads()
    req = request(init_image=str(picture), expand=ExpandSpec(right=128), width=768, height=480)
    graph = build_graph(req, Models(), uploads)
    _, paste = one(graph, "ImageCompositeMasked")
    assert uploads.image(graph[paste["destination"][0]]["inputs"]["image"]).size == (768, 480)
    assert one(graph, "SetLatentNoiseMask")


def test_two_control_units_are_chained(picture: Path, tmp_path: Path) -> None:
    uploads = Uploads()
    depth = tmp_path / "depth.png"
    Image.new("RGB", (256, 256), (90, 90, 90)).save(depth)
    units = (
        ControlUnit("canny", str(picture), strength=0.9, start=0.1, end=0.8),
        ControlUnit("control map", str(depth), model="control_v11f1p_sd15_depth", strength=0.5),
    )
    graph = build_graph(request(controls=units, width=512, height=384), Models(), uploads)
    (first_id, first), (second_id, second) = of_type(graph, "ControlNetApplyAdvanced")
    loaders = [graph[u["control_net"][0]]["inputs"]["control_net_name"] for u in (first, second)]
    assert loaders == [
        "control_v11p_sd15_canny.safetensors",
        "control_v11f1p_sd15_depth.safetensors",
    ]
    assert (first["strength"], first["start_percent"], first["end_percent"]) == (0.9, 0.1, 0.8)
    assert (second["strength"], second["start_percent"], second["end_percent"]) == (0.5, 0.0, 1.0)
    assert source(graph, first["positive"]) == "CLIPTextEncode"
    assert second["positive"] == [first_id, 0] and second["negative"] == [first_id, 1]
    _, sampler = one(graph, "KSampler")
    assert sampler["positive"] == [second_id, 0] and sampler["negative"] == [second_id, 1]
    canny = uploads.image(graph[first["image"][0]]["inputs"]["image"])
    assert canny.size == (512, 384)
    assert set(np.unique(np.asarray(canny))) <= {0, 255}  # preprocessed here: edges only
    assert np.asarray(canny).max() == 255
    fitted = uploads.image(graph[second["image"][0]]["inputs"]["image"])
    assert fitted.size == (512, 384)  # a control map is only fitted


def test_control_unit_without_model_takes_the_servers_one_of_its_type(picture: Path) -> None:
    graph = build_graph(
        request(controls=(ControlUnit("scribble", str(picture)),)), Models(), Uploads()
    )
    _, loader = one(graph, "ControlNetLoader")
    assert loader["control_net_name"] == "control_v11p_sd15_scribble.safetensors"
    # Two canny nets: the one for the checkpoint's kind (SD1.5 vs SDXL by name).
    graph = build_graph(
        request(model="juggernautXL", controls=(ControlUnit("canny", str(picture)),)),
        Models(),
        Uploads(),
    )
    assert one(graph, "ControlNetLoader")[1]["control_net_name"] == (
        "diffusers_xl_canny_full.safetensors"
    )


def test_hires_latent() -> None:
    hires = HiresSpec(scale=1.5, upscaler="Latent", steps=10, denoise=0.6)
    graph = build_graph(request(hires=hires, width=512, height=512), Models(), Uploads())
    _, upscale = one(graph, "LatentUpscale")
    assert (upscale["width"], upscale["height"], upscale["upscale_method"]) == (
        768,
        768,
        "bilinear",
    )
    first, second = (inputs for _, inputs in of_type(graph, "KSampler"))
    assert source(graph, second["latent_image"]) == "LatentUpscale"
    assert (second["steps"], second["denoise"], second["seed"]) == (6, 0.6, first["seed"])
    _, decode = one(graph, "VAEDecode")
    assert source(graph, decode["samples"]) == "KSampler"


def test_hires_with_an_upscale_model() -> None:
    hires = HiresSpec(scale=2.0, upscaler="4x-UltraSharp", denoise=0.4)
    graph = build_graph(request(hires=hires, batch_size=2), Models(), Uploads())
    _, loader = one(graph, "UpscaleModelLoader")  # shared by the batch
    assert loader["model_name"] == "4x-UltraSharp.pth"
    assert len(of_type(graph, "ImageUpscaleWithModel")) == 2
    scales = [inputs for _, inputs in of_type(graph, "ImageScale")]
    assert all((s["width"], s["height"]) == (1024, 1024) for s in scales)
    assert [s["steps"] for _, s in of_type(graph, "KSampler")] == [20, 8, 20, 8]


def test_hires_lanczos() -> None:
    graph = build_graph(request(hires=HiresSpec(upscaler="Lanczos")), Models(), Uploads())
    _, scale = one(graph, "ImageScale")
    assert scale["upscale_method"] == "lanczos" and source(graph, scale["image"]) == "VAEDecode"


# -- output node ----------------------------------------------------------------------------
def test_output_node_is_fresh_per_call() -> None:
    first = build_graph(request(), Models(), Uploads())
    second = build_graph(request(), Models(), Uploads())
    (a,), (b,) = ({last_id(first)}, {last_id(second)})
    assert a != b
    assert set(first) - {a} == set(second) - {b}  # otherwise the same graph
    assert "job1" in build_graph(request(), Models(), Uploads(), output_node="job1")
    with pytest.raises(ValueError, match="taken"):
        build_graph(request(), Models(), Uploads(), output_node="1")


def test_unresolved_seed_is_refused() -> None:
    with pytest.raises(RequestError, match="seed"):
        build_graph(request(seed=-1), Models(), Uploads())
    assert unsupported(request(seed=-1), Models()) == []  # the pool asks before resolving


# -- refusals -------------------------------------------------------------------------------
def _refusal_cases(picture: str) -> list[tuple[str, GenerationRequest, Any, str]]:
    lacking = dataclasses.replace(
        Models(), samplers=("euler",), schedulers=("normal", "sgm_uniform")
    )
    return [
        (
            "plms",
            request(sampler="PLMS"),
            Models(),
            "The sampler PLMS is not available on ComfyUI servers; pick another sampler.",
        ),
        (
            "sampler missing there",
            request(sampler="LCM"),
            lacking,
            "The sampler LCM (lcm) is not available on this server",
        ),
        (
            "schedule missing there",
            request(schedule="Karras"),
            lacking,
            "The schedule Karras (karras) is not available on this server",
        ),
        ("no model", request(model=""), Models(), "Sandstorm's built-in model is not on"),
        (
            "model missing",
            request(model="/m/realistic.safetensors"),
            Models(),
            "The model realistic is not on this server",
        ),
        ("vae missing", request(vae="kl-f8"), Models(), "The VAE kl-f8 is not on this server"),
        (
            "lora missing",
            request(loras=(LoraRef("nope"),)),
            Models(),
            "The LoRA nope is not on this server",
        ),
        (
            "lora tag missing",
            request(prompt="a <lora:gone:1>"),
            Models(),
            "The LoRA gone is not on this server",
        ),
        (
            "controlnet missing",
            request(controls=(ControlUnit("canny", picture, model="my_canny"),)),
            Models(),
            "Control layer 1: the ControlNet my_canny is not on this server",
        ),
        (
            "no controlnet of the type",
            request(controls=(ControlUnit("lineart", picture),)),
            Models(),
            "Control layer 1: no lineart ControlNet is on this server",
        ),
        (
            "inpaint control",
            request(controls=(ControlUnit("inpaint", picture),)),
            Models(),
            "the inpaint control type needs a preprocessor stock ComfyUI lacks",
        ),
        (
            "references",
            request(references=(parts.ReferenceImage(picture),)),
            Models(),
            "Reference images (IP-Adapter) need custom nodes on ComfyUI servers",
        ),
        (
            "latent noise",
            request(init_image=picture, mask=MaskSpec(picture, mode="latent noise")),
            Models(),
            "Masked content “latent noise” has no stock ComfyUI node",
        ),
        (
            "hires with init image",
            request(init_image=picture, hires=HiresSpec()),
            Models(),
            "Hires fix works on text to image only",
        ),
        (
            "hires upscaler missing",
            request(hires=HiresSpec(upscaler="SwinIR")),
            Models(),
            "The hires upscaler SwinIR is not on this server",
        ),
        (
            "hires runs no step",
            request(hires=HiresSpec(denoise=0.0)),
            Models(),
            "Hires fix at denoise 0 would run no step",
        ),
        (
            "prompt editing",
            request(prompt="a [cat:dog:0.5]"),
            Models(),
            "The prompt uses prompt editing or alternation",
        ),
        (
            "alternation",
            request(negative_prompt="[red|blue]"),
            Models(),
            "The negative prompt uses prompt editing or alternation",
        ),
        (
            "hypernetwork tag",
            request(prompt="a cat <hypernet:anime:1>"),
            Models(),
            "The prompt's tag <hypernet:anime:1> has no stock ComfyUI equivalent",
        ),
        (
            "embedding missing",
            request(prompt="embedding:missing_one"),
            ModelsWithEmbeddings(),
            "The embedding missing_one in the prompt is not on this server.",
        ),
    ]


def test_each_refusal_has_its_sentence_and_build_graph_raises(picture: Path) -> None:
    for name, req, models, sentence in _refusal_cases(str(picture)):
        problems = unsupported(req, models)
        assert len(problems) == 1, (name, problems)
        assert sentence in problems[0], (name, problems)
        assert problems[0].endswith("."), name
        with pytest.raises(RequestError) as caught:
            build_graph(req, models, Uploads())
        assert sentence in str(caught.value), name


def test_several_problems_are_all_named() -> None:
    req = request(sampler="PLMS", model="elsewhere", references=(parts.ReferenceImage("r.png"),))
    problems = unsupported(req, Models())
    assert len(problems) == 3
    with pytest.raises(RequestError) as caught:
        build_graph(req, Models(), Uploads())
    assert str(caught.value) == " ".join(problems)


def test_ambiguous_control_model_names_the_candidates(picture: Path) -> None:
    models = dataclasses.replace(
        Models(), controlnets=("canny_a.safetensors", "canny_b.safetensors")
    )
    (problem,) = unsupported(request(controls=(ControlUnit("canny", str(picture)),)), models)
    assert "several canny ControlNets" in problem and "canny_a.safetensors" in problem


def test_servers_without_sampler_lists_are_not_held_to_them() -> None:
    models = dataclasses.replace(Models(), samplers=(), schedulers=())
    assert unsupported(request(sampler="LCM"), models) == []


def test_every_request_setting_is_translated_or_refused() -> None:
    """A new field of GenerationRequest (or of one of its parts) must be handled in
    comfy_graph and listed in HANDLING, so no setting is ever dropped silently."""
    classes = [
        GenerationRequest,
        parts.LoraRef,
        parts.ControlUnit,
        parts.ReferenceImage,
        parts.MaskSpec,
        parts.ExpandSpec,
        parts.HiresSpec,
    ]
    names = [f.name for f in dataclasses.fields(GenerationRequest)]
    for cls in classes[1:]:
        names += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in HANDLING]
    assert not missing, f"comfy_graph.HANDLING does not say how these reach a server: {missing}"
    assert not set(HANDLING) - set(names), "HANDLING names fields that no longer exist"
    for name, how in HANDLING.items():
        assert how.split(":")[0] in ("translated", "refused", "ignored"), name
        assert len(how.split(":", 1)[1].strip()) > 5, f"{name}: say how or why"


def test_describe_seed_difference_is_one_sentence() -> None:
    text = describe_seed_difference()
    assert text.endswith(".") and text.count(". ") == 0
    assert "seed" in text and "ComfyUI" in text


# -- ComfyUI's own node signatures ----------------------------------------------------------
COMFY = comfy_dir()
#: The files the stock nodes used here are declared in (never imported: read with ast).
NODE_FILES = ("nodes.py", "comfy_extras/nodes_mask.py", "comfy_extras/nodes_upscale_model.py")


@dataclass
class InputSpec:
    type: str | None  # "LATENT", "INT", ... "COMBO" (a list of choices); None: not read
    choices: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class NodeSpec:
    required: dict[str, InputSpec]
    optional: dict[str, InputSpec]
    outputs: list[str | None]


def _constant(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _class_attrs(cls: ast.ClassDef) -> dict[str, ast.AST]:
    attrs: dict[str, ast.AST] = {}
    for item in cls.body:
        if isinstance(item, ast.Assign):
            for target in item.targets:
                if isinstance(target, ast.Name):
                    attrs[target.id] = item.value
    return attrs


def _input_spec(value: ast.AST, attrs: dict[str, ast.AST]) -> InputSpec:
    if not isinstance(value, ast.Tuple) or not value.elts:
        return InputSpec(None)
    head = value.elts[0]
    spec = InputSpec(None)
    if isinstance(head, ast.Constant) and isinstance(head.value, str):
        spec.type = head.value
    elif isinstance(head, ast.Attribute) and isinstance(head.value, ast.Name):
        if head.value.id == "IO":
            spec.type = head.attr  # IO.CLIP is "CLIP"
        elif head.value.id in ("s", "cls") and head.attr in attrs:
            spec = InputSpec("COMBO", _constant(attrs[head.attr]))
        else:
            spec.type = "COMBO"
    elif isinstance(head, ast.List):
        spec = InputSpec("COMBO", _constant(head))
    else:  # a call: folder listings, sorted(files), comfy.samplers lists
        spec.type = "COMBO"
    if len(value.elts) > 1 and isinstance(value.elts[1], ast.Dict):
        for key, item in zip(value.elts[1].keys, value.elts[1].values, strict=True):
            number = _constant(item)
            if isinstance(key, ast.Constant) and isinstance(number, (int, float)):
                if key.value == "min":
                    spec.minimum = number
                elif key.value == "max":
                    spec.maximum = number
    return spec


def _classic_node(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> NodeSpec | None:
    attrs = _class_attrs(cls)
    method = next(
        (f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "INPUT_TYPES"),
        None,
    )
    if method is None:
        return None
    returned = [n.value for n in ast.walk(method) if isinstance(n, ast.Return)][-1]
    assert isinstance(returned, ast.Dict)
    groups: dict[str, dict[str, InputSpec]] = {"required": {}, "optional": {}}
    for key, group in zip(returned.keys, returned.values, strict=True):
        name = _constant(key) if key is not None else None
        if name in groups and isinstance(group, ast.Dict):
            for input_key, value in zip(group.keys, group.values, strict=True):
                groups[name][_constant(input_key)] = _input_spec(value, attrs)
    outputs: list[str | None] = []
    current: ast.ClassDef | None = cls
    while current is not None:
        found = _class_attrs(current).get("RETURN_TYPES")
        if found is not None:
            assert isinstance(found, ast.Tuple)
            for item in found.elts:
                if isinstance(item, ast.Constant):
                    outputs.append(item.value)
                elif isinstance(item, ast.Attribute):
                    outputs.append(item.attr)
                else:
                    outputs.append(None)
            break
        bases = [b.id for b in current.bases if isinstance(b, ast.Name)]
        current = classes.get(bases[0]) if bases else None
    return NodeSpec(groups["required"], groups["optional"], outputs)


def _io_types(folder: Path) -> dict[str, str]:
    """``io.Image`` → "IMAGE": the ``@comfytype(io_type=...)`` classes of the v3 API."""
    tree = ast.parse((folder / "comfy_api/latest/_io.py").read_text(encoding="utf-8"))
    types = {}
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for decorator in cls.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "comfytype":
                for keyword in decorator.keywords:
                    if keyword.arg == "io_type":
                        types[cls.name] = _constant(keyword.value)
    return types


def _v3_nodes(tree: ast.Module, io_types: dict[str, str]) -> dict[str, NodeSpec]:
    """Nodes declared with ``io.Schema(node_id=..., inputs=[io.X.Input("name"), ...])``."""
    nodes = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "Schema"):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        spec = NodeSpec({}, {}, [])
        for item in getattr(keywords.get("inputs"), "elts", []):
            kind = io_types.get(item.func.value.attr)
            optional = any(k.arg == "optional" and _constant(k.value) for k in item.keywords)
            group = spec.optional if optional else spec.required
            group[_constant(item.args[0])] = InputSpec(kind)
        for item in getattr(keywords.get("outputs"), "elts", []):
            spec.outputs.append(io_types.get(item.func.value.attr))
        nodes[_constant(keywords["node_id"])] = spec
    return nodes


def comfy_nodes(folder: Path) -> dict[str, NodeSpec]:
    """Node name → its inputs and outputs, from NODE_CLASS_MAPPINGS and io.Schema."""
    io_types = _io_types(folder)
    nodes: dict[str, NodeSpec] = {}
    for relative in NODE_FILES:
        tree = ast.parse((folder / relative).read_text(encoding="utf-8"))
        classes = {c.name: c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}
        for assign in ast.walk(tree):
            if (
                isinstance(assign, ast.Assign)
                and getattr(assign.targets[0], "id", "") == "NODE_CLASS_MAPPINGS"
                and isinstance(assign.value, ast.Dict)
            ):
                for key, value in zip(assign.value.keys, assign.value.values, strict=True):
                    cls = classes.get(getattr(value, "id", ""))
                    spec = _classic_node(cls, classes) if cls is not None else None
                    if spec is not None:
                        nodes[_constant(key)] = spec
        nodes.update(_v3_nodes(tree, io_types))
    return nodes


def validate(graph: dict, nodes: dict[str, NodeSpec]) -> list[str]:
    """What ComfyUI's prompt validation would refuse in ``graph`` (by the source's
    declarations), plus nodes that no output needs."""
    errors = []
    for node_id, node in graph.items():
        spec = nodes.get(node["class_type"])
        if spec is None:
            errors.append(f"{node_id}: {node['class_type']} is not a stock node")
            continue
        inputs = node["inputs"]
        for name in spec.required:
            if name not in inputs:
                errors.append(f"{node_id} {node['class_type']}: required input {name} missing")
        for name, value in inputs.items():
            declared = spec.required.get(name) or spec.optional.get(name)
            if declared is None:
                errors.append(f"{node_id} {node['class_type']}: unknown input {name}")
                continue
            errors += _check_value(graph, nodes, f"{node_id}.{name}", declared, value)
    outputs = [k for k, n in graph.items() if n["class_type"] == "PreviewImage"]
    needed = set(outputs)
    stack = list(outputs)
    while stack:
        for value in graph[stack.pop()]["inputs"].values():
            if _is_link(value) and value[0] in graph and value[0] not in needed:
                needed.add(value[0])
                stack.append(value[0])
    errors += [f"{k}: no output needs it" for k in graph if k not in needed]
    return errors


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _check_value(
    graph: dict, nodes: dict[str, NodeSpec], where: str, declared: InputSpec, value: Any
) -> list[str]:
    if _is_link(value):
        if value[0] not in graph:
            return [f"{where}: links to missing node {value[0]}"]
        outputs = nodes[graph[value[0]]["class_type"]].outputs
        if value[1] >= len(outputs):
            return [f"{where}: output {value[1]} of {value[0]} does not exist"]
        if declared.type not in (None, "COMBO") and outputs[value[1]] not in (None, declared.type):
            return [f"{where}: gets {outputs[value[1]]}, wants {declared.type}"]
        return []
    if declared.type in ("LATENT", "IMAGE", "MASK", "CONDITIONING", "MODEL", "CLIP", "VAE"):
        return [f"{where}: wants a {declared.type} link, gets {value!r}"]
    if declared.type == "COMBO":
        if not isinstance(value, str) or not value:
            return [f"{where}: wants a choice, gets {value!r}"]
        if declared.choices is not None and value not in declared.choices:
            return [f"{where}: {value!r} is not one of {declared.choices}"]
    if declared.type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: wants a number, gets {value!r}"]
        if declared.type == "INT" and not isinstance(value, int):
            return [f"{where}: wants an integer, gets {value!r}"]
        if declared.minimum is not None and value < declared.minimum:
            return [f"{where}: {value} is below {declared.minimum}"]
        if declared.maximum is not None and value > declared.maximum:
            return [f"{where}: {value} is above {declared.maximum}"]
    if declared.type == "BOOLEAN" and not isinstance(value, bool):
        return [f"{where}: wants a boolean, gets {value!r}"]
    if declared.type == "STRING" and not isinstance(value, str):
        return [f"{where}: wants text, gets {value!r}"]
    return []


def _graphs(picture: Path, mask: Path) -> dict[str, Callable[[], dict]]:
    pic, msk = str(picture), str(mask)
    units = (
        ControlUnit("canny", pic, strength=1.5, start=0.2, end=0.9),
        ControlUnit("scribble", pic),
    )
    cases = {
        "txt2img": request(),
        "everything txt2img": request(
            prompt="(a:1.3) cat BREAK [b] <lora:detail:0.5>",
            negative_prompt="easynegative",
            vae="vae-ft-mse-840000",
            clip_skip=12,
            batch_size=3,
            loras=(LoraRef("add_light", -2, 3),),
            controls=units,
            sampler="DDIM",
        ),
        "img2img": request(init_image=pic, strength=0.35, batch_size=2, controls=units[:1]),
        "inpaint": request(init_image=pic, mask=MaskSpec(msk), batch_size=2, controls=units),
        "latent nothing": request(init_image=pic, mask=MaskSpec(msk, mode="latent nothing")),
        "outpaint": request(init_image=pic, expand=ExpandSpec(left=64, top=32), width=704),
        "hires latent": request(hires=HiresSpec(scale=4.0), width=4096, height=4096),
        "hires lanczos": request(hires=HiresSpec(upscaler="Lanczos", steps=30), batch_size=2),
        "hires model": request(hires=HiresSpec(upscaler="4x-UltraSharp"), batch_size=2),
    }
    return {
        name: (lambda req=req: build_graph(req, ModelsWithEmbeddings(), Uploads()))
        for name, req in cases.items()
    }


@pytest.mark.skipif(COMFY is None, reason="ComfyUI's source (../shared/peers/ComfyUI) is absent")
def test_graphs_fit_comfyuis_node_signatures(picture: Path, mask: Path) -> None:
    assert COMFY is not None
    nodes = comfy_nodes(COMFY)
    # The parse itself read what it should (a guard against a silently empty table).
    assert set(nodes["KSampler"].required) >= {"seed", "denoise", "latent_image"}
    assert nodes["ControlNetApplyAdvanced"].optional.keys() == {"vae"}
    assert nodes["LoadImageMask"].required["channel"].choices == ["alpha", "red", "green", "blue"]
    assert nodes["ImageUpscaleWithModel"].required["upscale_model"].type == "UPSCALE_MODEL"
    assert nodes["PreviewImage"].outputs == []
    for name, make in _graphs(picture, mask).items():
        graph = make()
        assert validate(graph, nodes) == [], name


@pytest.mark.skipif(COMFY is None, reason="ComfyUI's source (../shared/peers/ComfyUI) is absent")
def test_sampler_and_scheduler_names_exist_in_comfyui() -> None:
    assert COMFY is not None
    tree = ast.parse((COMFY / "comfy/samplers.py").read_text(encoding="utf-8"))
    samplers: list[str] = []
    schedulers: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target == "KSAMPLER_NAMES":
                samplers += _constant(node.value)
            elif target == "SAMPLER_NAMES" and isinstance(node.value, ast.BinOp):
                samplers += _constant(node.value.right)
            elif target == "SCHEDULER_HANDLERS" and isinstance(node.value, ast.Dict):
                schedulers += [_constant(k) for k in node.value.keys]
    assert "euler" in samplers and "ddim" in samplers and "normal" in schedulers
    assert set(SAMPLER_NAMES.values()) <= set(samplers)
    assert set(SCHEDULE_NAMES.values()) | set(comfy_graph.AUTOMATIC_SCHEDULERS.values()) <= set(
        schedulers
    )
