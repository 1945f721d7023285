"""Reading Fooocus' JSON ``parameters`` scheme (its default when not in A1111 mode)."""

from __future__ import annotations

import re

from desktop.engine.metadata.builder import RequestBuilder
from desktop.engine.metadata.comfyui import map_comfy_sampler
from desktop.engine.request import GenerationRequest


def request_from_fooocus(data: dict) -> tuple[GenerationRequest | None, dict, str]:
    """Fooocus' JSON ``parameters`` scheme (its default when not in A1111 mode)."""
    builder = RequestBuilder()
    builder.text("prompt", data.get("prompt"))
    builder.text("negative_prompt", data.get("negative_prompt"))
    builder.integer("steps", "steps", data.get("steps"))
    builder.real("cfg_scale", "guidance_scale", data.get("guidance_scale"))
    builder.seed("seed", data.get("seed"))
    resolution = data.get("resolution")
    if isinstance(resolution, str):
        numbers = re.findall(r"\d+", resolution)
        if len(numbers) == 2:
            builder.size(numbers[0], numbers[1], "resolution")
    sampler = str(data.get("sampler", ""))
    mapped, schedule = map_comfy_sampler(sampler, str(data.get("scheduler", "normal")))
    builder.sampler(mapped, schedule, sampler, "sampler")
    model = data.get("base_model")
    if isinstance(model, str):
        builder.text("model", model)
    used = {"prompt", "negative_prompt", "steps", "guidance_scale", "seed", "resolution"}
    used |= {"sampler", "scheduler", "base_model"}
    builder.extras.update({k: v for k, v in data.items() if k not in used})
    return builder.build(), builder.extras, model if isinstance(model, str) else ""
