"""``sandstorm info``: what the metadata reader finds, as text or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from desktop.cli import info
from desktop.engine.gallery import save_png_with_metadata
from desktop.engine.parts import HiresSpec, LoraRef, ReferenceImage
from desktop.engine.request import GenerationRequest, request_fields


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sandstorm")
    info.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["info", *argv])
    return args.func(args)


REQUEST = GenerationRequest(
    prompt="a lighthouse, stormy sea",
    negative_prompt="blurry",
    sampler="DPM++ 2M",
    schedule="Karras",
    steps=24,
    cfg_scale=6.5,
    seed=31337,
    width=640,
    height=448,
    init_image="/inputs/sketch.png",
    strength=0.65,
)


def test_info_prints_our_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), REQUEST, tmp_path / "x.png")
    assert _run(str(path)) == 0
    out = capsys.readouterr().out
    assert "Source:          Sandstorm" in out
    assert "Prompt:          a lighthouse, stormy sea" in out
    assert "Negative prompt: blurry" in out
    assert "Seed:            31337" in out
    assert "Sampler:         DPM++ 2M" in out
    assert "Schedule type:   Karras" in out
    assert "CFG scale:       6.5" in out
    assert "Size:            640x448" in out
    # The label is the declared one (was a hand-written "Strength:"); longer labels than
    # "Negative prompt" are followed by one space.
    assert "Denoising strength: 0.65" in out
    assert "Init image:      /inputs/sketch.png" in out


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), REQUEST, tmp_path / "x.png")
    assert _run(str(path), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "sandstorm"
    assert GenerationRequest.from_dict(data["request"]) == REQUEST
    assert (data["seed"], data["steps"], data["cfg_scale"], data["strength"]) == (
        31337,
        24,
        6.5,
        0.65,
    )


def test_info_reads_foreign_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text(
        "parameters",
        "cat\nSteps: 9, Sampler: Euler a, CFG scale: 3, Seed: 1, Size: 512x512, Hires steps: 4",
    )
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=pnginfo)
    assert _run(str(path), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["source"], data["prompt"], data["sampler"]) == ("a1111", "cat", "Euler a")
    assert data["extras"] == {"Hires steps": "4"}


def test_info_without_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(path)
    assert _run(str(path)) == 0
    assert "No generation settings found" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_info_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = tmp_path / "thing.png"
    if kind == "text":
        target.write_text("hello")
    elif kind == "folder":
        target.mkdir()
    assert _run(str(target)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sandstorm: error: ")
    assert str(target) in lines[0]


def test_info_shows_the_parts_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = REQUEST.replace(
        loras=(LoraRef("add_detail", unet_strength=0.8, text_strength=0.8),),
        references=(ReferenceImage("/inputs/face.png", weight=0.5),),
        hires=HiresSpec(scale=2.0, upscaler="Latent", steps=10, denoise=0.5),
    )
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), request, tmp_path / "x.png")
    assert _run(str(path)) == 0
    out = capsys.readouterr().out
    assert "LoRAs:           add_detail (UNet 0.8, text 0.8)" in out
    assert "Reference images: /inputs/face.png (weight 0.5)" in out
    assert "Hires fix:       2x Latent, 10 steps, denoise 0.5" in out
    assert "Control layers" not in out and "Mask:" not in out

    assert _run(str(path), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["loras"] == [{"name": "add_detail", "unet_strength": 0.8, "text_strength": 0.8}]
    assert data["hires"]["steps"] == 10
    assert (data["controls"], data["mask"], data["batch_size"]) == ([], None, 1)


def test_info_json_has_every_declared_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_png_with_metadata(Image.new("RGB", (8, 8)), REQUEST, tmp_path / "x.png")
    assert _run(str(path), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {info.name for info in request_fields()} <= set(data)


def test_info_strength_of_foreign_img2img_but_not_of_hires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = "cat\nSteps: 9, Sampler: Euler, Seed: 1, Size: 512x512, Denoising strength: 0.4"
    for text, strength in ((base, 0.4), (base + ", Hires upscale: 2", None)):
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", text)
        path = tmp_path / "a1111.png"
        Image.new("RGB", (8, 8)).save(path, pnginfo=pnginfo)
        assert _run(str(path), "--json") == 0
        assert json.loads(capsys.readouterr().out)["strength"] == strength
