"""Reference images: IP-Adapters and image encoders found, classified, loaded and run.

The tiny image encoder is a ``CLIPVisionModelWithProjection`` (hidden 32, 2 layers,
projection 32, 32x32 images in 8x8 patches) saved as one ``.safetensors`` file without a
config, as ComfyUI keeps them; its config folder is handed to the library, which picks it
by the file's shapes. The tiny adapters have an image projection to 4 tokens and a
``to_k_ip``/``to_v_ip`` pair for every cross-attention layer of the tiny model's UNet,
numbered as in the real files (1, 3, 5 ...). Real-size files are written as headers only:
classification never reads a tensor.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.engine import paths
from desktop.engine.errors import ImageError, ModelError
from desktop.engine.ip_adapter import (
    FULL,
    PLAIN,
    PLUS,
    ReferenceLibrary,
    classify_adapter,
    describe_adapter,
    describe_encoder,
    list_adapters,
    list_encoders,
    suggest_adapter,
    suggest_encoder,
)
from desktop.engine.metadata import format_parameters
from desktop.engine.parts import ReferenceImage
from desktop.engine.progress import RecordingProgress
from desktop.engine.request import GenerationRequest
from tests.helpers.tiny_ip_adapter import (
    adapter_shapes,
    encoder_shapes,
    header_only_file,
    tiny_adapter,
    tiny_encoder,
    write_encoder_config,
)


def _folder(kind: str) -> Path:
    folder = paths.user_models_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _no_models_left():
    yield
    for kind in ("ipadapter", "clip_vision"):
        shutil.rmtree(paths.user_models_dir() / kind, ignore_errors=True)


# -- tiny models -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_config(tmp_path_factory) -> Path:
    """The tiny encoder's config folder (what the shipped vit-h / vit-bigg ones are)."""
    return write_encoder_config(tmp_path_factory.mktemp("clip_vision") / "tiny")


def _reference_image(path: Path, seed: int = 5, colour: tuple[int, int, int] | None = None) -> str:
    if colour is not None:
        Image.new("RGB", (48, 40), colour).save(path)
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
    return str(path)


# -- classification ----------------------------------------------------------------------------
def test_adapters_are_classified_from_their_header(tmp_path):
    sd15 = describe_adapter(
        header_only_file(tmp_path / "ip-adapter_sd15.safetensors", adapter_shapes(768, 1024))
    )
    assert (sd15.family, sd15.context_width, sd15.kind, sd15.encoder_width, sd15.problem) == (
        "sd1",
        768,
        PLAIN,
        1024,
        "",
    )
    assert sd15.needs() == "the ViT-H image encoder (CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors)"
    xl_h = describe_adapter(
        header_only_file(tmp_path / "ip-adapter_sdxl_vit-h.safetensors", adapter_shapes(2048, 1024))
    )
    assert (xl_h.family, xl_h.kind, xl_h.known_encoder().label) == ("sdxl", PLAIN, "ViT-H")
    xl_g = describe_adapter(
        header_only_file(tmp_path / "ip-adapter_sdxl.safetensors", adapter_shapes(2048, 1280))
    )
    assert (xl_g.family, xl_g.known_encoder().label) == ("sdxl", "ViT-bigG")
    plus = describe_adapter(
        header_only_file(
            tmp_path / "ip-adapter-plus_sd15.safetensors", adapter_shapes(768, 1280, PLUS)
        )
    )
    assert (plus.kind, plus.encoder_width, plus.known_encoder().label) == (PLUS, 1280, "ViT-H")
    full = {
        **adapter_shapes(768, 0, FULL),
        "image_proj.proj.0.weight": (1280, 1280),
        "image_proj.proj.2.weight": (768, 1280),
        "image_proj.proj.3.weight": (768,),
    }
    assert classify_adapter(full) == (768, FULL, 1280, "")
    faceid = {**adapter_shapes(768, 512), "ip_adapter.1.to_k_lora.down.weight": (128, 320)}
    assert "FaceID" in classify_adapter(faceid)[3]
    encoder = header_only_file(tmp_path / "clip.safetensors", encoder_shapes(1280, 32, 1024))
    assert "put it in models/clip_vision" in describe_adapter(encoder).problem
    pickle = tmp_path / "ip-adapter_sd15.bin"
    pickle.write_bytes(b"\x80\x04")
    assert "pickles" in describe_adapter(pickle).problem
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "ip-adapter_sd15.safetensors").read_bytes()[:40])
    assert describe_adapter(cut).problem.startswith("the file is damaged")


