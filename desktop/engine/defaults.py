"""Sensible starting values for a model family (what the panels and CLI fill in)."""

from __future__ import annotations

from dataclasses import dataclass

from desktop.engine.models import ModelInfo


@dataclass(frozen=True)
class ModelDefaults:
    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int


_FAMILY_DEFAULTS = {
    "sd1": ModelDefaults("DPM++ 2M", 25, 7.0, 512, 512),
    "sd2": ModelDefaults("DPM++ 2M", 25, 7.0, 768, 768),
    "sdxl": ModelDefaults("DPM++ 2M", 30, 6.0, 1024, 1024),
}


def defaults_for(info: ModelInfo) -> ModelDefaults:
    """Defaults for ``info``; the built-in model carries its own in ``sandstorm.json``."""
    base = _FAMILY_DEFAULTS.get(info.family.split("-")[0], _FAMILY_DEFAULTS["sd1"])
    extras = info.extras
    size = int(extras.get("native_size", info.native_size or base.width))
    return ModelDefaults(
        sampler=str(extras.get("default_sampler", base.sampler)),
        steps=int(extras.get("default_steps", base.steps)),
        cfg_scale=float(extras.get("default_cfg", base.cfg_scale)),
        width=size,
        height=size,
    )
