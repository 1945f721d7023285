"""The list parts of a request: LoRAs, control layers, reference images, a mask, a hires pass.

Each part is a frozen dataclass whose fields are declared with ``setting`` like the request's
own, so it is validated, serialised and read back by the same machinery. Each part also says
how it appears in AUTOMATIC1111's infotext (``infotext_items``) and, where the infotext holds
all of it, how it is read back (``from_infotext``). Parts that need an image (controls,
references, the mask) are written to the infotext for other tools but read back only from
Sandstorm's own chunk, which records the image paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from desktop.engine.errors import RequestError
from desktop.engine.schema import format_value, setting, validate

CONTROL_TYPES = ("canny", "scribble", "lineart", "tile", "inpaint", "control map")
#: AUTOMATIC1111's ways of fitting a control image of another shape to the picture.
CONTROL_RESIZE_MODES = ("Crop and Resize", "Just Resize", "Resize and Fill")
MASK_MODES = ("original", "fill", "latent noise", "latent nothing")
#: How outpainting fills the new canvas before the repaint: the colours around smoothed
#: ("fill"), the picture mirrored at its edge ("mirror"), its edge pixels stretched ("edge").
EXPAND_FILLS = ("fill", "mirror", "edge")
#: The most pixels outpainting adds on one side.
MAX_EXPAND = 2048
UPSCALERS_BUILTIN = ("Latent", "Lanczos")


def _non_empty(value: str, label: str) -> None:
    if not value.strip():
        raise RequestError(f"{label} must not be empty.")


@dataclass(frozen=True)
class LoraRef:
    """One LoRA applied to the model, with separate UNet and text-encoder strengths."""

    name: str = setting(label="LoRA name", help="File name (without extension) in a LoRA folder")
    unet_strength: float = setting(
        1.0, label="LoRA UNet strength", minimum=-10.0, maximum=10.0, step=0.05
    )
    text_strength: float = setting(
        1.0, label="LoRA text-encoder strength", minimum=-10.0, maximum=10.0, step=0.05
    )

    def __post_init__(self) -> None:
        validate(self)
        _non_empty(self.name, "A LoRA's name")
        if any(c in self.name for c in "<>:"):
            raise RequestError(f"A LoRA's name cannot contain '<', '>' or ':' ({self.name!r}).")

    def tag(self) -> str:
        """The prompt tag AUTOMATIC1111 writes: ``<lora:name:te>`` or ``<lora:name:te:unet>``."""
        te, unet = format_value(self.text_strength), format_value(self.unet_strength)
        return f"<lora:{self.name}:{te}>" if te == unet else f"<lora:{self.name}:{te}:{unet}>"


_LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::([^:<>]*))?>", re.IGNORECASE)


def extract_lora_tags(prompt: str) -> tuple[str, tuple[LoraRef, ...], list[str]]:
    """Split ``<lora:…>`` tags out of a prompt: (prompt without them, LoRAs, problems)."""
    loras: list[LoraRef] = []
    problems: list[str] = []

    def take(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        try:
            te = float(match.group(2)) if match.group(2) not in (None, "") else 1.0
            unet = float(match.group(3)) if match.group(3) not in (None, "") else te
            loras.append(LoraRef(name, unet_strength=unet, text_strength=te))
        except (ValueError, RequestError) as exc:
            problems.append(f"{match.group(0)}: {exc}")
            return match.group(0)
        return ""

    text = _LORA_TAG.sub(take, prompt)
    if loras:
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r",\s*(?=,)", "", text).strip().strip(",").strip()
    return text, tuple(loras), problems


@dataclass(frozen=True)
class ControlUnit:
    """A control layer: a ControlNet guided by an image over part of the denoising."""

    type: str = setting(label="Control type", choices=CONTROL_TYPES)
    image: str = setting(label="Control image", help="The control image file")
    model: str = setting("", label="ControlNet model", help="Empty: the suggested model")
    strength: float = setting(1.0, label="Control strength", minimum=0.0, maximum=2.0, step=0.05)
    start: float = setting(0.0, label="Control start", minimum=0.0, maximum=1.0, step=0.05)
    end: float = setting(1.0, label="Control end", minimum=0.0, maximum=1.0, step=0.05)
    resize: str = setting(
        "Crop and Resize",
        label="Resize mode",
        help="How a control image of another shape is fitted to the picture",
        choices=CONTROL_RESIZE_MODES,
    )

    def __post_init__(self) -> None:
        validate(self)
        _non_empty(self.image, "A control layer's image")
        if self.start >= self.end:
            raise RequestError(
                f"A control layer's start ({self.start:g}) must be before its end ({self.end:g})."
            )


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image steering the result through an IP-Adapter."""

    image: str = setting(label="Reference image")
    weight: float = setting(1.0, label="Reference weight", minimum=0.0, maximum=2.0, step=0.05)
    model: str = setting("", label="IP-Adapter model", help="Empty: the suggested adapter")

    def __post_init__(self) -> None:
        validate(self)
        _non_empty(self.image, "A reference image")


