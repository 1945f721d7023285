"""Sampler names users know from AUTOMATIC1111 / ComfyUI, mapped to diffusers schedulers.

This is the only table of samplers in the project. Importing this module is cheap: it
names scheduler classes as strings and imports diffusers only in ``make_scheduler``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

SCHEDULES: tuple[str, ...] = ("Automatic", "Karras", "Exponential")
_ALL = SCHEDULES
_AUTO_ONLY = ("Automatic",)


@dataclass(frozen=True)
class SamplerSpec:
    """One row of the sampler table.

    Attributes:
        name: what the user sees.
        scheduler: diffusers scheduler class name.
        options: extra scheduler config values.
        schedules: schedule types this scheduler supports.
        default_steps: a good step count for this sampler.
        requires: an importable module the scheduler needs, if any.
        x0_from_model_outputs: the scheduler keeps its x0 predictions in ``model_outputs``
            (multistep solvers) rather than returning ``pred_original_sample``.
    """

    name: str
    scheduler: str
    options: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[str, ...] = _ALL
    default_steps: int = 20
    requires: str | None = None
    x0_from_model_outputs: bool = False


_TABLE = (
    SamplerSpec("Euler", "EulerDiscreteScheduler"),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", schedules=_AUTO_ONLY),
    SamplerSpec("Heun", "HeunDiscreteScheduler", default_steps=10),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", default_steps=10),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", default_steps=10),
    SamplerSpec(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        x0_from_model_outputs=True,
    ),
    SamplerSpec(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        x0_from_model_outputs=True,
    ),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", default_steps=10, requires="torchsde"),
    SamplerSpec("DDIM", "DDIMScheduler", schedules=_AUTO_ONLY),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, schedules=_AUTO_ONLY),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", x0_from_model_outputs=True),
    SamplerSpec("LMS", "LMSDiscreteScheduler", requires="scipy"),
    SamplerSpec("LCM", "LCMScheduler", schedules=_AUTO_ONLY, default_steps=6),
)

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in _TABLE}

_SCHEDULE_OPTIONS = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
}


def is_available(name: str) -> bool:
    """True when the sampler's optional dependency (if any) is installed."""
    spec = SAMPLERS[name]
    return spec.requires is None or importlib.util.find_spec(spec.requires) is not None


def available_samplers() -> list[str]:
    """Sampler names usable on this installation, in table order."""
    return [name for name in SAMPLERS if is_available(name)]


def make_scheduler(name: str, schedule: str, base_config: dict[str, Any]) -> Any:
    """Build the diffusers scheduler for ``name``/``schedule`` from a model's scheduler config.

    ``base_config`` carries the model's training schedule (betas, prediction type, ...);
    values a sampler cannot use are ignored by diffusers' ``from_config``.
    """
    from desktop.engine.errors import RequestError

    spec = SAMPLERS.get(name)
    if spec is None:
        raise RequestError(f"Unknown sampler {name!r}.")
    if not is_available(name):
        raise RequestError(
            f"The {name} sampler needs the '{spec.requires}' package, which is not installed."
        )
    if schedule not in spec.schedules:
        raise RequestError(f"The {name} sampler does not support the {schedule} schedule.")
    import diffusers

    cls = getattr(diffusers, spec.scheduler)
    config = {
        k: v for k, v in base_config.items() if not k.startswith("use_") or k == "use_flow_sigmas"
    }
    config.update(spec.options)
    config.update(_SCHEDULE_OPTIONS[schedule])
    if spec.scheduler == "DPMSolverMultistepScheduler":
        config.setdefault("final_sigmas_type", "zero")
    return cls.from_config(config)
