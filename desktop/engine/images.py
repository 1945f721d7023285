"""Loading user images (img2img inputs, drops) safely into plain 8-bit RGB.

Any file a user picks can be broken, huge or exotic: every failure becomes an ``ImageError``
with one clear sentence, a decompression bomb is refused from its header before any pixel is
decoded, and every mode (CMYK, 16-bit, palette, alpha, animation) ends up as RGB in the
orientation the camera meant.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from desktop.engine.errors import ImageError

#: Largest image accepted, in pixels (64 megapixels: well above any generation size).
DEFAULT_MAX_PIXELS = 8192 * 8192
_WHITE = (255, 255, 255)


def _describe(source: str | Path | bytes) -> str:
    return "The dropped image" if isinstance(source, (bytes, bytearray)) else str(source)


def _open(source: str | Path | bytes) -> BinaryIO:
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    return open(source, "rb")


def _too_large(label: str, width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"{label} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); "
        f"images up to {max_pixels / 1e6:.0f} megapixels are accepted, so resize it first."
    )


def load_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file or its bytes as an RGB image, ready to use as an init image.

    Large JPEGs are decoded at a reduced scale when that brings them under ``max_pixels``;
    anything else over the limit is refused before decoding.

    Raises:
        ImageError: missing, unreadable, truncated, not an image, or too large.
    """
    label = _describe(source)
    try:
        stream = _open(source)
    except FileNotFoundError as exc:
        raise ImageError(f"{label} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{label} is a folder, not an image.") from exc
    except OSError as exc:
        raise ImageError(f"{label} cannot be opened: {exc.strerror or exc}.") from exc
    with stream:
        try:
            with warnings.catch_warnings():
                # PIL warns between its two bomb thresholds; our own limit decides instead.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(stream)
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{label} is too large to open safely ({exc}); resize it first."
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{label} is not an image file Sandstorm can read.") from exc
        except Exception as exc:  # PIL's plugins raise many types on malformed headers
            raise ImageError(f"{label} is damaged and cannot be read ({exc}).") from exc
        with image:
            width, height = image.size
            if width * height > max_pixels:
                _reduce_on_decode(image, max_pixels)
                if image.size[0] * image.size[1] > max_pixels:
                    raise _too_large(label, width, height, max_pixels)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    image.load()
                    rgb = to_rgb(ImageOps.exif_transpose(image))
            except Exception as exc:  # truncated data, bad compression, broken EXIF ...
                raise ImageError(
                    f"{label} is damaged or truncated and cannot be read ({exc})."
                ) from exc
    return rgb


def _reduce_on_decode(image: Image.Image, max_pixels: int) -> None:
    """Ask the decoder for a smaller size (JPEG can decode at 1/2, 1/4 or 1/8 scale)."""
    if image.format != "JPEG":
        return
    width, height = image.size
    for scale in (2, 4, 8):
        if (width // scale) * (height // scale) <= max_pixels:
            image.draft("RGB", (width // scale, height // scale))
            return


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: transparency is composited on white, 16-bit and
    32-bit greyscale is scaled down (not clipped), an animation gives its first frame."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data; an "I" image from a 16-bit PNG uses the same 0..65535 range.
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
        grey = np.clip(np.rint(np.nan_to_num(values) / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if mode == "1" or (mode == "L" and not has_alpha):
        return image.convert("RGB")
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover ``width``×``height`` and crop the centre: no stretching, no borders."""
    if width < 1 or height < 1:
        raise ImageError(f"Cannot fit an image to {width}×{height} pixels.")
    if image.size == (width, height):
        return image.copy()
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
