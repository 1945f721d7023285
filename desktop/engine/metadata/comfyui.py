"""Reading ComfyUI graphs: the API-style ``prompt`` chunk, or the UI ``workflow`` chunk.

A graph can hold anything; the reader follows links from the first KSampler that starts from
an empty latent to its prompts, latent size and checkpoint, and keeps what it cannot map
(other samplers, advanced-sampler steps, unknown schedulers) in ``extras``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desktop.engine.metadata.builder import RequestBuilder, to_number
from desktop.engine.request import GenerationRequest

_COMFY_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lcm": "LCM",
}
_COMFY_SCHEDULES = {"normal": "Automatic", "karras": "Karras", "exponential": "Exponential"}


def map_comfy_sampler(sampler: str, scheduler: str) -> tuple[str | None, str | None]:
    """Map ComfyUI ``sampler_name`` + ``scheduler`` to (sampler, schedule); None if unknown."""
    return _COMFY_SAMPLERS.get(sampler.lower()), _COMFY_SCHEDULES.get(scheduler.lower())


_COMFY_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
_MAX_GRAPH_NODES = 10_000

# Widget order of the UI ("workflow") format for the nodes the reader understands.
_WIDGETS = {
    "KSampler": ("seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        None,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "CLIPTextEncode": ("text",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "CheckpointLoaderSimple": ("ckpt_name",),
}


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and not isinstance(value[0], bool)
    )


def _upstream(nodes: dict[str, dict], start: Any, accept: Callable[[dict], bool]) -> dict | None:
    """Breadth-first search from a link ``[node_id, slot]`` for the first node ``accept``s."""
    if not _is_link(start):
        return None
    queue = deque([str(start[0])])
    seen: set[str] = set()
    while queue and len(seen) < _MAX_GRAPH_NODES:
        node_id = queue.popleft()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = nodes.get(node_id)
        if not isinstance(node, dict):
            continue
        if accept(node):
            return node
        inputs = node.get("inputs")
        if isinstance(inputs, dict):
            queue.extend(str(v[0]) for v in inputs.values() if _is_link(v))
    return None


def _inputs(node: dict | None) -> dict:
    value = node.get("inputs") if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def _comfy_value(nodes: dict[str, dict], value: Any, names: tuple[str, ...]) -> Any:
    """A widget value, following a link to a primitive/string node when it is one."""
    if not _is_link(value):
        return value
    node = _upstream(
        nodes, value, lambda n: any(not _is_link(_inputs(n).get(k, [])) for k in names)
    )
    for name in names:
        found = _inputs(node).get(name)
        if found is not None and not _is_link(found):
            return found
    return None


def _comfy_text(nodes: dict[str, dict], link: Any) -> str | None:
    text_names = ("text", "text_g", "string", "value", "prompt")
    node = _upstream(nodes, link, lambda n: any(k in _inputs(n) for k in ("text", "text_g")))
    if node is None:
        return None
    inputs = _inputs(node)
    value = inputs.get("text", inputs.get("text_g"))
    value = _comfy_value(nodes, value, text_names)
    return value if isinstance(value, str) else None


def request_from_comfy(graph: dict) -> tuple[GenerationRequest | None, dict, str]:
    """Best-effort settings from a ComfyUI API graph ``{id: {class_type, inputs}}``."""
    nodes = {str(k): v for k, v in list(graph.items())[:_MAX_GRAPH_NODES] if isinstance(v, dict)}
    samplers = [
        (node_id, node)
        for node_id, node in nodes.items()
        if node.get("class_type") in _COMFY_SAMPLER_NODES
    ]
    if not samplers:
        return None, {"error": "no KSampler node in the ComfyUI graph"}, ""

    def starts_from_empty(item: tuple[str, dict]) -> bool:
        latent = _upstream(nodes, _inputs(item[1]).get("latent_image"), _is_empty_latent)
        return latent is not None

    def order(item: tuple[str, dict]) -> tuple[bool, int, str]:
        node_id = item[0]
        number = int(node_id) if node_id.isascii() and node_id.isdecimal() else 1 << 62
        return (not starts_from_empty(item), number, node_id)

    samplers.sort(key=order)
    node = samplers[0][1]
    inputs = _inputs(node)
    builder = RequestBuilder()
    if len(samplers) > 1:
        builder.extras["other samplers"] = len(samplers) - 1
    positive = _comfy_text(nodes, inputs.get("positive"))
    negative = _comfy_text(nodes, inputs.get("negative"))
    builder.text("prompt", positive)
    builder.text("negative_prompt", negative)
    seed_key = "noise_seed" if "noise_seed" in inputs else "seed"
    builder.seed(seed_key, _comfy_value(nodes, inputs.get(seed_key), (seed_key, "seed", "value")))
    builder.integer("steps", "steps", _comfy_value(nodes, inputs.get("steps"), ("steps", "value")))
    builder.real("cfg_scale", "cfg", _comfy_value(nodes, inputs.get("cfg"), ("cfg", "value")))
    sampler_name = _comfy_value(nodes, inputs.get("sampler_name"), ("sampler_name", "value"))
    scheduler = _comfy_value(nodes, inputs.get("scheduler"), ("scheduler", "value"))
    sampler_name = sampler_name if isinstance(sampler_name, str) else ""
    scheduler = scheduler if isinstance(scheduler, str) else "normal"
    mapped, schedule = map_comfy_sampler(sampler_name, scheduler)
    if schedule is None:
        builder.extras["scheduler"] = scheduler
    builder.sampler(mapped, schedule, sampler_name, "sampler_name")
    latent = _upstream(nodes, inputs.get("latent_image"), _is_empty_latent)
    if latent is not None:
        latent_inputs = _inputs(latent)
        builder.size(
            _comfy_value(nodes, latent_inputs.get("width"), ("width", "value")),
            _comfy_value(nodes, latent_inputs.get("height"), ("height", "value")),
            "size",
        )
    denoise = to_number(inputs.get("denoise"))
    if denoise is not None and denoise < 1.0:
        builder.real("strength", "denoise", denoise, 0.01, 1.0)
        if latent is None:
            # The latent comes from an encoded image: img2img, whose source is unknown here.
            builder.extras["denoise"] = denoise
    for key in ("start_at_step", "end_at_step", "add_noise", "return_with_leftover_noise"):
        if key in inputs and not _is_link(inputs[key]):
            builder.extras[key] = inputs[key]
    checkpoint = _upstream(
        nodes, inputs.get("model"), lambda n: "ckpt_name" in _inputs(n) or "unet_name" in _inputs(n)
    )
    model_name = ""
    if checkpoint is not None:
        ckpt = _inputs(checkpoint)
        value = _comfy_value(nodes, ckpt.get("ckpt_name", ckpt.get("unet_name")), ("ckpt_name",))
        if isinstance(value, str):
            model_name = Path(value.replace("\\", "/")).stem
            builder.text("model", model_name)
    return builder.build(), builder.extras, model_name


def _is_empty_latent(node: dict) -> bool:
    inputs = _inputs(node)
    return "width" in inputs and "height" in inputs and "Latent" in str(node.get("class_type"))


def workflow_to_prompt(workflow: dict) -> dict[str, dict]:
    """Turn a ComfyUI UI ``workflow`` into an API-style graph for the nodes we understand."""
    nodes = workflow.get("nodes")
    links = workflow.get("links")
    if not isinstance(nodes, list):
        return {}
    sources: dict[Any, list] = {}
    for link in links if isinstance(links, list) else []:
        if isinstance(link, list) and len(link) >= 3:
            sources[link[0]] = [str(link[1]), link[2]]
    graph: dict[str, dict] = {}
    for node in nodes[:_MAX_GRAPH_NODES]:
        if not isinstance(node, dict) or "id" not in node:
            continue
        kind = str(node.get("type", ""))
        inputs: dict[str, Any] = {}
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in sources:
                inputs[str(slot.get("name"))] = sources[slot["link"]]
        widgets = node.get("widgets_values")
        names = _WIDGETS.get(kind, ())
        if isinstance(widgets, list):
            if kind == "KSampler" and len(widgets) == 6:
                names = ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")
            for name, value in zip(names, widgets, strict=False):
                if name is not None and name not in inputs:
                    inputs[name] = value
        graph[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return graph
