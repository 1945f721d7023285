"""Inpainting with ordinary (4-channel) checkpoints: what to repaint, where, and the paste back.

A request with a ``mask`` repaints the white part of the mask on its init image, the way the
peers that give the best results do it (AUTOMATIC1111's "inpaint", ComfyUI's crop-and-stitch,
krita-ai-diffusion):

1. **The mask** is read at the init image's own size (another size is scaled, with a note).
   White (or, in a file with transparency, transparent) repaints; black keeps. It is blurred
   by ``blur`` pixels: that soft mask is the feather the result is blended through.
2. **Only masked** crops the image to the mask's box plus ``padding`` pixels, grown to the
   request's aspect ratio, and works on that crop at the request's width × height, so a small
   repaint gets the model's full resolution. Otherwise the whole image is worked on at that
   size.
3. **Masked content** says what the model starts from under the mask: the ``original``
   pixels, a ``fill`` of the colours around the mask, ``latent noise`` or ``latent nothing``
   (zeros).
4. **Soft per-step masking**: after every step the latents outside the mask are put back to
   the init image's latents noised to that step, through the soft mask at latent size, so the
   feathered edge blends instead of showing a seam.
5. **The composite**: the decoded result is scaled back to the crop and pasted onto the init
   image through the soft mask, so every pixel outside the mask and its feather is exactly the
   input's, bit for bit. The result has the init image's size.

No Qt here, and nothing that needs a model: ``prepare_inpaint`` is plain image work, and the
engine calls ``InpaintPlan``'s methods around the sampler.
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from desktop.engine.errors import ImageError, RequestError
from desktop.engine.images import DEFAULT_MAX_PIXELS, load_image, to_rgb
from desktop.engine.parts import ExpandSpec, MaskSpec

#: Below this value (0..255) a mask pixel keeps the input; the rest is the repaint region.
MASK_THRESHOLD = 8
#: Longest side of the whole-picture previews of an inpainting job.
PREVIEW_MAX_SIDE = 512


def load_mask(source: str | Path, size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """The mask in ``source`` as an 8-bit "L" image (255 = repaint), and a note ("" or why it
    was changed).

    A file with transparency gives its alpha, inverted (transparent = repaint: an image with
    its background erased works as its own mask); any other file gives its brightness.
    ``size``: the init image's size; a mask of another size is scaled to it, with a note.

    Raises:
        ImageError: the file is missing, not an image, or damaged.
    """
    path = Path(source)
    label = f"The mask {path.name}"
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > DEFAULT_MAX_PIXELS:
                    raise ImageError(f"{label} is too large ({width}×{height} pixels).")
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except FileNotFoundError as exc:
        raise ImageError(f"{label} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{label} is a folder, not an image.") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{label} is not an image file: use a black-and-white PNG (white repaints)."
        ) from exc
    except ImageError:
        raise
    except Exception as exc:  # PIL's plugins raise many types on damaged data
        raise ImageError(f"{label} is damaged and cannot be read ({exc}).") from exc
    mask = _mask_values(image)
    note = ""
    if size is not None and mask.size != (size[0], size[1]):
        note = (
            f"The mask is {mask.width}×{mask.height} but the image is {size[0]}×{size[1]}; "
            "the mask was scaled to the image."
        )
        mask = mask.resize((size[0], size[1]), Image.Resampling.BILINEAR)
    return mask, note


def _mask_values(image: Image.Image) -> Image.Image:
    if "A" in image.getbands() or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if int(np.asarray(alpha).min()) < 255:
            return ImageOps.invert(alpha)
    return to_rgb(image).convert("L")


def mask_box(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of the pixels to repaint, or None when there are
    none."""
    return mask.point(lambda v: 255 if v >= MASK_THRESHOLD else 0).getbbox()