def test_encoders_are_classified_from_their_header_and_get_the_shipped_config(tmp_path):
    vit_h = describe_encoder(
        header_only_file(tmp_path / "vit-h.safetensors", encoder_shapes(1280, 32, 1024))
    )
    assert (vit_h.label, vit_h.hidden_size, vit_h.layers, vit_h.projection_dim) == (
        "ViT-H",
        1280,
        32,
        1024,
    )
    assert (vit_h.patch_size, vit_h.image_size, vit_h.intermediate_size) == (14, 224, 5120)
    big_g = describe_encoder(
        header_only_file(tmp_path / "big-g.safetensors", encoder_shapes(1664, 48, 1280))
    )
    assert (big_g.label, big_g.problem) == ("ViT-bigG", "")
    library = ReferenceLibrary()
    assert library.config_for(vit_h) == paths.MODEL_CONFIGS / "clip_vision" / "vit-h"
    assert library.config_for(big_g) == paths.MODEL_CONFIGS / "clip_vision" / "vit-bigg"
    # The shipped configs build the encoders the files hold.
    from transformers import CLIPVisionConfig

    for encoder in (vit_h, big_g):
        config = CLIPVisionConfig.from_pretrained(str(library.config_for(encoder)))
        assert (config.hidden_size, config.num_hidden_layers, config.projection_dim) == (
            encoder.hidden_size,
            encoder.layers,
            encoder.projection_dim,
        )
        assert (config.patch_size, config.image_size, config.hidden_act) == (14, 224, "gelu")
    odd = describe_encoder(
        header_only_file(tmp_path / "odd.safetensors", encoder_shapes(1024, 24, 768))
    )
    with pytest.raises(
        ModelError, match=r"no configuration for the image encoder odd\.safetensors"
    ):
        library.config_for(odd)
    no_projection = encoder_shapes(1280, 32, 1024)
    del no_projection["visual_projection.weight"]
    assert (
        "no visual projection"
        in describe_encoder(header_only_file(tmp_path / "bare.safetensors", no_projection)).problem
    )
    open_clip = header_only_file(
        tmp_path / "oc.safetensors", {"visual.conv1.weight": (1280, 3, 14, 14)}
    )
    assert "open_clip" in describe_encoder(open_clip).problem
    adapter = header_only_file(tmp_path / "ipa.safetensors", adapter_shapes(768, 1024))
    assert "put it in models/ipadapter" in describe_encoder(adapter).problem


def test_the_adapter_for_the_family_and_the_encoder_for_the_adapter_are_suggested():
    adapters_dir, encoders_dir = _folder("ipadapter"), _folder("clip_vision")
    header_only_file(adapters_dir / "ip-adapter_sd15.safetensors", adapter_shapes(768, 1024))
    header_only_file(
        adapters_dir / "ip-adapter-plus_sd15.safetensors", adapter_shapes(768, 1280, PLUS)
    )
    header_only_file(adapters_dir / "ip-adapter_sdxl.safetensors", adapter_shapes(2048, 1280))
    header_only_file(adapters_dir / "ip-adapter_sdxl_vit-h.safetensors", adapter_shapes(2048, 1024))
    header_only_file(encoders_dir / "CLIP-ViT-H-14.safetensors", encoder_shapes(1280, 32, 1024))
    adapters, encoders = list_adapters([]), list_encoders([])
    assert [a.name for a in adapters] == [
        "ip-adapter-plus_sd15",
        "ip-adapter_sd15",
        "ip-adapter_sdxl",
        "ip-adapter_sdxl_vit-h",
    ]
    assert suggest_adapter("sd1", adapters, encoders).name == "ip-adapter_sd15"  # plain first
    assert suggest_adapter("sd1-inpaint", adapters, encoders).name == "ip-adapter_sd15"
    # The bigG one sorts first by name, but only the ViT-H encoder is installed.
    assert suggest_adapter("sdxl", adapters, encoders).name == "ip-adapter_sdxl_vit-h"
    assert suggest_adapter("sdxl", adapters, []).name == "ip-adapter_sdxl"
    assert suggest_adapter("sd2", adapters, encoders) is None
    assert suggest_adapter("sd1", adapters, encoders, context_width=32) is None
    by_name = {a.name: a for a in adapters}
    # One ViT-H encoder serves a plain adapter (its embedding) and a Plus one (its states).
    pair = [by_name["ip-adapter_sd15"], by_name["ip-adapter-plus_sd15"]]
    assert suggest_encoder(pair, encoders).name == "CLIP-ViT-H-14"
    assert suggest_encoder([by_name["ip-adapter_sdxl"]], encoders) is None


