"""The one input to a generation: a frozen, validated ``GenerationRequest``.

Panels build it when the user presses Generate, the command line builds it from arguments,
the metadata reader builds it from an image; the engine reads nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

from desktop.engine.errors import RequestError
from desktop.engine.samplers import SAMPLERS, SCHEDULES

REQUEST_VERSION = 1
SEED_MAX = 2**32 - 1
MIN_SIZE, MAX_SIZE = 32, 4096
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH = 16
MAX_PROMPT_CHARS = 100_000


def snap_size(value: int) -> int:
    """Round a width or height to the nearest allowed multiple of 8 within bounds."""
    snapped = round(value / 8.0) * 8
    return max(MIN_SIZE, min(MAX_SIZE, snapped))


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs. Invalid values raise ``RequestError`` on creation.

    ``seed`` is -1 for "random"; ``resolved()`` returns a copy with a concrete seed, which is
    what gets recorded. Image ``i`` of a batch uses ``seed + i``. ``init_image`` is a path;
    when it is set the request is img2img and ``strength`` is the denoising strength.
    ``model`` and ``vae`` are file/folder paths or discovered names; empty means default.
    """

    prompt: str
    negative_prompt: str = ""
    model: str = ""
    vae: str = ""
    sampler: str = "Euler"
    schedule: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    batch_size: int = 1
    init_image: str | None = None
    strength: float = 0.75

    def __post_init__(self) -> None:
        self._check_types()
        self._check_text()
        self._check_sampling()
        self._check_size()
        self._check_img2img()

    # -- validation -------------------------------------------------------------------
    def _check_types(self) -> None:
        for name in ("steps", "seed", "width", "height", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError(f"{_label(name)} must be a whole number, not {value!r}.")
        for name in ("cfg_scale", "strength"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"{_label(name)} must be a number, not {value!r}.")
            if value != value:  # NaN
                raise RequestError(f"{_label(name)} must be a number, not NaN.")
            if abs(value) > 1e300:  # also keeps huge ints from overflowing float formatting
                raise RequestError(f"{_label(name)} is far out of range.")

    def _check_text(self) -> None:
        for name in ("prompt", "negative_prompt", "model", "vae", "sampler", "schedule"):
            if not isinstance(getattr(self, name), str):
                raise RequestError(f"{_label(name)} must be text.")
        for name in ("prompt", "negative_prompt"):
            if len(getattr(self, name)) > MAX_PROMPT_CHARS:
                raise RequestError(
                    f"The {_label(name).lower()} is longer than {MAX_PROMPT_CHARS:,} characters."
                )

    def _check_sampling(self) -> None:
        spec = SAMPLERS.get(self.sampler)
        if spec is None:
            known = ", ".join(SAMPLERS)
            raise RequestError(f"Unknown sampler {self.sampler!r}. Choose one of: {known}.")
        if self.schedule not in SCHEDULES:
            raise RequestError(
                f"Unknown schedule type {self.schedule!r}. Choose one of: {', '.join(SCHEDULES)}."
            )
        if self.schedule not in spec.schedules:
            raise RequestError(
                f"The {self.sampler} sampler does not support the {self.schedule} schedule; "
                f"use {' or '.join(spec.schedules)}."
            )
        if not 1 <= self.steps <= MAX_STEPS:
            raise RequestError(f"Steps must be between 1 and {MAX_STEPS} (got {self.steps}).")
        if not 0.0 <= self.cfg_scale <= MAX_CFG:
            raise RequestError(
                f"CFG scale must be between 0 and {MAX_CFG:g} (got {self.cfg_scale:g})."
            )
        if not (self.seed == -1 or 0 <= self.seed <= SEED_MAX):
            raise RequestError(
                f"Seed must be -1 (random) or between 0 and {SEED_MAX} (got {self.seed})."
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise RequestError(
                f"Batch size must be between 1 and {MAX_BATCH} (got {self.batch_size})."
            )
        if self.seed != -1 and self.seed + self.batch_size - 1 > SEED_MAX:
            raise RequestError(
                "Seed plus batch size runs past the largest seed; pick a smaller seed."
            )

    def _check_size(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise RequestError(
                    f"{_label(name)} must be between {MIN_SIZE} and {MAX_SIZE} pixels "
                    f"(got {value})."
                )
            if value % 8:
                raise RequestError(
                    f"{_label(name)} must be a multiple of 8 (got {value}; try {snap_size(value)})."
                )

    def _check_img2img(self) -> None:
        if self.init_image is None:
            return
        if not isinstance(self.init_image, str) or not self.init_image:
            raise RequestError("The init image must be a file path.")
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

    # -- derived values ---------------------------------------------------------------
    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    @property
    def img2img_steps(self) -> int:
        """Denoising steps that actually run for img2img (diffusers' strength semantics)."""
        return min(int(self.steps * self.strength), self.steps)

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

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
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
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "prompt" not in kwargs:
            raise RequestError("Request data has no prompt.")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"Request data is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _label(name: str) -> str:
    return {
        "cfg_scale": "CFG scale",
        "batch_size": "Batch size",
        "negative_prompt": "Negative prompt",
        "init_image": "Init image",
    }.get(name, name.replace("_", " ").capitalize())
