"""``sandstorm info IMAGE``: show the generation settings stored in an image.

Uses the same reader as the window, so it understands Sandstorm, AUTOMATIC1111, ComfyUI,
InvokeAI and Fooocus images. The lines and JSON fields follow the request's declared
settings (``request_fields()``): each is shown by its label, in declaration order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from desktop.cli import fail
from desktop.engine import schema
from desktop.engine.metadata import ImageMetadata, read_metadata
from desktop.engine.metadata.writer import COMPOSED
from desktop.engine.parts import ControlUnit, HiresSpec, LoraRef, MaskSpec, ReferenceImage
from desktop.engine.request import GenerationRequest, request_fields
from desktop.engine.schema import FieldInfo, format_value

_SOURCE_LABELS = {
    "sandstorm": "Sandstorm",
    "a1111": "AUTOMATIC1111 infotext",
    "comfyui": "ComfyUI graph",
    "invokeai": "InvokeAI",
    "none": "none",
}
#: Labels up to this long line their values up; longer ones are followed by one space.
_LABEL_WIDTH = 16


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="show the generation settings stored in an image",
        description="Print the prompt, seed, sampler and other settings stored in an image.",
    )
    parser.add_argument("image", help="a PNG, JPEG or WebP file")
    parser.add_argument("--json", action="store_true", help="print the settings as JSON")
    parser.set_defaults(func=run)
    return parser


def summary(meta: ImageMetadata) -> dict[str, Any]:
    """The settings as a flat, JSON-serialisable dict: every declared setting by name.

    A setting that does not matter for the request (strength without an init image) is
    null, unless the image recorded it; ``model`` is the name the image recorded.
    """
    data: dict[str, Any] = {"source": meta.source}
    request = meta.request
    if request is not None:
        plain = schema.to_plain(request)
        for info in request_fields():
            data[info.name] = plain[info.name] if _shown(info, meta) else None
        data["model"] = meta.model_name or request.model
        data["model_hash"] = meta.model_hash
        data["request"] = request.to_dict()
    data["extras"] = {str(k): _jsonable(v) for k, v in meta.extras.items()}
    return data


def _shown(info: FieldInfo, meta: ImageMetadata) -> bool:
    request = meta.request
    if request is None:
        return False
    if info.spec.is_relevant(request):
        return True
    return info.name == "strength" and _strength_recorded(meta)


def _strength_recorded(meta: ImageMetadata) -> bool:
    """Foreign img2img images record the strength but not the init image's path."""
    request = meta.request
    if request is None or meta.source == "sandstorm":
        return False
    # In a txt2img infotext with a hires pass, "Denoising strength" is the hires denoise.
    infotext = request.hires is None and any(
        key in meta.raw.get(chunk, "")
        for chunk, key in (("parameters", "Denoising strength"), ("UserComment", "Denoising"))
    )
    return infotext or "denoise" in meta.extras


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _line(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL_WIDTH}} {value}"


def _part_text(part: Any) -> str:
    """One list part in words, e.g. ``name (UNet 0.8, text 0.8)``."""
    v = format_value
    if isinstance(part, LoraRef):
        return f"{part.name} (UNet {v(part.unet_strength)}, text {v(part.text_strength)})"
    if isinstance(part, ControlUnit):
        model = f", model {part.model}" if part.model else ""
        return (
            f"{part.type} ({part.image}{model}, strength {v(part.strength)}, "
            f"from {v(part.start)} to {v(part.end)})"
        )
    if isinstance(part, ReferenceImage):
        model = f", model {part.model}" if part.model else ""
        return f"{part.image} (weight {v(part.weight)}{model})"
    if isinstance(part, MaskSpec):
        area = f"only masked, padding {part.padding}px" if part.only_masked else "whole picture"
        return f"{part.image} (blur {part.blur}px, {part.mode}, {area})"
    if isinstance(part, HiresSpec):
        steps = f", {part.steps} steps" if part.steps else ""
        return f"{v(part.scale)}x {part.upscaler}{steps}, denoise {v(part.denoise)}"
    return repr(part)


def _setting_lines(meta: ImageMetadata, request: GenerationRequest) -> list[str]:
    """``Label: value`` for each declared setting that is set, in declaration order.

    Settings that share an infotext key are one line under that key (``Size: WxH``), as in
    the infotext; ``Model`` is the recorded name with its hash; parts are shown when used.
    """
    lines: list[str] = []
    composed: set[str] = set()
    for info in request_fields():
        if not _shown(info, meta):
            continue
        value = getattr(request, info.name)
        key = info.spec.infotext
        if key in COMPOSED:
            if key not in composed:
                composed.add(key)
                lines.append(_line(key, COMPOSED[key](request)))
        elif info.kind in ("part", "parts"):
            parts = value if info.kind == "parts" else () if value is None else (value,)
            if parts:
                lines.append(_line(info.label, "; ".join(_part_text(p) for p in parts)))
        elif info.name == "model":
            model = meta.model_name or request.model
            if model:
                suffix = f" [{meta.model_hash}]" if meta.model_hash else ""
                lines.append(_line(info.label, f"{model}{suffix}"))
        elif value not in (None, "") or (info.default is None and not info.optional):
            lines.append(_line(info.label, format_value(value)))
    return lines


def _lines(meta: ImageMetadata) -> list[str]:
    lines = [_line("Source", _SOURCE_LABELS.get(meta.source, meta.source))]
    if meta.request is None:
        lines.append("No generation settings found in this image.")
    else:
        lines += _setting_lines(meta, meta.request)
    for key, value in meta.extras.items():
        lines.append(f"{key}: {value}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print what the metadata reader finds in ``args.image``; 1 when it cannot be read."""
    path = Path(args.image).expanduser()
    if not path.exists():
        return fail(f"{path} does not exist.")
    if path.is_dir():
        return fail(f"{path} is a folder, not an image.")
    meta = read_metadata(path)
    if meta.error:
        return fail(f"Cannot read {path}: {meta.error}.")
    if args.json:
        print(json.dumps(summary(meta), ensure_ascii=False, indent=2))
    else:
        print("\n".join(_lines(meta)))
    return 0
