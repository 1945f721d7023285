"""``sandstorm info IMAGE``: show the generation settings stored in an image.

Uses the same reader as the window, so it understands Sandstorm, AUTOMATIC1111, ComfyUI,
InvokeAI and Fooocus images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from desktop.cli import fail
from desktop.engine.metadata import ImageMetadata, format_number, read_metadata

_SOURCE_LABELS = {
    "sandstorm": "Sandstorm",
    "a1111": "AUTOMATIC1111 infotext",
    "comfyui": "ComfyUI graph",
    "invokeai": "InvokeAI",
    "none": "none",
}


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
    """The settings as a flat, JSON-serialisable dict."""
    data: dict[str, Any] = {"source": meta.source}
    request = meta.request
    if request is not None:
        data.update(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=request.seed,
            steps=request.steps,
            sampler=request.sampler,
            schedule=request.schedule,
            cfg_scale=request.cfg_scale,
            width=request.width,
            height=request.height,
            model=meta.model_name or request.model,
            model_hash=meta.model_hash,
            vae=request.vae,
            init_image=request.init_image,
            strength=request.strength if _has_strength(meta) else None,
            request=request.to_dict(),
        )
    data["extras"] = {str(k): _jsonable(v) for k, v in meta.extras.items()}
    return data


def _has_strength(meta: ImageMetadata) -> bool:
    # Foreign img2img images record the strength but not the init image's path.
    request = meta.request
    if request is None:
        return False
    return (
        request.is_img2img
        or any(
            key in meta.raw.get(chunk, "")
            for chunk, key in (("parameters", "Denoising strength"), ("UserComment", "Denoising"))
        )
        or "denoise" in meta.extras
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _lines(meta: ImageMetadata) -> list[str]:
    lines = [f"Source:          {_SOURCE_LABELS.get(meta.source, meta.source)}"]
    request = meta.request
    if request is None:
        lines.append("No generation settings found in this image.")
    else:
        lines += [
            f"Prompt:          {request.prompt}",
            f"Negative prompt: {request.negative_prompt}",
            f"Seed:            {request.seed}",
            f"Steps:           {request.steps}",
            f"Sampler:         {request.sampler}",
            f"Schedule type:   {request.schedule}",
            f"CFG scale:       {format_number(request.cfg_scale)}",
            f"Size:            {request.width}x{request.height}",
        ]
        model = meta.model_name or request.model
        if model:
            suffix = f" [{meta.model_hash}]" if meta.model_hash else ""
            lines.append(f"Model:           {model}{suffix}")
        if request.vae:
            lines.append(f"VAE:             {request.vae}")
        if request.is_img2img:
            lines.append(f"Init image:      {request.init_image}")
        if _has_strength(meta):
            lines.append(f"Strength:        {format_number(request.strength)}")
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
