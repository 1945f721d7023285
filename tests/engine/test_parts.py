"""The request's list parts: validated, frozen, serialised, and refused until supported."""

from __future__ import annotations

import pytest

from desktop.engine.errors import RequestError
from desktop.engine.parts import (
    ControlUnit,
    ExpandSpec,
    HiresSpec,
    LoraRef,
    MaskSpec,
    ReferenceImage,
    extract_lora_tags,
)
from desktop.engine.request import GenerationRequest

PARTS = {
    "loras": (LoraRef("detail", unet_strength=0.8, text_strength=0.5),),
    "controls": (ControlUnit("canny", "/tmp/edges.png", strength=0.7, start=0.1, end=0.9),),
    "references": (ReferenceImage("/tmp/face.png", weight=0.6),),
    "mask": MaskSpec("/tmp/mask.png", blur=8, mode="fill", padding=16, only_masked=False),
    "expand": ExpandSpec(right=256, top=64, fill="mirror", feather=16),
    "hires": HiresSpec(scale=1.5, upscaler="Lanczos", steps=8, denoise=0.4),
}


def _full_request() -> GenerationRequest:
    return GenerationRequest(prompt="p", seed=1, init_image="/tmp/init.png", **PARTS)


def test_parts_are_empty_by_default_and_frozen():
    request = GenerationRequest(prompt="p")
    assert (request.loras, request.controls, request.references) == ((), (), ())
    assert request.mask is None and request.expand is None and request.hires is None
    assert request.used_parts() == []
    with pytest.raises(AttributeError):
        PARTS["loras"][0].name = "x"  # type: ignore[misc]


def test_lists_become_tuples_and_round_trip_through_json():
    request = GenerationRequest(prompt="p", loras=list(PARTS["loras"]))  # type: ignore[arg-type]
    assert isinstance(request.loras, tuple)
    full = _full_request()
    assert GenerationRequest.from_json(full.to_json()) == full
    assert full.used_parts() == [
        "LoRAs",
        "Control layers",
        "Reference images",
        "Mask",
        "Outpaint",
        "Hires fix",
    ]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: LoraRef(""), "must not be empty"),
        (lambda: LoraRef("a:b"), "cannot contain"),
        (lambda: LoraRef("a", unet_strength=11.0), "LoRA UNet strength must be between"),
        (lambda: ControlUnit("depthmagic", "/x.png"), "Unknown control type"),
        (lambda: ControlUnit("canny", "/x.png", start=0.8, end=0.2), "must be before its end"),
        (lambda: ReferenceImage("/x.png", weight=-1.0), "Reference weight"),
        (lambda: MaskSpec("/m.png", mode="sideways"), "Unknown masked content"),
        (lambda: MaskSpec("/m.png", blur=2.5), "whole number"),  # type: ignore[arg-type]
        (lambda: ExpandSpec(right=-8), "Expand right must be between"),
        (lambda: ExpandSpec(right=8, fill="stretch"), "Unknown expand fill"),
        (lambda: HiresSpec(scale=9.0), "Hires upscale must be between"),
        (lambda: GenerationRequest(prompt="p", loras=("detail",)), "list of LoraRef"),  # type: ignore[arg-type]
        (lambda: GenerationRequest(prompt="p", mask=MaskSpec("/m.png")), "needs an init image"),
    ],
)
def test_invalid_parts_give_clear_errors(make, fragment):
    with pytest.raises(RequestError, match=fragment):
        make()


def test_from_dict_reports_a_malformed_part_by_its_label():
    data = _full_request().to_dict()
    data["loras"] = [{"unet_strength": 1.0}]
    with pytest.raises(RequestError, match="LoRAs 1 is incomplete"):
        GenerationRequest.from_dict(data)
    data["loras"] = "detail"
    with pytest.raises(RequestError, match="LoRAs must be a list"):
        GenerationRequest.from_dict(data)


def test_lora_tags_in_a1111_form():
    lora = LoraRef("detail", unet_strength=0.8, text_strength=0.8)
    assert lora.tag() == "<lora:detail:0.8>"
    assert LoraRef("x", unet_strength=1.0, text_strength=0.5).tag() == "<lora:x:0.5:1>"
    prompt, loras, problems = extract_lora_tags("a cat, <lora:detail:0.8> <LORA:x:0.5:1>")
    assert prompt == "a cat" and problems == []
    assert loras == (lora, LoraRef("x", unet_strength=1.0, text_strength=0.5))
    prompt, loras, problems = extract_lora_tags("a <lora:bad:lots>")
    assert prompt == "a <lora:bad:lots>" and loras == () and problems


def _unsupported() -> list[str]:
    from desktop.engine.generate import SUPPORTED_PARTS
    from desktop.engine.request import request_fields

    labels = {info.name: info.label for info in request_fields()}
    return sorted(p for p in PARTS if labels[p] not in SUPPORTED_PARTS)


def test_check_supported_refuses_a_part_the_engine_does_not_list(monkeypatch):
    from desktop.engine import generate

    monkeypatch.setattr(generate, "SUPPORTED_PARTS", frozenset({"LoRAs"}))
    request = GenerationRequest(prompt="p", hires=PARTS["hires"])
    with pytest.raises(RequestError, match=r"^Hires fix is not supported yet"):
        generate.check_supported(request)
    generate.check_supported(GenerationRequest(prompt="p", loras=PARTS["loras"]))


def test_engine_refuses_hires_on_an_init_image_without_loading(tmp_path):
    from desktop.engine.generate import Engine

    engine = Engine(device="cpu", model_folders=[tmp_path])
    request = GenerationRequest(
        prompt="p", model=str(tmp_path / "missing"), **PARTS, init_image="/i"
    )
    with pytest.raises(RequestError, match=r"^Hires fix works on text to image"):
        engine.generate(request)
    assert engine.loads == 0


def test_every_request_part_is_supported():
    assert _unsupported() == []
