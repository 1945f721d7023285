"""Read a generated picture back into words, from its pixels alone.

background colour: the median of the border pixels; shape colour: the median of the pixels
that differ from the background (largest connected blob); position: the blob's centroid in a
3×3 grid; size: the blob's area; shape type: which ideal shape drawn into the blob's bounding
box overlaps it best (a triangle fills half its box, a circle π/4, a square all of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from desktop.training import data

ATTRIBUTES = ("background", "colour", "position", "size", "shape")
_PALETTE_NAMES = list(data.COLOURS)
_PALETTE = np.array([data.COLOURS[n] for n in _PALETTE_NAMES], dtype=np.float32)
_GRID = {
    (col, row): name
    for name, (fx, fy) in data.POSITIONS.items()
    for col, row in [(round((fx - 0.25) * 4), round((fy - 0.25) * 4))]
}
# Area halfway (geometrically) between a small and a big shape at 64×64.
_SIZE_THRESHOLD = np.pi * data.SIZES["small"] * data.SIZES["big"]
_MIN_AREA = 12  # pixels; anything smaller is noise, not a shape


def nearest_colour(rgb: np.ndarray) -> str:
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE - rgb) ** 2).sum(axis=1)))]


@dataclass(frozen=True)
class Reading:
    """What the scorer sees in one picture (``None`` where no shape was found)."""

    background: str
    colour: str | None
    position: str | None
    size: str | None
    shape: str | None
    area: int
    centroid: tuple[float, float] | None


def _template_iou(mask: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, float]:
    y0, y1, x0, x1 = box
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]
    h, w = crop.shape
    scale = 4
    scores = {}
    for shape in data.SHAPES:
        canvas = Image.new("L", (w * scale, h * scale), 0)
        draw = ImageDraw.Draw(canvas)
        rect = (0, 0, w * scale - 1, h * scale - 1)
        if shape == "circle":
            draw.ellipse(rect, fill=255)
        elif shape == "square":
            draw.rectangle(rect, fill=255)
        else:
            draw.polygon([(w * scale / 2, 0), (w * scale, h * scale), (0, h * scale)], fill=255)
        template = np.asarray(canvas.resize((w, h), Image.Resampling.BOX)) > 127
        union = np.logical_or(template, crop).sum()
        scores[shape] = float(np.logical_and(template, crop).sum() / max(union, 1))
    return scores


def read_image(image: Image.Image) -> Reading:
    """Describe the single-shape picture ``image`` in the generator's words."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = rgb.shape
    border = np.concatenate(
        [rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3),
         rgb[:, -2:].reshape(-1, 3)]
    )  # fmt: skip
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    distance = np.sqrt(((rgb - bg_rgb) ** 2).sum(axis=-1))
    labels, count = ndimage.label(distance > 50)
    if count == 0:
        return Reading(background, None, None, None, None, 0, None)
    areas = ndimage.sum_labels(np.ones_like(distance), labels, index=range(1, count + 1))
    blob = labels == (int(np.argmax(areas)) + 1)
    area = int(blob.sum())
    if area < _MIN_AREA:
        return Reading(background, None, None, None, None, area, None)
    colour = nearest_colour(np.median(rgb[blob], axis=0))
    ys, xs = np.nonzero(blob)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    col = min(2, int(3 * cx / w))
    row = min(2, int(3 * cy / h))
    position = _GRID[(col, row)]
    # Area in 64×64 pixels, whatever the picture's size.
    size = "big" if area * (data.IMAGE_SIZE**2) / (w * h) > _SIZE_THRESHOLD else "small"
    ious = _template_iou(blob, (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())))
    shape = max(ious, key=ious.__getitem__)
    return Reading(background, colour, position, size, shape, area, (cx, cy))


def score(image: Image.Image, scene: data.Scene) -> dict[str, bool]:
    """Which attributes of the single-shape ``scene`` the picture got right."""
    reading = read_image(image)
    target = scene.shapes[0]
    return {
        "background": reading.background == scene.background,
        "colour": reading.colour == target.colour,
        "position": reading.position == target.position,
        "size": reading.size == target.size,
        "shape": reading.shape == target.shape,
    }
