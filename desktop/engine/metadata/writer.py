"""Writing the two chunks Sandstorm stores in every PNG.

* ``parameters``: AUTOMATIC1111's infotext, derived from the declarations in
  ``desktop.engine.request``: every scalar setting with an ``infotext`` key is written as
  ``Key: value`` in declaration order (which is A1111's order), except when it is empty,
  equals its ``infotext_default`` or does not matter for the request (``relevant``).
* ``sandstorm``: the full request as versioned JSON, which round-trips exactly.

What stays explicit here, because A1111's layout is not one key per setting:

* the prompt is the first line(s), with the LoRA tags appended (space separated); the
  negative prompt follows on a ``Negative prompt:`` line;
* width and height share the key ``Size`` and are written once, as ``Size: WxH``;
* ``Model hash`` (not a setting: it is computed from the file) goes just before ``Model``;
* ``Model`` is the display name (``model_display_name``), ``VAE`` the file name only;
* the list parts follow the settings, each in its own helper from ``desktop.engine.parts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import PngImagePlugin

from desktop import __version__
from desktop.engine.metadata.chunks import METADATA_VERSION, PARAMETERS_KEY, SANDSTORM_KEY
from desktop.engine.parts import (
    controls_infotext,
    expand_infotext,
    hires_infotext,
    mask_infotext,
    references_infotext,
)
from desktop.engine.request import GenerationRequest, request_fields
from desktop.engine.resources import Resources
from desktop.engine.schema import format_value

#: Infotext keys shared by several settings, written once as one composed value.
COMPOSED: dict[str, Callable[[GenerationRequest], str]] = {
    "Size": lambda request: f"{request.width}x{request.height}",
}


def format_number(value: float) -> str:
    """Numbers as AUTOMATIC1111 writes them: 7.0 -> "7", 7.5 -> "7.5"."""
    return format_value(float(value))


def quote(value: str) -> str:
    """AUTOMATIC1111's quoting: JSON-quote a value containing ``,``, ``:`` or a newline."""
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _quote_once(value: str) -> str:
    """``quote``, leaving a value that a part's helper already JSON-quoted as it is."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            if isinstance(json.loads(value), str):
                return value
        except ValueError:
            pass
    return quote(value)


def model_display_name(request: GenerationRequest, model_name: str | None = None) -> str:
    """The model name written into infotext: the discovered name, else the request's stem."""
    if model_name:
        return model_name
    if not request.model:
        return ""
    path = Path(request.model)
    return path.stem if path.suffix.lower() in (".safetensors", ".ckpt", ".pt") else path.name


def _setting_pairs(
    request: GenerationRequest, model_name: str | None, model_hash: str | None
) -> list[tuple[str, str]]:
    """``(key, text)`` for the request's scalar settings, in declaration order."""
    shown_as: dict[str, Callable[[], str]] = {
        "model": lambda: model_display_name(request, model_name),
        "vae": lambda: Path(request.vae).name if request.vae else "",
    }
    pairs: list[tuple[str, str]] = []
    written: set[str] = set()
    for info in request_fields():
        spec = info.spec
        if not spec.infotext or info.kind in ("part", "parts") or spec.infotext in written:
            continue
        if info.name == "model" and model_hash:
            pairs.append(("Model hash", model_hash))
        if spec.infotext in COMPOSED:
            written.add(spec.infotext)
            pairs.append((spec.infotext, COMPOSED[spec.infotext](request)))
            continue
        if info.name in shown_as:
            value: object = shown_as[info.name]()
        else:
            value = getattr(request, info.name)
        if value is None or value == "" or not spec.is_relevant(request):
            continue
        if spec.infotext_default is not None and value == spec.infotext_default:
            continue
        pairs.append((spec.infotext, format_value(value)))
    return pairs


def format_parameters(
    request: GenerationRequest,
    model_name: str | None = None,
    model_hash: str | None = None,
    resources: Resources | None = None,
) -> str:
    """The ``parameters`` infotext for a single-image request, in AUTOMATIC1111's layout;
    ``resources``: the hashes of its LoRAs and embeddings (``Lora hashes``, ``TI hashes``)."""
    pairs = _setting_pairs(request, model_name, model_hash)
    if resources is not None:
        pairs += resources.infotext_items()
    pairs += controls_infotext(request.controls)
    pairs += references_infotext(request.references)
    pairs += mask_infotext(request.mask)
    pairs += expand_infotext(request.expand)
    pairs += hires_infotext(request.hires, request.is_img2img)
    line = ", ".join(f"{key}: {_quote_once(value)}" for key, value in pairs)
    prompt = " ".join(
        part for part in (request.prompt, *(lora.tag() for lora in request.loras)) if part
    )
    negative = f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


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


#: ComfyUI's PNG text chunk for the API graph an image was made with.
COMFY_PROMPT_KEY = "prompt"


def png_info(
    request: GenerationRequest,
    model_name: str | None = None,
    model_hash: str | None = None,
    resources: Resources | None = None,
) -> PngImagePlugin.PngInfo:
    """A ``PngInfo`` with both chunks, ready for ``image.save(..., pnginfo=...)``."""
    info = PngImagePlugin.PngInfo()
    # add_text switches to an iTXt (UTF-8) chunk by itself when the text is not Latin-1.
    parameters = format_parameters(request, model_name, model_hash, resources)
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(SANDSTORM_KEY, sandstorm_chunk(request, model_name, model_hash))
    if resources is not None and resources.graph:
        info.add_text(COMFY_PROMPT_KEY, resources.graph)
    return info
