"""The one input to a generation: a frozen, validated ``GenerationRequest``.

**This is the one place where a generation setting is declared.** Each field below is made
with ``setting(default, label=..., ...)`` (see ``desktop.engine.schema.Setting``); from that
declaration the window's panels build their editors, the last used values are remembered,
the gallery index gets its columns, the AUTOMATIC1111 infotext is written and read back,
``sandstorm info`` lists the value and ``sandstorm generate`` gets a command-line flag. Field
order is the infotext's order. List parts (LoRAs, control layers, reference images, the mask,
the hires pass) are declared in ``desktop.engine.parts``.

Panels build a request when the user presses Generate, the command line builds it from
arguments, the metadata reader builds it from an image; the engine reads nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

from desktop.engine import schema
from desktop.engine.errors import RequestError
from desktop.engine.parts import (
    ControlUnit,
    ExpandSpec,
    HiresSpec,
    LoraRef,
    MaskSpec,
    ReferenceImage,
)
from desktop.engine.samplers import SAMPLERS, SCHEDULES
from desktop.engine.schema import FieldInfo, setting

#: Version of ``to_dict`` data; 2 added the list parts.
REQUEST_VERSION = 2
SEED_MAX = 2**32 - 1
MIN_SIZE, MAX_SIZE = 32, 4096
MAX_CLIP_SKIP = 12
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH = 16
MAX_PROMPT_CHARS = 100_000


def snap_size(value: int) -> int:
    """Round a width or height to the nearest allowed multiple of 8 within bounds."""
    snapped = round(value / 8.0) * 8
    return max(MIN_SIZE, min(MAX_SIZE, snapped))


def _is_img2img(request: GenerationRequest) -> bool:
    return request.init_image is not None


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs. Invalid values raise ``RequestError`` on creation.

    ``seed`` is -1 for "random"; ``resolved()`` returns a copy with a concrete seed, which is
    what gets recorded. Image ``i`` of a batch uses ``seed + i``. ``init_image`` is a path;
    when it is set the request is img2img and ``strength`` is the denoising strength.
    ``model`` and ``vae`` are file/folder paths or discovered names; empty means default.
    """

    prompt: str = setting(
        label="Prompt", help="What the image should show", panel="prompt", index=True
    )
    negative_prompt: str = setting(
        "",
        label="Negative prompt",
        help="What the image should not show",
        panel="prompt",
        index=True,
        cli="--negative",
    )
    steps: int = setting(
        20,
        label="Steps",
        help="Denoising steps: more is slower and usually finer",
        infotext="Steps",
        minimum=1,
        maximum=MAX_STEPS,
        panel="sampler",
        index=True,
        model_default=True,
    )
    sampler: str = setting(
        "Euler",
        label="Sampler",
        help="The sampling method (same names as in other SD tools), e.g. 'DPM++ 2M'",
        infotext="Sampler",
        choices=lambda: tuple(SAMPLERS),
        panel="sampler",
        index=True,
        model_default=True,
    )
    schedule: str = setting(
        "Automatic",
        label="Schedule type",
        help="How noise levels are spaced: " + ", ".join(SCHEDULES),
        infotext="Schedule type",
        infotext_default="Automatic",
        choices=SCHEDULES,
        panel="sampler",
        index=True,
    )
    cfg_scale: float = setting(
        7.0,
        label="CFG scale",
        help="Classifier-free guidance: how strictly to follow the prompt",
        infotext="CFG scale",
        minimum=0.0,
        maximum=MAX_CFG,
        step=0.5,
        decimals=1,
        panel="sampler",
        index=True,
        cli="--cfg",
        model_default=True,
    )
    seed: int = setting(
        -1,
        label="Seed",
        help="Seed of the noise; -1 picks a random seed for every job",
        infotext="Seed",
        minimum=-1,
        maximum=SEED_MAX,
        panel="sampler",
        index=True,
        remember=False,
    )
    width: int = setting(
        512,
        label="Width",
        help="Width in pixels (multiple of 8)",
        infotext="Size",
        minimum=MIN_SIZE,
        maximum=MAX_SIZE,
        step=8,
        unit="px",
        panel="sampler",
        index=True,
        model_default=True,
    )
    height: int = setting(
        512,
        label="Height",
        help="Height in pixels (multiple of 8)",
        infotext="Size",
        minimum=MIN_SIZE,
        maximum=MAX_SIZE,
        step=8,
        unit="px",
        panel="sampler",
        index=True,
        model_default=True,
    )
    model: str = setting(
        "",
        label="Model",
        help="Model file/folder path or discovered name; empty: the default model",
        infotext="Model",
        panel="prompt",
    )
    vae: str = setting(
        "",
        label="VAE",
        help="VAE override (path or name in models/vae); empty: the model's own",
        infotext="VAE",
    )
    strength: float = setting(
        0.75,
        label="Denoising strength",
        help="How much img2img changes the init image (1 = entirely)",
        infotext="Denoising strength",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        panel="img2img",
        relevant=_is_img2img,
    )
    # After "Denoising strength", where AUTOMATIC1111 writes it in the infotext.
    clip_skip: int = setting(
        1,
        label="Clip skip",
        help="Read the text encoder this many layers from the end (1 = the last layer, "
        "AUTOMATIC1111's numbering; 2 suits many anime models)",
        infotext="Clip skip",
        infotext_default=1,
        minimum=1,
        maximum=MAX_CLIP_SKIP,
        panel="sampler",
        index=True,
    )
    batch_size: int = setting(
        1,
        label="Batch size",
        help="Images per job (seeds seed, seed+1, …)",
        infotext="Batch size",
        infotext_default=1,
        minimum=1,
        maximum=MAX_BATCH,
        panel="sampler",
        cli="--batch",
    )
    init_image: str | None = setting(
        None,
        label="Init image",
        help="Image for img2img; none means text-to-image",
        panel="img2img",
        remember=False,
    )
    loras: tuple[LoraRef, ...] = setting((), label="LoRAs", cli="-")
    controls: tuple[ControlUnit, ...] = setting((), label="Control layers", cli="-")
    references: tuple[ReferenceImage, ...] = setting((), label="Reference images", cli="-")
    mask: MaskSpec | None = setting(None, label="Mask", cli="-", remember=False)
    expand: ExpandSpec | None = setting(None, label="Outpaint", cli="-", remember=False)
    hires: HiresSpec | None = setting(
        None,
        label="Hires fix",
        help="Generate at the base size, upscale, then refine with a second pass",
        cli="-",
        panel="sampler",
    )

    def __post_init__(self) -> None:
        schema.validate(self)
        self._check_text()
        self._check_sampling()
        self._check_size()
        self._check_img2img()
        self._check_parts()

    # -- validation across settings ---------------------------------------------------------
    def _check_text(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if len(getattr(self, name)) > MAX_PROMPT_CHARS:
                raise RequestError(
                    f"The {label(name).lower()} is longer than {MAX_PROMPT_CHARS:,} characters."
                )

    def _check_sampling(self) -> None:
        spec = SAMPLERS[self.sampler]
        if self.schedule not in spec.schedules:
            raise RequestError(
                f"The {self.sampler} sampler does not support the {self.schedule} schedule; "
                f"use {' or '.join(spec.schedules)}."
            )
        if self.seed != -1 and self.seed + self.batch_size - 1 > SEED_MAX:
            raise RequestError(
                "Seed plus batch size runs past the largest seed; pick a smaller seed."
            )

    def _check_size(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 8:
                raise RequestError(
                    f"{label(name)} must be a multiple of 8 (got {value}; try {snap_size(value)})."
                )

    def _check_img2img(self) -> None:
        if self.init_image is None:
            return
        if not 0.0 < self.strength <= 1.0:
            raise RequestError(
                f"Denoising strength must be above 0 and at most 1 (got {self.strength:g}); "
                "at 0 the image would not change."
            )
        if self.img2img_steps < 1:
            raise RequestError(
                f"{self.steps} steps at denoising strength {self.strength:g} would run no step; "
                "raise the steps or the strength."
            )

    def _check_parts(self) -> None:
        if self.mask is not None and self.init_image is None:
            raise RequestError("A mask needs an init image to repaint; add one in img2img.")
        if self.expand is not None and self.init_image is None:
            raise RequestError("Outpainting needs an init image to grow; add one in img2img.")

    # -- derived values ---------------------------------------------------------------------
    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    @property
    def img2img_steps(self) -> int:
        """Denoising steps that actually run for img2img (diffusers' strength semantics)."""
        return min(int(self.steps * self.strength), self.steps)

    @property
    def denoising_steps(self) -> int:
        """Steps the sampler reports progress for (img2img runs only part of them)."""
        return self.img2img_steps if self.is_img2img else self.steps

    def resolved(self, rng: random.Random | None = None) -> GenerationRequest:
        """Return a copy whose seed is concrete (a random one when ``seed`` is -1)."""
        if self.seed != -1:
            return self
        rng = rng or random.SystemRandom()
        return dataclasses.replace(self, seed=rng.randint(0, SEED_MAX - self.batch_size + 1))

    def for_image(self, index: int) -> GenerationRequest:
        """The request that reproduces image ``index`` of this batch on its own."""
        if self.seed == -1:
            raise RequestError("Resolve the seed before asking for a single image's request.")
        return dataclasses.replace(self, seed=self.seed + index, batch_size=1)

    def replace(self, **changes: Any) -> GenerationRequest:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def used_parts(self) -> list[str]:
        """Labels of the list parts this request uses ("LoRAs", "Mask", ...)."""
        return [
            info.label
            for info in request_fields()
            if info.kind in ("part", "parts") and getattr(self, info.name)
        ]

    # -- values by name (forms, settings, the CLI) ------------------------------------------
    def values(self) -> dict[str, Any]:
        """Every setting by name (parts as objects)."""
        return {info.name: getattr(self, info.name) for info in request_fields()}

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> GenerationRequest:
        """Build from setting values by name; unknown names are ignored, and a value that
        does not matter for this request (e.g. strength without an init image) is reset to
        its default so equal requests compare equal."""
        known = {k: v for k, v in values.items() if k in field_names()}
        request = cls(**known)
        reset = {
            info.name: info.default
            for info in request_fields()
            if not info.spec.is_relevant(request) and getattr(request, info.name) != info.default
        }
        return request.replace(**reset) if reset else request

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = schema.to_plain(self)
        data["version"] = REQUEST_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Build from ``to_dict`` output; unknown keys are ignored, newer versions refused."""
        if not isinstance(data, dict):
            raise RequestError("Request data must be a JSON object.")
        version = data.get("version", REQUEST_VERSION)
        if not isinstance(version, int) or version > REQUEST_VERSION:
            raise RequestError(f"Request version {version!r} is newer than this Sandstorm.")
        if "prompt" not in data:
            raise RequestError("Request data has no prompt.")
        request: GenerationRequest = schema.from_plain(cls, data, "Request data")
        return request

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"Request data is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def request_fields() -> tuple[FieldInfo, ...]:
    """The declared settings of a request, in declaration (and infotext) order."""
    return schema.fields_of(GenerationRequest)


def field_names() -> frozenset[str]:
    return frozenset(info.name for info in request_fields())


def request_field(name: str) -> FieldInfo:
    """One declared setting by name (``KeyError`` when there is none)."""
    return schema.field_map(GenerationRequest)[name]


def label(name: str) -> str:
    """The user-facing label of a setting."""
    return request_field(name).label


def panel_fields(panel: str) -> tuple[FieldInfo, ...]:
    """The settings a window panel edits, in declaration order."""
    return tuple(info for info in request_fields() if info.spec.panel == panel)


def remembered(request: GenerationRequest) -> dict[str, Any]:
    """The values worth restoring on the next launch, as JSON-ready data."""
    data = schema.to_plain(request)
    return {info.name: data[info.name] for info in request_fields() if info.spec.remember}
