"""Settings text of image files, the delete bin: the gallery's Qt-free helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from desktop.engine.gallery import Gallery
from desktop.engine.metadata import ImageMetadata, read_metadata
from desktop.engine.request import GenerationRequest
from desktop.ui.delete_bin import DeleteBin
from desktop.ui.gallery_info import NO_SETTINGS, describe_source, infotext, stored_request


def test_describe_source_names_the_tool() -> None:
    assert describe_source(ImageMetadata(source="comfyui")) == "ComfyUI"
    assert describe_source(ImageMetadata(source="a1111")) == "AUTOMATIC1111-style"
    assert describe_source(ImageMetadata(source="sandstorm")) == "Sandstorm"
    assert describe_source(ImageMetadata(source="fooocus")) == "fooocus"


def test_infotext_and_stored_request(tmp_path: Path) -> None:
    request = GenerationRequest(prompt="a lantern", seed=3)
    with Gallery(tmp_path / "out", tmp_path / "g.sqlite3") as gallery:
        item = gallery.save(Image.new("RGB", (16, 16)), request)
    assert infotext(item.path).startswith("a lantern\n")
    assert stored_request(item.path) == request
    assert describe_source(read_metadata(item.path)) == "Sandstorm"

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert infotext(plain) == NO_SETTINGS
    assert stored_request(plain) is None

    foreign = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "castle\nSteps: 20, Sampler: Euler, Seed: 5, Size: 512x512")
    Image.new("RGB", (8, 8)).save(foreign, pnginfo=info)
    assert infotext(foreign).startswith("castle\nSteps: 20")


def test_delete_bin_restores_into_place(tmp_path: Path) -> None:
    with Gallery(tmp_path / "out", tmp_path / "g.sqlite3") as gallery:
        item = gallery.save(Image.new("RGB", (16, 16)), GenerationRequest(prompt="x", seed=1))
    bin_ = DeleteBin(use_trash=False)
    entry = bin_.delete(item)
    assert not item.path.exists() and entry.held_at.is_file()
    bin_.restore(entry)
    assert item.path.is_file()
    with pytest.raises(FileNotFoundError):
        bin_.restore(entry)
    bin_.purge()
    assert not bin_.folder.exists()