@dataclass(frozen=True)
class MaskSpec:
    """Inpainting: repaint where the mask image is white."""

    image: str = setting(
        label="Mask image",
        help="Black-and-white image: white repaints, black keeps (or transparent repaints)",
        cli="--mask",
    )
    blur: int = setting(
        4,
        label="Mask blur",
        help="Feather of the mask's edge",
        minimum=0,
        maximum=64,
        unit="px",
        cli="--mask-blur",
    )
    mode: str = setting(
        "original",
        label="Masked content",
        help="What the repaint starts from under the mask",
        choices=MASK_MODES,
        cli="--mask-mode",
    )
    padding: int = setting(
        32,
        label="Only masked padding",
        help="Context around the mask when only the masked part is worked on",
        minimum=0,
        maximum=256,
        unit="px",
        cli="--mask-padding",
    )
    only_masked: bool = setting(
        True,
        label="Only masked",
        help="Work on the mask's box at full resolution (off: the whole picture)",
        cli="--only-masked",
    )

    def __post_init__(self) -> None:
        validate(self)
        _non_empty(self.image, "The mask image")


def _expand_side(side: str) -> Any:
    return setting(
        0,
        label=f"Expand {side}",
        help=f"Pixels added on the {side} of the picture (outpainting)",
        minimum=0,
        maximum=MAX_EXPAND,
        step=8,
        unit="px",
        cli="-",
    )


