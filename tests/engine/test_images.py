"""Loading user images safely: every mode to RGB, every broken file to a clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.engine.errors import ImageError
from desktop.engine.images import fit_to_size, load_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid-looking 1-bit PNG that claims ``width``×``height`` (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def test_rgb_png_from_path_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path)
    for source in (path, str(path), path.read_bytes()):
        image = load_image(source)
        assert (image.mode, image.size) == ("RGB", (40, 30))
        assert image.getpixel((5, 5)) == (10, 200, 30)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    image = load_image(data)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 230 and g < 30 and b < 30


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")
    image = load_image(data)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent: white
        ("RGBA", (0, 0, 255, 255), (0, 0, 255)),
        ("LA", (0, 128), (127, 127, 127)),  # half-transparent black over white
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_alpha_and_grey_modes(mode: str, color, expected: tuple[int, int, int]) -> None:
    image = load_image(_encode(Image.new(mode, (8, 8), color), "PNG"))
    assert image.mode == "RGB"
    assert all(abs(a - b) <= 1 for a, b in zip(image.getpixel((4, 4)), expected, strict=True))


def test_palette_with_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    data = _encode(palette, "PNG", transparency=0)
    image = load_image(data)
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((4, 4)) == (255, 0, 0)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), color) for color in ("red", "lime", "blue")]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    image = load_image(data)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((6, 6))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (40, 20), "white")
    source.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90° clockwise
    image = load_image(_encode(source, "JPEG", exif=exif.tobytes(), quality=95))
    assert image.size == (20, 40)
    r, g, b = image.getpixel((10, 3))  # the left stripe is now at the top
    assert r > 200 and g < 60 and b < 60


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("plain text, not a picture")
    with pytest.raises(ImageError, match="is not an image file Sandstorm can read"):
        load_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_truncated_png(tmp_path: Path) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    data = _encode(noise, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(path)


def test_decompression_bomb_is_refused_without_decoding() -> None:
    with pytest.raises(ImageError, match="too large"):
        load_image(_png_header_only(20000, 20000))


def test_image_over_the_limit_is_refused_with_sizes() -> None:
    data = _encode(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(ImageError, match=r"300×300 pixels.*resize it first"):
        load_image(data, max_pixels=10_000)


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = _encode(Image.new("RGB", (800, 600), "purple"), "JPEG")
    image = load_image(data, max_pixels=200_000)
    assert image.size == (400, 300)
    with pytest.raises(ImageError, match="800×600"):
        load_image(data, max_pixels=5_000)


@pytest.mark.parametrize(
    ("size", "target"), [((400, 200), (256, 256)), ((100, 300), (64, 128)), ((50, 50), (512, 512))]
)
def test_fit_to_size_covers_and_centres(size: tuple[int, int], target: tuple[int, int]) -> None:
    source = Image.new("RGB", size, "black")
    # A centred marker must survive the crop, still centred.
    cx, cy = size[0] // 2, size[1] // 2
    source.paste((255, 255, 255), (cx - 4, cy - 4, cx + 4, cy + 4))
    fitted = fit_to_size(source, *target)
    assert fitted.size == target
    assert fitted.getpixel((target[0] // 2, target[1] // 2))[0] > 200
    assert fitted.getpixel((0, 0))[0] < 30


def test_fit_to_size_rejects_empty_target() -> None:
    with pytest.raises(ImageError):
        fit_to_size(Image.new("RGB", (8, 8)), 0, 8)
