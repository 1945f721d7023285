"""What the panels hold, as plain data, and the one place that turns it into a request.

Widgets fill a ``FormState``; ``FormState.to_request`` builds the frozen
``GenerationRequest`` (raising ``RequestError`` with a user-facing message), and
``FormState`` round-trips through ``Settings`` so a restart restores the panels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from desktop.engine.request import GenerationRequest
from desktop.engine.settings import Settings

#: Size presets per model family, native size first.
SIZE_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    "sd1": ((512, 512), (512, 768), (768, 512), (640, 448), (448, 640)),
    "sd2": ((768, 768), (768, 1024), (1024, 768), (512, 512)),
    "sdxl": (
        (1024, 1024),
        (896, 1152),
        (1152, 896),
        (832, 1216),
        (1216, 832),
        (768, 1344),
        (1344, 768),
    ),
}


def size_presets(family: str, native_size: int = 0) -> tuple[tuple[int, int], ...]:
    """Sizes offered for a model family; the built-in model offers its native size."""
    base = family.split("-")[0]
    if base in SIZE_PRESETS:
        return SIZE_PRESETS[base]
    side = native_size or 512
    return ((side, side), (side * 2, side * 2), (side, side * 3 // 2), (side * 3 // 2, side))


@dataclass
class FormState:
    """The panels' values. ``init_image`` None means txt2img."""

    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""
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

    def to_request(self) -> GenerationRequest:
        """The frozen request; raises ``RequestError`` when a value is invalid."""
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            model=self.model,
            sampler=self.sampler,
            schedule=self.schedule,
            steps=self.steps,
            cfg_scale=float(self.cfg_scale),
            seed=self.seed,
            width=self.width,
            height=self.height,
            batch_size=self.batch_size,
            init_image=self.init_image,
            strength=float(self.strength) if self.init_image else 0.75,
        )

    def store(self, settings: Settings) -> None:
        """Copy the values worth remembering into ``settings`` (the init image is not)."""
        settings.last_model = self.model
        settings.prompt = self.prompt
        settings.negative_prompt = self.negative_prompt
        settings.sampler = self.sampler
        settings.schedule = self.schedule
        settings.steps = self.steps
        settings.cfg_scale = float(self.cfg_scale)
        settings.width = self.width
        settings.height = self.height
        settings.batch_size = self.batch_size
        settings.strength = float(self.strength)

    @classmethod
    def from_settings(cls, settings: Settings) -> FormState:
        """Panels' values from settings; zero/empty settings keep the defaults."""
        state = cls()
        for f in dataclasses.fields(cls):
            if f.name == "model":
                value = settings.last_model
            elif hasattr(settings, f.name):
                value = getattr(settings, f.name)
            else:
                continue
            if value not in ("", 0, 0.0, None):
                setattr(state, f.name, value)
        return state
