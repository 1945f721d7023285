"""Reading InvokeAI's ``invokeai_metadata`` chunk (JSON with InvokeAI's own names)."""

from __future__ import annotations

from desktop.engine.metadata.builder import RequestBuilder
from desktop.engine.request import GenerationRequest

# InvokeAI names; a "_k" suffix means the Karras schedule.
_INVOKE_SAMPLERS = {
    "ddim": "DDIM",
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "kdpm_2": "DPM2",
    "kdpm_2_a": "DPM2 a",
    "lms": "LMS",
    "pndm": "PLMS",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE",
    "unipc": "UniPC",
    "lcm": "LCM",
}


def map_invoke_scheduler(name: str) -> tuple[str | None, str | None]:
    """Map an InvokeAI scheduler name ("dpmpp_2m_k", "euler_a", ...) to (sampler, schedule)."""
    key = name.lower()
    schedule = "Automatic"
    if key.endswith("_k"):
        key, schedule = key[:-2], "Karras"
    sampler = _INVOKE_SAMPLERS.get(key)
    return sampler, (schedule if sampler else None)


def request_from_invoke(data: dict) -> tuple[GenerationRequest | None, dict, str, str]:
    """Returns (request, extras, model name, model hash) for InvokeAI metadata."""
    builder = RequestBuilder()
    builder.text("prompt", data.get("positive_prompt"))
    builder.text("negative_prompt", data.get("negative_prompt"))
    builder.seed("seed", data.get("seed"))
    builder.integer("steps", "steps", data.get("steps"))
    builder.real("cfg_scale", "cfg_scale", data.get("cfg_scale"))
    if "width" in data or "height" in data:
        builder.size(data.get("width"), data.get("height"))
    scheduler = str(data.get("scheduler", ""))
    sampler, schedule = map_invoke_scheduler(scheduler)
    builder.sampler(sampler, schedule, scheduler, "scheduler")
    model = data.get("model")
    model_name, model_hash = "", ""
    if isinstance(model, dict):
        model_name = str(model.get("name") or model.get("model_name") or "")
        model_hash = str(model.get("hash") or "")
    elif isinstance(model, str):
        model_name = model
    if model_name:
        builder.text("model", model_name)
    if "strength" in data:
        builder.real("strength", "strength", data.get("strength"), 0.01, 1.0)
    used = {"positive_prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width"}
    used |= {"height", "scheduler", "model", "strength"}
    builder.extras.update({k: v for k, v in data.items() if k not in used})
    return builder.build(), builder.extras, model_name, model_hash