@dataclass(frozen=True)
class ExpandSpec:
    """Outpainting: grow the init image's canvas and paint the new part (and a seam into the
    picture) with the same inpainting pass as a mask."""

    left: int = _expand_side("left")
    right: int = _expand_side("right")
    top: int = _expand_side("top")
    bottom: int = _expand_side("bottom")
    fill: str = setting(
        "fill",
        label="Expand fill",
        help="What the new canvas starts as: the colours around, a mirror image or the edge",
        choices=EXPAND_FILLS,
        cli="--expand-fill",
    )
    feather: int = setting(
        32,
        label="Seam",
        help="How far into the picture the repaint fades out, so the join does not show",
        minimum=0,
        maximum=256,
        unit="px",
        cli="--expand-seam",
    )

    def __post_init__(self) -> None:
        validate(self)
        if not any(self.sides()):
            raise RequestError("Outpainting needs at least one side to expand.")

    def sides(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels."""
        return (self.left, self.top, self.right, self.bottom)

    def text(self) -> str:
        """``left 0, right 256, top 0, bottom 0`` for the infotext and ``--expand``."""
        return ", ".join(f"{side} {getattr(self, side)}" for side in EXPAND_SIDES)


EXPAND_SIDES = ("left", "right", "top", "bottom")


def parse_expand(text: str) -> dict[str, int]:
    """The sides of ``--expand``: "256" (every side), "0,256,0,0" (left, right, top, bottom)
    or "right=256,bottom=128". Raises ``RequestError`` naming what is wrong."""
    cleaned = text.strip().lower()
    try:
        if "=" in cleaned or any(side in cleaned for side in EXPAND_SIDES):
            sides = dict.fromkeys(EXPAND_SIDES, 0)
            for item in re.split(r"[,;]\s*", cleaned):
                name, _, value = item.replace(" ", "=", 1).partition("=")
                if name.strip() not in sides:
                    raise ValueError(item)
                sides[name.strip()] = int(value.strip())
            return sides
        values = [int(v) for v in re.split(r"[,\s]+", cleaned) if v]
    except ValueError as exc:
        raise RequestError(
            f"Cannot read the expansion “{text}”: give pixels as 256 (every side), "
            "0,256,0,0 (left, right, top, bottom) or right=256,bottom=128."
        ) from exc
    if len(values) == 1:
        values *= 4
    if len(values) != 4:
        raise RequestError(
            f"The expansion “{text}” has {len(values)} numbers: give one (every side) or "
            "four (left, right, top, bottom)."
        )
    return dict(zip(EXPAND_SIDES, values, strict=True))


@dataclass(frozen=True)
class HiresSpec:
    """Hires fix: upscale the first result, then a second img2img pass at the larger size."""

    scale: float = setting(2.0, label="Hires upscale", minimum=1.0, maximum=4.0, step=0.05)
    upscaler: str = setting("Latent", label="Hires upscaler")
    steps: int = setting(0, label="Hires steps", minimum=0, maximum=150, help="0: same as steps")
    denoise: float = setting(0.5, label="Hires denoise", minimum=0.0, maximum=1.0, step=0.05)

    def __post_init__(self) -> None:
        validate(self)
        _non_empty(self.upscaler, "The hires upscaler")


# -- infotext ---------------------------------------------------------------------------------

Pairs = list[tuple[str, str]]


def _unit_text(items: Pairs) -> str:
    return json.dumps(", ".join(f"{k}: {v}" for k, v in items), ensure_ascii=False)


def controls_infotext(units: tuple[ControlUnit, ...]) -> Pairs:
    """``ControlNet 0: "Module: canny, Model: …, Weight: 1, …"`` as A1111's extension writes."""
    return [
        (
            f"ControlNet {i}",
            _unit_text(
                [
                    ("Module", u.type),
                    ("Model", u.model or "None"),
                    ("Weight", format_value(u.strength)),
                    ("Resize Mode", u.resize),
                    ("Guidance Start", format_value(u.start)),
                    ("Guidance End", format_value(u.end)),
                ]
            ),
        )
        for i, u in enumerate(units)
    ]


def references_infotext(refs: tuple[ReferenceImage, ...]) -> Pairs:
    return [
        (
            f"IP-Adapter {i}",
            _unit_text([("Model", r.model or "None"), ("Weight", format_value(r.weight))]),
        )
        for i, r in enumerate(refs)
    ]


def mask_infotext(mask: MaskSpec | None) -> Pairs:
    if mask is None:
        return []
    return [
        ("Mask blur", str(mask.blur)),
        ("Masked content", mask.mode),
        ("Inpaint area", "Only masked" if mask.only_masked else "Whole picture"),
        ("Only masked padding, pixels", str(mask.padding)),
    ]


def expand_infotext(expand: ExpandSpec | None) -> Pairs:
    if expand is None:
        return []
    return [
        ("Outpaint", expand.text()),
        ("Outpaint fill", expand.fill),
        ("Outpaint seam", str(expand.feather)),
    ]


def hires_infotext(hires: HiresSpec | None, is_img2img: bool) -> Pairs:
    if hires is None:
        return []
    pairs = [("Hires upscale", format_value(hires.scale))]
    if hires.steps:
        pairs.append(("Hires steps", str(hires.steps)))
    pairs.append(("Hires upscaler", hires.upscaler))
    if not is_img2img:  # A1111 writes the hires denoise under the img2img key
        pairs.append(("Denoising strength", format_value(hires.denoise)))
    return pairs


def hires_from_infotext(params: dict[str, str]) -> tuple[HiresSpec | None, list[str]]:
    """Read a hires pass back (removes the keys it used from ``params``)."""
    if "Hires upscale" not in params:
        return None, []
    values: dict[str, Any] = {}
    used = ["Hires upscale", "Hires steps", "Hires upscaler"]
    converters: dict[str, tuple[str, Callable[[str], Any]]] = {
        "Hires upscale": ("scale", float),
        "Hires steps": ("steps", lambda t: int(float(t))),
        "Hires upscaler": ("upscaler", str),
        "Denoising strength": ("denoise", float),
    }
    for key, (name, convert) in converters.items():
        if key in params:
            try:
                values[name] = convert(params[key].strip())
            except ValueError:
                return None, []
    try:
        spec = HiresSpec(**values)
    except RequestError:
        return None, []
    for key in [*used, "Denoising strength"]:
        params.pop(key, None)
    return spec, used
