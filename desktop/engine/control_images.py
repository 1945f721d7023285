"""Control images: the built-in preprocessors and fitting a control image to the picture.

Every preprocessor here is plain image work (numpy, scipy, Pillow) and needs no downloaded
model. Its output is what a ControlNet of that type was trained on:

* ``canny``: white Canny edges on black (Gaussian blur, Sobel gradients, thin edges by
  non-maximum suppression, hysteresis between the low and high thresholds).
* ``scribble``: white strokes on black. A drawing (dark strokes on a light page, as the
  sketch pad makes) is inverted and cleaned; a photo is reduced to its bold outlines
  (extended difference of Gaussians, thickened).
* ``lineart``: white fine lines on black from any picture (difference of Gaussians).
* ``tile``: the picture blurred by a down- and up-scale (the tile model adds the detail).
* ``inpaint``: the picture with the masked part marked; the ControlNet gets -1 there
  (``inpaint_condition``), the preview shows it grey.
* ``control map``: used as it is (depth, pose, normal maps made elsewhere).

``fit_control`` puts a control image of any size onto the picture's size with
AUTOMATIC1111's three resize modes. No Qt here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageOps

from desktop.engine.errors import RequestError
from desktop.engine.images import to_rgb
from desktop.engine.parts import CONTROL_RESIZE_MODES, CONTROL_TYPES

#: Canny thresholds (0..255 gradient units), as AUTOMATIC1111's defaults.
CANNY_LOW, CANNY_HIGH = 100, 200
#: Control images are preprocessed at most this many pixels on the longer side.
PROCESS_MAX_SIDE = 1024
#: The grey the preview shows where an inpaint control marks the repaint.
MASKED_PREVIEW = (128, 128, 128)


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(image).convert("L"), dtype=np.float32)


def _white_on_black(values: np.ndarray) -> Image.Image:
    """A boolean or 0..1 array as a white-on-black RGB image."""
    plane = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255.0
    return Image.fromarray(plane.round().astype(np.uint8), "L").convert("RGB")


def canny(image: Image.Image, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Image.Image:
    """White one-pixel Canny edges on black."""
    from scipy import ndimage

    grey = ndimage.gaussian_filter(_grey(image), 1.4)
    gx, gy = ndimage.sobel(grey, axis=1), ndimage.sobel(grey, axis=0)
    # OpenCV's L1 gradient of the 3×3 Sobel, the units its thresholds are given in.
    magnitude = np.abs(gx) + np.abs(gy)
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = ((angle + 22.5) // 45).astype(int) % 4  # 0: horizontal gradient ... 3
    padded = np.pad(magnitude, 1)
    height, width = magnitude.shape
    thin = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        behind = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        keep = (magnitude >= ahead) & (magnitude >= behind) & (sector == index)
        thin |= keep
    candidate = thin & (magnitude >= low)
    strong = thin & (magnitude >= high)
    labels, count = ndimage.label(candidate, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return _white_on_black(np.zeros_like(magnitude))
    connected = np.zeros(count + 1, dtype=bool)
    connected[np.unique(labels[strong])] = True
    connected[0] = False
    return _white_on_black(connected[labels])


def _dog(grey: np.ndarray, sigma: float, k: float = 1.6) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(grey, sigma) - ndimage.gaussian_filter(grey, sigma * k)


def lineart(image: Image.Image) -> Image.Image:
    """White lines on black from the dark lines and edges of any picture."""
    grey = _grey(image) / 255.0
    scale = max(grey.shape) / 512.0
    response = -_dog(grey, max(0.6, 0.8 * scale))  # dark lines give a positive response
    peak = float(np.percentile(response, 99.5)) or 1.0
    return _white_on_black(np.clip(response / max(peak, 1e-3), 0.0, 1.0) ** 0.8)


def _is_drawing(grey: np.ndarray) -> bool:
    """A light page with a minority of dark strokes (what a sketch pad or a pen gives)."""
    light = float((grey > 200).mean())
    return light > 0.6 and float(((grey > 60) & (grey <= 200)).mean()) < 0.25


def scribble(image: Image.Image) -> Image.Image:
    """White strokes on black: a drawing's strokes, or a photo's bold outlines."""
    from scipy import ndimage

    grey = _grey(image)
    if _is_drawing(grey):
        strokes = grey < 160
    elif float((grey < 55).mean()) > 0.6 and float((grey > 200).mean()) < 0.25:
        strokes = grey > 128  # already white strokes on black
    else:
        scale = max(grey.shape) / 512.0
        response = -_dog(grey / 255.0, max(1.0, 1.5 * scale), 2.0)
        threshold = max(float(np.percentile(response, 92)), 1e-3)
        strokes = response > threshold
        strokes = ndimage.binary_opening(strokes, iterations=1)
    width = max(1, round(max(grey.shape) / 256))
    return _white_on_black(ndimage.binary_dilation(strokes, iterations=width))


def tile(image: Image.Image, factor: int = 4) -> Image.Image:
    """The picture without its fine detail (down- then up-scaled)."""
    rgb = to_rgb(image)
    small = rgb.resize(
        (max(1, rgb.width // factor), max(1, rgb.height // factor)), Image.Resampling.BOX
    )
    return small.resize(rgb.size, Image.Resampling.BICUBIC)


def inpaint_preview(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The picture with the part to repaint grey (what ``inpaint_condition`` marks -1)."""
    rgb = to_rgb(image)
    if mask is None:
        return rgb
    hard = (
        mask.convert("L")
        .resize(rgb.size, Image.Resampling.NEAREST)
        .point(lambda v: 255 if v >= 128 else 0)
    )
    return Image.composite(Image.new("RGB", rgb.size, MASKED_PREVIEW), rgb, hard)