def test_a1111s_controlnet_folder_lists_only_its_ip_adapters(tmp_path):
    webui = tmp_path / "webui"
    shared = webui / "models" / "ControlNet"
    shared.mkdir(parents=True)
    (webui / "models" / "Stable-diffusion").mkdir()
    header_only_file(shared / "ip-adapter_sd15.safetensors", adapter_shapes(768, 1024))
    header_only_file(
        shared / "control_v11p_sd15_canny.safetensors",
        {"control_model.input_hint_block.0.weight": (16, 3, 3, 3)},
    )
    (shared / "control_sd15_depth.pth").write_bytes(b"\x80\x04")
    (shared / "ip-adapter_sd15_light.pth").write_bytes(b"\x80\x04")
    items = {item.name: item for item in list_adapters([webui])}
    assert set(items) == {"ip-adapter_sd15", "ip-adapter_sd15_light"}
    assert "pickles" in items["ip-adapter_sd15_light"].problem
    assert items["ip-adapter_sd15"].path == shared / "ip-adapter_sd15.safetensors"


# -- running -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(encoder_config):
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    engine = Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])
    engine._references = ReferenceLibrary(configs=[encoder_config])
    return engine


@pytest.fixture
def installed(tiny_sd) -> dict[str, Path]:
    """The tiny encoder and an adapter for the tiny SD model, in the user's folders."""
    return {
        "encoder": tiny_encoder(_folder("clip_vision") / "tiny_clip.safetensors"),
        "adapter": tiny_adapter(tiny_sd, _folder("ipadapter") / "tiny_ip.safetensors"),
    }


def _request(model: Path, **changes) -> GenerationRequest:
    base = GenerationRequest(
        prompt="a circle", model=str(model), steps=3, width=64, height=64, seed=3
    )
    return replace(base, **changes)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image).astype(int)


def test_weight_zero_is_bit_for_bit_one_steers_and_no_reference_unloads(
    engine, tiny_sd, installed, tmp_path
):
    init = _reference_image(tmp_path / "init.png", seed=9)
    face = _reference_image(tmp_path / "face.png")
    jobs = [_request(tiny_sd), _request(tiny_sd, init_image=init, strength=0.7)]
    for job in jobs:
        base = _pixels(engine.generate(job))
        loads = engine._references.loads
        off = engine.generate(replace(job, references=(ReferenceImage(face, weight=0.0),)))
        assert np.array_equal(_pixels(off), base), job
        steered = engine.generate(replace(job, references=(ReferenceImage(face),)))
        assert np.abs(_pixels(steered) - base).mean() > 1, job
        assert engine._references.loads == loads + 1  # kept loaded while the same one is used
        # The result records the adapter that was suggested.
        assert steered.request.references == (ReferenceImage(face, model="tiny_ip"),)
        assert steered.images[0].request.references[0].model == "tiny_ip"
        text = format_parameters(steered.images[0].request)
        assert 'IP-Adapter 0: "Model: tiny_ip, Weight: 1"' in text
        # A job without references has the base model back, bit for bit.
        assert np.array_equal(_pixels(engine.generate(job)), base), job
        assert not engine._references.installed
        pipe = engine._loaded.txt2img
        assert pipe.image_encoder is None and engine._loaded.img2img.image_encoder is None
        assert pipe.unet.encoder_hid_proj is None


def test_the_reference_image_itself_steers(engine, tiny_sd, installed, tmp_path):
    job = _request(tiny_sd)
    red = engine.generate(
        replace(
            job,
            references=(ReferenceImage(_reference_image(tmp_path / "r.png", colour=(250, 0, 0))),),
        )
    )
    blue = engine.generate(
        replace(
            job,
            references=(ReferenceImage(_reference_image(tmp_path / "b.png", colour=(0, 0, 250))),),
        )
    )
    assert np.abs(_pixels(red) - _pixels(blue)).mean() > 0.5


