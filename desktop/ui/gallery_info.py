"""What an image file says about itself, as text for the gallery and the window (Qt-free).

``infotext(path)`` is the AUTOMATIC1111 ``parameters`` text shown and copied by the gallery;
``stored_request(path)`` the request to reuse; ``describe_source(meta)`` names the tool
whose settings an image carries (for "X carries ComfyUI generation settings").
"""

from __future__ import annotations

from pathlib import Path

from desktop.engine.metadata import PARAMETERS_KEY, ImageMetadata, format_parameters, read_metadata
from desktop.engine.request import GenerationRequest

NO_SETTINGS = "No generation settings are stored in this image."
_SOURCES = {
    "sandstorm": "Sandstorm",
    "a1111": "AUTOMATIC1111-style",
    "comfyui": "ComfyUI",
    "invokeai": "InvokeAI",
}


def infotext(path: Path | str) -> str:
    """The ``parameters`` text of an image (AUTOMATIC1111 layout), or a note saying none."""
    meta = read_metadata(path)
    text = meta.raw.get(PARAMETERS_KEY, "").strip()
    if text:
        return text
    if meta.request is not None:
        return format_parameters(meta.request, meta.model_name or None, meta.model_hash or None)
    return NO_SETTINGS


def stored_request(path: Path | str) -> GenerationRequest | None:
    """The request stored in an image, or None."""
    return read_metadata(path).request


def describe_source(meta: ImageMetadata) -> str:
    """The tool an image's settings come from, for messages ("ComfyUI", "Sandstorm", ...)."""
    return _SOURCES.get(meta.source, meta.source)
