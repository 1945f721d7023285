"""Reading the generation settings stored in an image, whichever tool wrote them.

``read_metadata`` collects the text chunks (``chunks``) and hands them to the readers, the
most precise first: our own chunk, then AUTOMATIC1111/Fooocus ``parameters``, InvokeAI,
ComfyUI ``prompt``/``workflow`` graphs, and infotext in an EXIF UserComment or JPEG comment.
It never raises: a broken file gives ``source == "none"`` and an ``error`` string.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from desktop.engine.metadata.a1111 import parse_parameters, request_from_parameters
from desktop.engine.metadata.chunks import (
    KNOWN_KEYS,
    PARAMETERS_KEY,
    SANDSTORM_KEY,
    collect_chunks,
    png_text_chunks,
)
from desktop.engine.metadata.comfyui import request_from_comfy, workflow_to_prompt
from desktop.engine.metadata.fooocus import request_from_fooocus
from desktop.engine.metadata.invokeai import request_from_invoke
from desktop.engine.metadata.sandstorm import read_sandstorm
from desktop.engine.request import GenerationRequest
from desktop.engine.resources import Resources, parse_hash_list

SOURCES = ("sandstorm", "a1111", "comfyui", "invokeai", "none")


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
        resources: the LoRAs and embeddings the infotext names with their hashes
            (``Lora hashes``, ``TI hashes``).
    """

    source: str = "none"
    request: GenerationRequest | None = None
    model_name: str = ""
    model_hash: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    error: str = ""
    resources: Resources = field(default_factory=Resources)


def metadata_from_chunks(raw: dict[str, str]) -> ImageMetadata:
    """Interpret collected chunks; the most precise source wins. Never raises."""
    meta = _interpret(raw)
    try:
        meta.resources = _resources(raw.get(PARAMETERS_KEY), meta.extras)
    except Exception as exc:  # foreign data must never crash the caller
        meta.extras.setdefault("problems", []).append(f"resource hashes: {exc}")
    return meta


def _resources(text: str | None, extras: dict[str, Any]) -> Resources:
    """``Lora hashes`` and ``TI hashes`` of an infotext (taken out of ``extras``)."""
    params = {}
    if text and text.strip() and not text.strip().startswith("{"):
        parsed = parse_parameters(text)
        params = parsed[2] if parsed is not None else {}
    loras = params.get("Lora hashes", "")
    embeddings = params.get("TI hashes", "")
    for key in ("Lora hashes", "TI hashes"):
        extras.pop(key, None)
    return Resources(tuple(parse_hash_list(loras)), tuple(parse_hash_list(embeddings)))


def _interpret(raw: dict[str, str]) -> ImageMetadata:
    problems: list[str] = []
    if SANDSTORM_KEY in raw:
        try:
            request, model_name, model_hash = read_sandstorm(raw[SANDSTORM_KEY])
            return ImageMetadata("sandstorm", request, model_name, model_hash, raw=raw)
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
            request, extras, model = request_from_fooocus(data)
            return ImageMetadata("a1111", request, model, "", extras)
    request, extras, model_name, model_hash = request_from_parameters(text)
    return ImageMetadata("a1111", request, model_name, model_hash, extras)


def _try_json(text: str | None, reader: Callable[[dict], ImageMetadata | None]) -> Any:
    if not text:
        return None
    data = json.loads(text)
    return reader(data) if isinstance(data, dict) else None


def _invoke_meta(data: dict) -> ImageMetadata:
    request, extras, model_name, model_hash = request_from_invoke(data)
    return ImageMetadata("invokeai", request, model_name, model_hash, extras)


def _comfy_meta(graph: dict) -> ImageMetadata | None:
    if not graph:
        return None
    request, extras, model_name = request_from_comfy(graph)
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
        if any(key in raw for key in KNOWN_KEYS):
            return metadata_from_chunks(raw)
        return ImageMetadata(error=error)


def _open_error(exc: Exception) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return "the image is too large to open safely"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Sandstorm can read"
    return str(exc) or type(exc).__name__
