"""Generation settings stored in images: written by Sandstorm, read from any common tool.

Every saved PNG carries two text chunks:

* ``parameters``: AUTOMATIC1111's "infotext", which Civitai and most image viewers read;
* ``sandstorm``: the full ``GenerationRequest`` as versioned JSON, which round-trips exactly.

``read_metadata`` understands our chunk, AUTOMATIC1111/Forge/Fooocus/Krita ``parameters``
(PNG text or EXIF UserComment in JPEG/WebP), ComfyUI ``prompt``/``workflow`` graphs and
InvokeAI ``invokeai_metadata``. It never raises: a broken file gives ``source == "none"`` and
an ``error`` string; values Sandstorm cannot use are clamped or kept in ``extras``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from desktop import __version__
from desktop.engine.errors import RequestError
from desktop.engine.request import (
    MAX_CFG,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    SEED_MAX,
    GenerationRequest,
    snap_size,
)
from desktop.engine.samplers import SAMPLERS

METADATA_VERSION = 1
PARAMETERS_KEY = "parameters"
SANDSTORM_KEY = "sandstorm"
SOURCES = ("sandstorm", "a1111", "comfyui", "invokeai", "none")

# Chunks kept in ``ImageMetadata.raw``; anything longer is cut so a hostile file cannot make
# the reader hold hundreds of megabytes.
_KNOWN_KEYS = (
    SANDSTORM_KEY,
    PARAMETERS_KEY,
    "prompt",
    "workflow",
    "invokeai_metadata",
    "Comment",
    "comment",
    "UserComment",
)
_MAX_RAW_CHARS = 4 * 1024 * 1024
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


@dataclass
class ImageMetadata:
    """What ``read_metadata`` found in an image.

    Attributes:
        source: "sandstorm", "a1111", "comfyui", "invokeai" or "none".
        request: the settings as a valid request, or None when there were none usable.
        model_name: the model the image was made with, as the file recorded it.
        model_hash: the recorded model hash (AutoV2 short hash when known).
        extras: settings that were found but have no place in a request (or were adjusted:
            the original value is kept here under the source's key).
        raw: the raw text chunks, by key.
        error: why nothing could be read (unreadable file), else "".
    """

    source: str = "none"
    request: GenerationRequest | None = None
    model_name: str = ""
    model_hash: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    error: str = ""


# -- sampler names ---------------------------------------------------------------------------

_A1111_SCHEDULES = {"automatic": "Automatic", "karras": "Karras", "exponential": "Exponential"}

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


def map_a1111_sampler(name: str) -> tuple[str | None, str | None]:
    """Map an AUTOMATIC1111 sampler label to (sampler, schedule-or-None).

    Old infotexts fold the schedule into the name ("DPM++ 2M Karras").
    """
    text = " ".join(name.split())
    by_lower = {key.lower(): key for key in SAMPLERS}
    if text.lower() in by_lower:
        return by_lower[text.lower()], None
    for suffix, schedule in (("karras", "Karras"), ("exponential", "Exponential")):
        if text.lower().endswith(" " + suffix):
            base = text[: -len(suffix) - 1].strip().lower()
            if base in by_lower:
                return by_lower[base], schedule
    return None, None


def map_comfy_sampler(sampler: str, scheduler: str) -> tuple[str | None, str | None]:
    """Map ComfyUI ``sampler_name`` + ``scheduler`` to (sampler, schedule); None if unknown."""
    return _COMFY_SAMPLERS.get(sampler.lower()), _COMFY_SCHEDULES.get(scheduler.lower())


def map_invoke_scheduler(name: str) -> tuple[str | None, str | None]:
    """Map an InvokeAI scheduler name ("dpmpp_2m_k", "euler_a", ...) to (sampler, schedule)."""
    key = name.lower()
    schedule = "Automatic"
    if key.endswith("_k"):
        key, schedule = key[:-2], "Karras"
    sampler = _INVOKE_SAMPLERS.get(key)
    return sampler, (schedule if sampler else None)


# -- writing ---------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """Numbers as AUTOMATIC1111 writes them: 7.0 -> "7", 7.5 -> "7.5"."""
    number = float(value)
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def quote(value: str) -> str:
    """AUTOMATIC1111's quoting: JSON-quote a value containing ``,``, ``:`` or a newline."""
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def model_display_name(request: GenerationRequest, model_name: str | None = None) -> str:
    """The model name written into infotext: the discovered name, else the request's stem."""
    if model_name:
        return model_name
    if not request.model:
        return ""
    path = Path(request.model)
    return path.stem if path.suffix.lower() in (".safetensors", ".ckpt", ".pt") else path.name


def format_parameters(
    request: GenerationRequest, model_name: str | None = None, model_hash: str | None = None
) -> str:
    """The ``parameters`` infotext for a single-image request, in AUTOMATIC1111's layout."""
    params: list[tuple[str, str]] = [
        ("Steps", str(request.steps)),
        ("Sampler", request.sampler),
    ]
    if request.schedule != "Automatic":
        params.append(("Schedule type", request.schedule))
    params += [
        ("CFG scale", format_number(request.cfg_scale)),
        ("Seed", str(request.seed)),
        ("Size", f"{request.width}x{request.height}"),
    ]
    if model_hash:
        params.append(("Model hash", model_hash))
    name = model_display_name(request, model_name)
    if name:
        params.append(("Model", name))
    if request.vae:
        params.append(("VAE", Path(request.vae).name))
    if request.is_img2img:
        params.append(("Denoising strength", format_number(request.strength)))
    if request.batch_size > 1:
        params.append(("Batch size", str(request.batch_size)))
    line = ", ".join(f"{key}: {quote(value)}" for key, value in params)
    negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{line}".strip()


def sandstorm_chunk(
    request: GenerationRequest, model_name: str | None = None, model_hash: str | None = None
) -> str:
    """The ``sandstorm`` chunk: the full request as versioned JSON plus the model identity."""
    payload = {
        "version": METADATA_VERSION,
        "app": f"Sandstorm {__version__}",
        "request": request.to_dict(),
        "model_name": model_display_name(request, model_name),
        "model_hash": model_hash or "",
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def png_info(
    request: GenerationRequest, model_name: str | None = None, model_hash: str | None = None
) -> PngImagePlugin.PngInfo:
    """A ``PngInfo`` with both chunks, ready for ``image.save(..., pnginfo=...)``."""
    info = PngImagePlugin.PngInfo()
    # add_text switches to an iTXt (UTF-8) chunk by itself when the text is not Latin-1.
    info.add_text(PARAMETERS_KEY, format_parameters(request, model_name, model_hash))
    info.add_text(SANDSTORM_KEY, sandstorm_chunk(request, model_name, model_hash))
    return info


# -- reading: AUTOMATIC1111 infotext ---------------------------------------------------------

_KEY_RE = re.compile(r"\w[\w \-/]*")
_MAX_KEY = 80
# Far more than any tool writes; they bound the work done on hostile text.
_MAX_PAIRS = 1000
_MAX_COLONS = 20_000


def _split_param_line(line: str) -> list[tuple[str, str]]:
    """``Key: value, Key: "quoted, value"`` pairs, as AUTOMATIC1111 writes them.

    A hand-written linear scan rather than A1111's ``re.findall``, which is quadratic on long
    lines: a key is the text between the previous comma and a colon, a value runs to the next
    comma unless it is JSON-quoted.
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    for _ in range(_MAX_COLONS):
        if pos >= end or len(pairs) >= _MAX_PAIRS:
            break
        colon = line.find(":", pos)
        if colon < 0:
            break
        comma = line.rfind(",", pos, colon)
        key = line[pos if comma < 0 else comma + 1 : colon].strip()
        if len(key) > _MAX_KEY or not _KEY_RE.fullmatch(key):
            pos = colon + 1
            continue
        pos = colon + 1
        while pos < end and line[pos] in " \t":
            pos += 1
        value = None
        if pos < end and line[pos] == '"':
            close = _closing_quote(line, pos)
            after = close + 1
            if close > 0 and (after >= end or line[after] == ","):
                value, pos = line[pos:after], after + 1
        if value is None:
            comma = line.find(",", pos)
            comma = end if comma < 0 else comma
            value, pos = line[pos:comma].strip(), comma + 1
        pairs.append((key, value))
    return pairs


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote closing the JSON string opened at ``start``, or -1."""
    close = start
    while True:
        close = line.find('"', close + 1)
        if close < 0:
            return -1
        escapes = 0
        while line[close - 1 - escapes] == "\\":
            escapes += 1
        if escapes % 2 == 0:
            return close


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        result = json.loads(value)
    except ValueError:
        return value
    return result if isinstance(result, str) else value


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]] | None:
    """Split infotext into (prompt, negative prompt, {key: value}); None if it is not infotext.

    Follows AUTOMATIC1111's ``parse_generation_parameters``: the last line holds the settings
    when it has at least three ``key: value`` pairs; ``Negative prompt:`` starts the negative.
    """
    lines = text.strip().replace("\r\n", "\n").split("\n")
    last = lines[-1]
    pairs = _split_param_line(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
    else:
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    if not pairs:
        return None
    params = {key: _unquote(value) for key, value in pairs}
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


# -- building a request from foreign values --------------------------------------------------


class _Builder:
    """Collects values from a foreign format, clamps them, and builds a valid request."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.extras: dict[str, Any] = {}

    def text(self, name: str, value: Any) -> None:
        if isinstance(value, str):
            self.fields[name] = value[:MAX_PROMPT_CHARS]

    def integer(self, name: str, key: str, value: Any, low: int, high: int) -> None:
        number = _to_number(value)
        if number is None or not math.isfinite(number):
            if value not in (None, ""):
                self.extras[key] = value
            return
        whole = round(number)
        clamped = min(high, max(low, whole))
        if clamped != number:
            self.extras[key] = value
        self.fields[name] = clamped

    def real(self, name: str, key: str, value: Any, low: float, high: float) -> None:
        number = _to_number(value)
        if number is None or not math.isfinite(number):
            if value not in (None, ""):
                self.extras[key] = value
            return
        clamped = min(high, max(low, number))
        if clamped != number:
            self.extras[key] = value
        self.fields[name] = clamped

    def seed(self, key: str, value: Any) -> None:
        number = _to_number(value)
        if number is not None and 0 <= number <= SEED_MAX and number == int(number):
            self.fields["seed"] = int(number)
        elif value not in (None, ""):
            # Seeds from tools with a wider range cannot reproduce the image here.
            self.extras[key] = value

    def size(self, width: Any, height: Any, key: str = "Size") -> None:
        w, h = _to_number(width), _to_number(height)
        if w is None or h is None or not (math.isfinite(w) and math.isfinite(h)):
            if width not in (None, "") or height not in (None, ""):
                self.extras[key] = f"{width}x{height}"
            return
        sw, sh = snap_size(int(w)), snap_size(int(h))
        if (sw, sh) != (w, h):
            self.extras[key] = f"{width}x{height}"
        self.fields["width"], self.fields["height"] = sw, sh

    def sampler(
        self, sampler: str | None, schedule: str | None, original: str, key: str = "Sampler"
    ) -> None:
        if sampler is None:
            if original:
                self.extras[key] = original
            return
        spec = SAMPLERS[sampler]
        if schedule is None:
            schedule = self.fields.get("schedule", "Automatic")
        if schedule not in spec.schedules:
            self.extras.setdefault("Schedule type", schedule)
            schedule = "Automatic"
        self.fields["sampler"] = sampler
        self.fields["schedule"] = schedule

    def build(self) -> GenerationRequest | None:
        if "prompt" not in self.fields:
            self.fields["prompt"] = ""
        try:
            return GenerationRequest(**self.fields)
        except RequestError as exc:
            self.extras["error"] = str(exc)
            return None


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except (ValueError, OverflowError):
            return None
    return None


def _request_from_parameters(text: str) -> tuple[GenerationRequest | None, dict, str, str]:
    """Returns (request, extras, model name, model hash) for AUTOMATIC1111 infotext."""
    parsed = parse_parameters(text)
    builder = _Builder()
    if parsed is None:
        # Some tools write just a prompt; keep it as one.
        builder.text("prompt", text.strip())
        return builder.build(), builder.extras, "", ""
    prompt, negative, params = parsed
    builder.text("prompt", prompt)
    builder.text("negative_prompt", negative)
    model_name = params.pop("Model", "")
    model_hash = params.pop("Model hash", "")
    if model_name:
        builder.text("model", model_name)
    schedule_text = params.pop("Schedule type", None)
    schedule = None
    if schedule_text is not None:
        schedule = _A1111_SCHEDULES.get(schedule_text.strip().lower())
        if schedule is None:
            builder.extras["Schedule type"] = schedule_text
    if "Sampler" in params:
        original = params.pop("Sampler")
        sampler, folded = map_a1111_sampler(original)
        builder.sampler(sampler, schedule or folded, original)
    elif schedule is not None:
        builder.fields["schedule"] = schedule
    if "Steps" in params:
        builder.integer("steps", "Steps", params.pop("Steps"), 1, MAX_STEPS)
    if "CFG scale" in params:
        builder.real("cfg_scale", "CFG scale", params.pop("CFG scale"), 0.0, MAX_CFG)
    if "Seed" in params:
        builder.seed("Seed", params.pop("Seed"))
    if "Size" in params:
        size = params.pop("Size")
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", size)
        if match:
            builder.size(match.group(1), match.group(2))
        else:
            builder.extras["Size"] = size
    if "VAE" in params:
        builder.text("vae", params.pop("VAE"))
    if "Denoising strength" in params:
        builder.real("strength", "Denoising strength", params.pop("Denoising strength"), 0.01, 1)
    builder.extras.update(params)
    return builder.build(), builder.extras, model_name, model_hash


def _request_from_fooocus(data: dict) -> tuple[GenerationRequest | None, dict, str]:
    """Fooocus' JSON ``parameters`` scheme (its default when not in A1111 mode)."""
    builder = _Builder()
    builder.text("prompt", data.get("prompt"))
    builder.text("negative_prompt", data.get("negative_prompt"))
    builder.integer("steps", "steps", data.get("steps"), 1, MAX_STEPS)
    builder.real("cfg_scale", "guidance_scale", data.get("guidance_scale"), 0.0, MAX_CFG)
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


# -- reading: ComfyUI -------------------------------------------------------------------------

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


def _request_from_comfy(graph: dict) -> tuple[GenerationRequest | None, dict, str]:
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
    builder = _Builder()
    if len(samplers) > 1:
        builder.extras["other samplers"] = len(samplers) - 1
    positive = _comfy_text(nodes, inputs.get("positive"))
    negative = _comfy_text(nodes, inputs.get("negative"))
    builder.text("prompt", positive)
    builder.text("negative_prompt", negative)
    seed_key = "noise_seed" if "noise_seed" in inputs else "seed"
    builder.seed(seed_key, _comfy_value(nodes, inputs.get(seed_key), (seed_key, "seed", "value")))
    builder.integer(
        "steps", "steps", _comfy_value(nodes, inputs.get("steps"), ("steps", "value")), 1, MAX_STEPS
    )
    builder.real(
        "cfg_scale", "cfg", _comfy_value(nodes, inputs.get("cfg"), ("cfg", "value")), 0.0, MAX_CFG
    )
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
    denoise = _to_number(inputs.get("denoise"))
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


# -- reading: InvokeAI ------------------------------------------------------------------------


def _request_from_invoke(data: dict) -> tuple[GenerationRequest | None, dict, str, str]:
    builder = _Builder()
    builder.text("prompt", data.get("positive_prompt"))
    builder.text("negative_prompt", data.get("negative_prompt"))
    builder.seed("seed", data.get("seed"))
    builder.integer("steps", "steps", data.get("steps"), 1, MAX_STEPS)
    builder.real("cfg_scale", "cfg_scale", data.get("cfg_scale"), 0.0, MAX_CFG)
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


# -- reading: our chunk -----------------------------------------------------------------------


def _read_sandstorm(text: str) -> ImageMetadata:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise RequestError("the sandstorm chunk is not a JSON object")
    version = data.get("version", METADATA_VERSION)
    request_data = data.get("request", data)
    if not isinstance(version, int) or version > METADATA_VERSION:
        raise RequestError(f"metadata version {version!r} is newer than this Sandstorm")
    request = GenerationRequest.from_dict(request_data)
    model_name = data.get("model_name", "")
    model_hash = data.get("model_hash", "")
    return ImageMetadata(
        source="sandstorm",
        request=request,
        model_name=model_name if isinstance(model_name, str) else "",
        model_hash=model_hash if isinstance(model_hash, str) else "",
    )


# -- chunk collection -------------------------------------------------------------------------


def decode_user_comment(data: bytes | str) -> str:
    """Decode an EXIF UserComment: an 8-byte charset prefix, then the text.

    "UNICODE\\0" means UTF-16, big-endian when written by AUTOMATIC1111 (piexif) but
    little-endian from some tools, so the byte order is guessed from where the zeros are.
    """
    if isinstance(data, str):
        return data.rstrip("\0")
    prefix, body = data[:8], data[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", errors="replace")
        else:
            even = body[0::2].count(0)
            odd = body[1::2].count(0)
            text = body.decode("utf-16-le" if odd > even else "utf-16-be", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8, b"JIS\0\0\0\0\0"):
        text = body.decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _to_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value[:_MAX_RAW_CHARS]
    if isinstance(value, bytes):
        return value[:_MAX_RAW_CHARS].decode("utf-8", errors="replace")
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_MAX_CHUNKS = 100_000


def png_text_chunks(stream: BinaryIO) -> dict[str, str]:
    """Every text chunk of a PNG, wherever it is, without decoding a pixel (IDAT is skipped).

    Compressed chunks are inflated to at most 4 MiB, so a zip bomb cannot exhaust memory.
    """
    found: dict[str, str] = {}
    stream.seek(0)
    if stream.read(8) != _PNG_SIGNATURE:
        return found
    for _ in range(_MAX_CHUNKS):
        head = stream.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind in _TEXT_CHUNKS and length <= _MAX_RAW_CHARS:
            body = stream.read(length)
            if len(body) < length:
                break
            stream.seek(4, io.SEEK_CUR)
            with contextlib.suppress(ValueError, IndexError, zlib.error):
                key, text = _decode_text_chunk(kind, body)
                found.setdefault(key, text)
        else:
            stream.seek(length + 4, io.SEEK_CUR)
    return found


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj().decompress(data, _MAX_RAW_CHARS)


def _decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    raw_key, separator, rest = body.partition(b"\0")
    if not separator or not raw_key:
        raise ValueError("text chunk without a keyword")
    key = raw_key.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language tag, translated keyword, then UTF-8 text.
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, rest = rest.partition(b"\0")
    return key, (_inflate(rest) if compressed else rest).decode("utf-8", errors="replace")


def collect_chunks(image: Image.Image, stream: BinaryIO | None = None) -> dict[str, str]:
    """Text chunks and EXIF/JPEG comments that may carry generation settings, by key.

    ``stream`` is the file the image was opened from: with it, PNG text chunks written after
    the pixel data are found without decoding the image.
    """
    raw: dict[str, str] = {}
    for key, value in image.info.items():
        text = _to_text(value) if key != "exif" else None
        if isinstance(key, str) and text is not None and key not in ("icc_profile", "xmp"):
            raw[key] = text
    if image.format == "PNG" and not any(k in raw for k in _KNOWN_KEYS):
        try:
            if stream is not None:
                late = png_text_chunks(stream)
            elif getattr(image, "im", None) is not None:
                late = dict(image.text)  # type: ignore[attr-defined]
            else:
                late = {}
        except (OSError, ValueError, struct.error):
            late = {}
        for key, value in late.items():
            text = _to_text(value)
            if text is not None:
                raw.setdefault(key, text)
    comment = _user_comment(image.info.get("exif"))
    if comment:
        raw["UserComment"] = comment
    return raw


def _user_comment(exif_data: Any) -> str:
    """The EXIF UserComment, read from the raw EXIF block (never decodes pixels)."""
    if not isinstance(exif_data, bytes) or not exif_data:
        return ""
    try:
        exif = Image.Exif()
        exif.load(exif_data)
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT) or exif.get(_USER_COMMENT)
    except Exception:  # malformed EXIF must not hide the other chunks
        return ""
    if not isinstance(comment, (bytes, str)) or not comment:
        return ""
    text = decode_user_comment(comment[:_MAX_RAW_CHARS])
    return text if text.strip() else ""


def metadata_from_chunks(raw: dict[str, str]) -> ImageMetadata:
    """Interpret collected chunks; the most precise source wins. Never raises."""
    problems: list[str] = []
    if SANDSTORM_KEY in raw:
        try:
            meta = _read_sandstorm(raw[SANDSTORM_KEY])
            meta.raw = raw
            return meta
        except Exception as exc:  # any malformed chunk: fall back to the other formats
            problems.append(f"sandstorm chunk unreadable: {type(exc).__name__}: {exc}")
    readers: list[Callable[[], ImageMetadata | None]] = [
        lambda: _try_parameters(raw.get(PARAMETERS_KEY)),
        lambda: _try_json(raw.get("invokeai_metadata"), _invoke_meta),
        lambda: _try_json(raw.get("prompt"), _comfy_meta),
        lambda: _try_json(raw.get("workflow"), lambda d: _comfy_meta(workflow_to_prompt(d))),
        lambda: _try_parameters(raw.get("UserComment")),
        lambda: _try_parameters(raw.get("comment") or raw.get("Comment")),
    ]
    for reader in readers:
        try:
            meta = reader()
        except Exception as exc:  # foreign data must never crash the caller; try the next
            problems.append(f"{type(exc).__name__}: {exc}")
            continue
        if meta is not None:
            meta.raw = raw
            if problems:
                meta.extras.setdefault("problems", problems)
            return meta
    meta = ImageMetadata(raw=raw)
    if problems:
        meta.extras["problems"] = problems
    return meta


def _try_parameters(text: str | None) -> ImageMetadata | None:
    if not text or not text.strip():
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict) and "prompt" in data:
            request, extras, model = _request_from_fooocus(data)
            return ImageMetadata("a1111", request, model, "", extras)
    request, extras, model_name, model_hash = _request_from_parameters(text)
    return ImageMetadata("a1111", request, model_name, model_hash, extras)