def test_two_references_at_once(engine, tiny_sd, installed, tmp_path):
    second = tiny_adapter(tiny_sd, _folder("ipadapter") / "tiny_ip_b.safetensors", seed=7)
    face = _reference_image(tmp_path / "face.png")
    style = _reference_image(tmp_path / "style.png", seed=11)
    job = _request(tiny_sd)
    one = _pixels(engine.generate(replace(job, references=(ReferenceImage(face),))))
    # A second adapter at weight 0 adds nothing, bit for bit; at weight 1 it steers too.
    pair = (ReferenceImage(face), ReferenceImage(style, weight=0.0, model=second.stem))
    result = engine.generate(replace(job, references=pair))
    assert np.array_equal(_pixels(result), one)
    assert [r.model for r in result.request.references] == ["tiny_ip", "tiny_ip_b"]
    loads = engine._references.loads
    both = engine.generate(replace(job, references=(pair[0], replace(pair[1], weight=1.0))))
    assert np.abs(_pixels(both) - one).mean() > 0.5
    assert engine._references.loads == loads  # only the weights changed
    # The same adapter twice, with two images.
    twice = (ReferenceImage(face, weight=0.5), ReferenceImage(style, weight=0.5))
    result = engine.generate(replace(job, references=twice))
    assert [r.model for r in result.request.references] == ["tiny_ip", "tiny_ip"]
    assert np.abs(_pixels(result) - one).mean() > 0.5
    assert len(engine._loaded.txt2img.unet.encoder_hid_proj.image_projection_layers) == 2


def test_an_sdxl_adapter_steers_and_weight_zero_changes_nothing(engine, tiny_sdxl, tmp_path):
    tiny_encoder(_folder("clip_vision") / "tiny_clip.safetensors")
    tiny_adapter(tiny_sdxl, _folder("ipadapter") / "tiny_xl_ip.safetensors")
    face = _reference_image(tmp_path / "face.png")
    job = replace(_request(tiny_sdxl), prompt="a square")
    base = _pixels(engine.generate(job))
    off = engine.generate(replace(job, references=(ReferenceImage(face, weight=0.0),)))
    assert np.array_equal(_pixels(off), base)
    steered = engine.generate(replace(job, references=(ReferenceImage(face),)))
    assert np.abs(_pixels(steered) - base).mean() > 1
    assert steered.request.references[0].model == "tiny_xl_ip"
    assert np.array_equal(_pixels(engine.generate(job)), base)


def test_sliced_attention_and_a_controlnet_hook_work_with_an_adapter(
    engine, tiny_sd, installed, tmp_path
):
    from desktop.engine.parts import ControlUnit
    from tests.helpers.tiny_models import build_tiny_controlnet

    job = _request(tiny_sd)
    engine.generate(job)  # loaded
    pipe = engine._loaded.txt2img
    pipe.enable_attention_slicing(1)
    try:
        sliced = dict(pipe.unet.attn_processors)
        base = _pixels(engine.generate(job))
        face = _reference_image(tmp_path / "face.png")
        off = engine.generate(replace(job, references=(ReferenceImage(face, weight=0.0),)))
        assert np.array_equal(_pixels(off), base)
        # Self-attention keeps its sliced processors while the adapter is in.
        processors = pipe.unet.attn_processors
        assert all(processors[n] is p for n, p in sliced.items() if n.endswith("attn1.processor"))
        # A fresh ControlNet beside the adapter changes nothing either.
        controlnet = paths.user_models_dir() / "controlnet"
        build_tiny_controlnet(tiny_sd, controlnet / "tiny_scribble")
        unit = ControlUnit("scribble", face)
        both = engine.generate(
            replace(job, controls=(unit,), references=(ReferenceImage(face, weight=0.0),))
        )
        assert np.array_equal(_pixels(both), base)
        engine.generate(job)
        assert dict(pipe.unet.attn_processors) == sliced  # the very same objects back
    finally:
        shutil.rmtree(paths.user_models_dir() / "controlnet", ignore_errors=True)
        engine.unload()  # the next test loads the model afresh, unsliced


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            "none",
            "No IP-Adapter for SD1.5 models is installed: put one (for example "
            "ip-adapter_sd15.safetensors, with the ViT-H image encoder "
            "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors in models/clip_vision) in "
            "models/ipadapter",
        ),
        (
            "named",
            "The IP-Adapter 'ip-adapter_sd15' is not installed: put "
            "ip-adapter_sd15.safetensors in models/ipadapter",
        ),
        ("other family", "The IP-Adapter tiny_xl_ip.safetensors is made for"),
        ("only other family", "No IP-Adapter for SD1.5 models is installed"),
        (
            "no encoder",
            "The IP-Adapter tiny_ip.safetensors needs an image encoder whose image "
            "embeddings are 32 wide in models/clip_vision.",
        ),
        (
            "damaged encoder",
            "The image encoder tiny_clip.safetensors cannot be used: the file is damaged",
        ),
        (
            "damaged adapter",
            "The IP-Adapter tiny_ip.safetensors cannot be used: the file is damaged",
        ),
        ("broken weights", "The IP-Adapter tiny_ip.safetensors could not be loaded"),
        ("pickle", "The IP-Adapter ip-adapter_sd15.bin cannot be used: .bin files are pickles"),
        ("missing image", "does not exist"),
    ],
)
def test_each_reference_problem_names_the_file_before_any_sampling(
    engine, tiny_sd, tiny_sdxl, tmp_path, setup, expected
):
    adapters, encoders = _folder("ipadapter"), _folder("clip_vision")
    image = _reference_image(tmp_path / "face.png")
    model = ""
    if setup != "no encoder":
        encoder = tiny_encoder(encoders / "tiny_clip.safetensors")
        if setup == "damaged encoder":
            encoder.write_bytes(encoder.read_bytes()[:-100])
    if setup in ("no encoder", "damaged encoder", "damaged adapter", "missing image"):
        adapter = tiny_adapter(tiny_sd, adapters / "tiny_ip.safetensors")
        if setup == "damaged adapter":
            adapter.write_bytes(adapter.read_bytes()[:-100])
        if setup == "missing image":
            image = str(tmp_path / "gone.png")
    elif setup == "named":
        model = "ip-adapter_sd15"
    elif setup in ("other family", "only other family"):
        tiny_adapter(tiny_sdxl, adapters / "tiny_xl_ip.safetensors")
        model = "tiny_xl_ip" if setup == "other family" else ""
    elif setup == "broken weights":
        # The header is right for this model, the tensors are not: diffusers refuses it.
        from safetensors.torch import load_file, save_file

        path = tiny_adapter(tiny_sd, adapters / "tiny_ip.safetensors")
        state = load_file(str(path))
        state["ip_adapter.3.to_k_ip.weight"] = state["ip_adapter.3.to_k_ip.weight"][
            :, :5
        ].contiguous()
        save_file(state, str(path))
    elif setup == "pickle":
        (adapters / "ip-adapter_sd15.bin").write_bytes(b"\x80\x04")
        model = "ip-adapter_sd15"
    progress = RecordingProgress()
    reference = ReferenceImage(image, model=model)
    with pytest.raises((ModelError, ImageError)) as caught:
        engine.generate(_request(tiny_sd, references=(reference,)), progress)
    assert expected in str(caught.value)
    assert not progress.updates  # no step ran
    assert not engine._references.installed
    assert engine._loaded.txt2img.unet.encoder_hid_proj is None