def crop_region(
    box: tuple[int, int, int, int], padding: int, image_size: tuple[int, int], aspect: float
) -> tuple[int, int, int, int]:
    """``box`` grown by ``padding`` on every side, then to the aspect ratio ``aspect``
    (width / height) of the size it will be worked at, kept inside the image where it fits.
    """
    width, height = image_size
    left, top, right, bottom = box
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(width, right + padding), min(height, bottom + padding)
    w, h = right - left, bottom - top
    if w / h < aspect:
        w = min(width, round(h * aspect))
    else:
        h = min(height, round(w / aspect))
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    new_left = round(min(max(0, centre_x - w / 2), width - w))
    new_top = round(min(max(0, centre_y - h / 2), height - h))
    return new_left, new_top, new_left + w, new_top + h


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` with the masked part replaced by the colours around it, smoothly (A1111's
    "fill"): a pull-push pyramid of the known pixels, coarse levels first, finer ones where
    they have known pixels near."""
    hard = np.asarray(mask, dtype=np.float32) >= MASK_THRESHOLD
    known = (~hard).astype(np.float32)
    if not known.any():
        return image.copy()
    original = np.asarray(image.convert("RGB"), dtype=np.float32)
    size = image.size
    levels: list[tuple[int, int]] = []
    current = size
    while max(current) > 1:
        current = (max(1, current[0] // 2), max(1, current[1] // 2))
        levels.append(current)
    weight_sum = float(known.sum())
    estimate = np.broadcast_to(
        (original * known[..., None]).sum(axis=(0, 1)) / weight_sum, original.shape
    ).copy()
    for level in reversed(levels):
        weight = _resample(_resample(known, level, Image.Resampling.BOX), size)
        confidence = np.clip(weight * 4.0, 0.0, 1.0)[..., None]
        for c in range(3):
            plane = original[..., c] * known
            spread = _resample(_resample(plane, level, Image.Resampling.BOX), size)
            values = spread / np.maximum(weight, 1e-6)
            estimate[..., c] = values * confidence[..., 0] + estimate[..., c] * (
                1 - confidence[..., 0]
            )
    filled = np.where(hard[..., None], estimate, original)
    return Image.fromarray(np.clip(filled, 0, 255).round().astype(np.uint8), "RGB")


def _resample(
    values: np.ndarray,
    size: tuple[int, int],
    method: Image.Resampling = Image.Resampling.BILINEAR,
) -> np.ndarray:
    plane = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F")
    return np.asarray(plane.resize(size, method), dtype=np.float32)


@dataclass
class InpaintPlan:
    """One inpainting job's images: what the sampler works on and how the result goes back.

    Attributes:
        init: the init image at its own size (the composite's base).
        soft_mask: the blurred mask at the init image's size (the feather).
        box: the part of the init image worked on (the whole image unless "only masked").
        work_image: ``box`` of the init image at the request's size, pre-filled as the
            masked-content mode says.
        work_mask: the soft mask of ``box`` at the request's size.
        mode: the masked-content mode.
        notes: what the user should know (the mask was scaled, ...).
    """

    init: Image.Image
    soft_mask: Image.Image
    box: tuple[int, int, int, int]
    work_image: Image.Image
    work_mask: Image.Image
    mode: str
    notes: list[str] = field(default_factory=list)
    _preview_base: tuple[float, Image.Image, Image.Image] | None = None

    @property
    def whole_image(self) -> bool:
        return self.box == (0, 0, *self.init.size)

    def latent_mask(self, latent_size: tuple[int, int]) -> Any:
        """The soft work mask at latent size as a (1, 1, h, w) float tensor in [0, 1]."""
        import torch

        small = self.work_mask.resize(latent_size, Image.Resampling.BOX)
        values = np.asarray(small, dtype=np.float32) / 255.0
        return torch.from_numpy(values)[None, None]

    def composite(self, result: Image.Image) -> Image.Image:
        """``result`` (the work size) put back into the init image through the soft mask."""
        left, top, right, bottom = self.box
        patch = result.convert("RGB")
        if patch.size != (right - left, bottom - top):
            patch = patch.resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        placed = self.init.copy()
        placed.paste(patch, (left, top))
        return Image.composite(placed, self.init, self.soft_mask)

    def preview(self, preview: Image.Image) -> Image.Image:
        """A step preview of the work area shown in place on the whole picture (at most
        ``PREVIEW_MAX_SIDE`` pixels on its longer side)."""
        left, top, right, bottom = self.box
        scale = min(1.0, PREVIEW_MAX_SIDE / max(self.init.size))
        if self._preview_base is None or self._preview_base[0] != scale:
            size = (max(1, round(self.init.width * scale)), max(1, round(self.init.height * scale)))
            base = self.init.resize(size, Image.Resampling.BILINEAR)
            mask = self.soft_mask.resize(size, Image.Resampling.BILINEAR)
            self._preview_base = (scale, base, mask)
        _, base, mask = self._preview_base
        target = (
            round(left * scale),
            round(top * scale),
            max(round(left * scale) + 1, round(right * scale)),
            max(round(top * scale) + 1, round(bottom * scale)),
        )
        patch = preview.convert("RGB").resize(
            (target[2] - target[0], target[3] - target[1]), Image.Resampling.BILINEAR
        )
        placed = base.copy()
        placed.paste(patch, target[:2])
        return Image.composite(placed, base, mask)


def expand_canvas(
    image: Image.Image, spec: ExpandSpec
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Outpainting's canvas: ``image`` grown by ``spec``'s sides, the new part filled as
    ``spec.fill`` says; with the hard mask (255 on the new part) and the soft one, which
    also fades ``spec.feather`` pixels into the picture from each grown side, so the seam
    is repainted too and blends.

    Raises:
        ImageError: the grown picture would be larger than Sandstorm opens.
    """
    left, top, right, bottom = spec.sides()
    width, height = image.size
    size = (width + left + right, height + top + bottom)
    if size[0] * size[1] > DEFAULT_MAX_PIXELS:
        raise ImageError(
            f"The expanded picture would be {size[0]}×{size[1]} pixels, more than Sandstorm "
            f"works on ({DEFAULT_MAX_PIXELS // 1_000_000} megapixels); expand less."
        )
    pixels = np.asarray(image.convert("RGB"))
    hard = np.full((size[1], size[0]), 255, dtype=np.uint8)
    hard[top : top + height, left : left + width] = 0
    hard_mask = Image.fromarray(hard, "L")
    pad = ((top, bottom), (left, right), (0, 0))
    if spec.fill == "mirror":
        canvas = Image.fromarray(np.pad(pixels, pad, mode="symmetric"), "RGB")
    elif spec.fill == "edge":
        canvas = Image.fromarray(np.pad(pixels, pad, mode="edge"), "RGB")
    else:
        canvas = fill_masked(Image.fromarray(np.pad(pixels, pad), "RGB"), hard_mask)
    soft = hard.astype(np.float32)
    if spec.feather > 0:
        ramp = np.zeros((height, width), dtype=np.float32)
        ys, xs = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
        fade = spec.feather
        for grown, distance in (
            (left, xs[None, :]),
            (right, (width - 1 - xs)[None, :]),
            (top, ys[:, None]),
            (bottom, (height - 1 - ys)[:, None]),
        ):
            if grown:
                ramp = np.maximum(ramp, np.clip(1.0 - (distance + 0.5) / fade, 0.0, 1.0))
        soft[top : top + height, left : left + width] = ramp * 255.0
    soft_mask = Image.fromarray(np.clip(soft, 0, 255).round().astype(np.uint8), "L")
    return canvas, hard_mask, soft_mask


def work_size(region: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """The size a whole-picture repaint of ``region`` (w, h) works at: the request's
    ``width`` × ``height`` when the shapes match, else about as many pixels at the region's
    own shape (multiples of 8), so the picture is never stretched."""
    aspect = region[0] / region[1]
    if abs(aspect / (width / height) - 1) < 0.02:
        return width, height
    area = width * height
    new_width = max(64, round((area * aspect) ** 0.5 / 8) * 8)
    new_height = max(64, round(area / new_width / 8) * 8)
    return new_width, new_height


def prepare_inpaint(
    spec: MaskSpec | None,
    init_source: str | Path,
    width: int,
    height: int,
    expand: ExpandSpec | None = None,
) -> InpaintPlan:
    """Read the mask and the init image and plan the job (``width`` × ``height``: the size
    the model works at). ``expand`` grows the canvas first (outpainting): the new part and
    its seam are repainted, with the mask's part too when there is one.

    Raises:
        RequestError: the mask is all black (nothing to repaint).
        ImageError: the mask or the init image cannot be read.
    """
    if spec is None and expand is None:
        raise RequestError("Inpainting needs a mask or a side to expand.")
    init = load_image(init_source)
    notes: list[str] = []
    hard = soft = None
    if spec is not None:
        mask, note = load_mask(spec.image, init.size)
        notes += [note] if note else []
        if mask_box(mask) is None and expand is None:
            raise RequestError(
                "The mask is all black, so there is nothing to repaint: paint over the part "
                "to change (white repaints), or remove the mask to run image to image."
            )
        hard = mask
        soft = mask.filter(ImageFilter.GaussianBlur(spec.blur)) if spec.blur > 0 else mask.copy()
    if expand is not None:
        canvas, grown_hard, grown_soft = expand_canvas(init, expand)
        offset = (expand.left, expand.top)
        if hard is not None and soft is not None:
            hard = _union(grown_hard, hard, offset)
            soft = _union(grown_soft, soft, offset)
        else:
            hard, soft = grown_hard, grown_soft
        init = canvas
    assert hard is not None and soft is not None
    box = mask_box(hard)
    assert box is not None
    # Outpainting alone works on the whole picture: the model needs all of it as context.
    only_masked = spec.only_masked if spec is not None else False
    padding = spec.padding if spec is not None else 0
    mode = spec.mode if spec is not None else "original"
    # The feather spreads past the painted pixels: the work area must hold it too.
    soft_box = mask_box(soft) or box
    if only_masked and soft_box != (0, 0, *init.size):
        region = crop_region(soft_box, padding, init.size, width / height)
        size = (width, height)
    else:
        region = (0, 0, *init.size)
        size = work_size(init.size, width, height)
    work = init.crop(region)
    work_mask = soft.crop(region)
    if mode == "fill":
        work = fill_masked(work, hard.crop(region))
    work = work.resize(size, Image.Resampling.LANCZOS)
    work_mask = work_mask.resize(size, Image.Resampling.BILINEAR)
    return InpaintPlan(init, soft, region, work, work_mask, mode, notes)


def _union(base: Image.Image, part: Image.Image, offset: tuple[int, int]) -> Image.Image:
    """The lighter of ``base`` and ``part`` placed at ``offset`` on it."""
    placed = Image.new("L", base.size, 0)
    placed.paste(part, offset)
    return Image.fromarray(np.maximum(np.asarray(base), np.asarray(placed)), "L")


class LatentBlender:
    """Soft per-step masking: after each step, outside the mask the latents are the init
    image's, noised to the next step; at the end, the init image's themselves."""

    def __init__(self, init_latents: Any, mask: Any, noise: Any) -> None:
        self.init_latents = init_latents
        self.mask = mask.to(init_latents.device, init_latents.dtype)
        self.noise = noise

    def blend(self, scheduler: Any, latents: Any) -> Any:
        import torch

        timesteps = scheduler.timesteps
        index = getattr(scheduler, "step_index", None)
        if index is not None and index < len(timesteps):
            t = timesteps[index : index + 1]
            known = scheduler.add_noise(self.init_latents, self.noise, t)
        else:
            known = self.init_latents
        known = known.to(latents.dtype)
        mask = self.mask.to(latents.dtype)
        with torch.no_grad():
            return latents * mask + known * (1 - mask)


def masked_init_latents(plan: InpaintPlan, latents: Any, generator: Any) -> Any:
    """The latents the sampler starts from: under the mask, noise for "latent noise" and
    zeros for "latent nothing" (the other modes work on pixels, before encoding)."""
    import torch

    if plan.mode not in ("latent noise", "latent nothing"):
        return latents
    mask = plan.latent_mask((latents.shape[-1], latents.shape[-2]))
    hard = (mask > MASK_THRESHOLD / 255.0).to(latents.device, latents.dtype)
    if plan.mode == "latent nothing":
        fill = torch.zeros_like(latents)
    else:
        fill = torch.randn(
            latents.shape, generator=generator, dtype=torch.float32, device="cpu"
        ).to(latents.device, latents.dtype)
    return latents * (1 - hard) + fill * hard