def inpaint_condition(image: Image.Image, mask: Image.Image | None) -> np.ndarray:
    """The inpaint ControlNet's input as a (h, w, 3) float array in [0, 1], -1 where the
    mask repaints (the convention the SD1.5 inpaint ControlNet was trained with)."""
    rgb = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    if mask is None:
        return rgb
    hard = np.asarray(
        mask.convert("L").resize(image.size, Image.Resampling.NEAREST), dtype=np.uint8
    )
    rgb = rgb.copy()
    rgb[hard >= 128] = -1.0
    return rgb


def preprocess(kind: str, image: Image.Image, mask: Image.Image | None = None) -> Image.Image:
    """The control image a ControlNet of type ``kind`` gets from ``image`` (RGB, the
    image's size; large images are worked on at ``PROCESS_MAX_SIDE``).

    Raises:
        RequestError: ``kind`` is not a control type.
    """
    if kind not in CONTROL_TYPES:
        raise RequestError(
            f"Unknown control type “{kind}”; use one of: {', '.join(CONTROL_TYPES)}."
        )
    rgb = to_rgb(image)
    if kind == "control map":
        return rgb
    if kind == "inpaint":
        return inpaint_preview(rgb, mask)
    work = rgb
    if max(rgb.size) > PROCESS_MAX_SIDE:
        work = ImageOps.contain(rgb, (PROCESS_MAX_SIDE, PROCESS_MAX_SIDE))
    result = {"canny": canny, "scribble": scribble, "lineart": lineart, "tile": tile}[kind](work)
    if result.size != rgb.size:
        result = result.resize(rgb.size, Image.Resampling.BILINEAR)
    return result


def fit_control(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """``image`` on a ``width`` × ``height`` picture with one of AUTOMATIC1111's resize
    modes: "Just Resize" (stretched), "Crop and Resize" (covers, the centre kept) or
    "Resize and Fill" (fits inside, the rest filled with the edge colours)."""
    if mode not in CONTROL_RESIZE_MODES:
        raise RequestError(
            f"Unknown resize mode “{mode}”; use one of: {', '.join(CONTROL_RESIZE_MODES)}."
        )
    rgb = to_rgb(image)
    if rgb.size == (width, height):
        return rgb
    if mode == "Just Resize":
        return rgb.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "Crop and Resize":
        return ImageOps.fit(rgb, (width, height), Image.Resampling.LANCZOS)
    inner = ImageOps.contain(rgb, (width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(inner)
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    pad = ((top, height - inner.height - top), (left, width - inner.width - left), (0, 0))
    return Image.fromarray(np.pad(pixels, pad, mode="edge"), "RGB")


def aspect_note(image: Image.Image, width: int, height: int, mode: str, name: str) -> str:
    """A note when the control image's shape differs from the picture's ("" otherwise)."""
    ratio = (image.width / image.height) / (width / height)
    if abs(ratio - 1.0) < 0.02:
        return ""
    return (
        f"The control image {name} is {image.width}×{image.height}, another shape than the "
        f"{width}×{height} picture; it was fitted with “{mode}”."
    )


def describe(kind: str) -> dict[str, Any]:
    """What the window says about a control type (whether it is preprocessed here)."""
    return {
        "preprocessed": kind not in ("control map",),
        "needs_mask": kind == "inpaint",
    }