def test_the_library_names_the_standard_encoder_and_refuses_mixed_encoders():
    adapters_dir = _folder("ipadapter")
    header_only_file(adapters_dir / "ip-adapter_sd15.safetensors", adapter_shapes(768, 1024))
    header_only_file(adapters_dir / "ip-adapter_sdxl.safetensors", adapter_shapes(2048, 1280))
    header_only_file(adapters_dir / "ip-adapter_sdxl_vit-h.safetensors", adapter_shapes(2048, 1024))
    library = ReferenceLibrary()
    with pytest.raises(ModelError) as caught:
        library.resolve([ReferenceImage("a.png")], "sd1", [])
    assert str(caught.value) == (
        "The IP-Adapter ip-adapter_sd15.safetensors needs the ViT-H image encoder "
        "(CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors) in models/clip_vision."
    )
    with pytest.raises(ModelError, match=r"needs the ViT-bigG image encoder \(CLIP-ViT-bigG-14"):
        library.resolve([ReferenceImage("a.png", model="ip-adapter_sdxl")], "sdxl", [])
    header_only_file(
        _folder("clip_vision") / "CLIP-ViT-H-14.safetensors", encoder_shapes(1280, 32, 1024)
    )
    mixed = [
        ReferenceImage("a.png", model="ip-adapter_sdxl"),
        ReferenceImage("b.png", model="ip-adapter_sdxl_vit-h"),
    ]
    with pytest.raises(ModelError, match="need different image encoders"):
        library.resolve(mixed, "sdxl", [])
    with pytest.raises(ModelError, match=r"is made for SD1\.5 models; this model is SDXL"):
        library.resolve([ReferenceImage("a.png", model="ip-adapter_sd15")], "sdxl", [])
    adapters, encoder = library.resolve([ReferenceImage("a.png")], "sdxl", [])
    assert ([a.name for a in adapters], encoder.name) == (
        ["ip-adapter_sdxl_vit-h"],
        "CLIP-ViT-H-14",
    )