def _try_json(text: str | None, reader: Callable[[dict], ImageMetadata | None]) -> Any:
    if not text:
        return None
    data = json.loads(text)
    return reader(data) if isinstance(data, dict) else None


def _invoke_meta(data: dict) -> ImageMetadata:
    request, extras, model_name, model_hash = _request_from_invoke(data)
    return ImageMetadata("invokeai", request, model_name, model_hash, extras)


def _comfy_meta(graph: dict) -> ImageMetadata | None:
    if not graph:
        return None
    request, extras, model_name = _request_from_comfy(graph)
    return ImageMetadata("comfyui", request, model_name, "", extras)


def read_metadata(source: str | Path | bytes | Image.Image) -> ImageMetadata:
    """Read the generation settings stored in an image file, bytes or open PIL image.

    Never raises: an unreadable file gives ``source == "none"`` and ``error`` set.
    """
    if isinstance(source, Image.Image):
        try:
            return metadata_from_chunks(collect_chunks(source))
        except Exception as exc:  # foreign data must never crash the caller
            return ImageMetadata(error=f"could not read the metadata: {exc}")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        return ImageMetadata(error=exc.strerror or str(exc))
    with handle:
        try:
            with Image.open(handle) as image:
                return metadata_from_chunks(collect_chunks(image, handle))
        except Exception as exc:  # PIL raises many types on malformed files
            error = _open_error(exc)
        # PIL refuses a whole PNG over one oversized text chunk (a big ComfyUI workflow) or a
        # huge size; the settings can still be read from the chunks themselves.
        try:
            raw = png_text_chunks(handle)
        except (OSError, ValueError, struct.error):
            raw = {}
        if any(key in raw for key in _KNOWN_KEYS):
            return metadata_from_chunks(raw)
        return ImageMetadata(error=error)


def _open_error(exc: Exception) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return "the image is too large to open safely"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Sandstorm can read"
    return str(exc) or type(exc).__name__
