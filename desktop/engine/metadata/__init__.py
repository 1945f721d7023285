"""Generation settings stored in images: written by Sandstorm, read from any common tool.

Every saved PNG carries two text chunks:

* ``parameters``: AUTOMATIC1111's "infotext", which Civitai and most image viewers read;
* ``sandstorm``: the full ``GenerationRequest`` as versioned JSON, which round-trips exactly.

``read_metadata`` understands our chunk, AUTOMATIC1111/Forge/Fooocus/Krita ``parameters``
(PNG text or EXIF UserComment in JPEG/WebP), ComfyUI ``prompt``/``workflow`` graphs and
InvokeAI ``invokeai_metadata``. It never raises: a broken file gives ``source == "none"`` and
an ``error`` string; values Sandstorm cannot use are clamped or kept in ``extras``.

One job per module:

* ``chunks``: PNG text chunks and the EXIF UserComment, in and out of files;
* ``writer``: the infotext writer (derived from the request's declarations), our chunk;
* ``builder``: the clamping request builder the foreign readers share;
* ``a1111``, ``comfyui``, ``invokeai``, ``fooocus``: one reader per foreign format;
* ``sandstorm``: our own chunk; ``reader``: which reader wins, ``read_metadata``.
"""

from __future__ import annotations

from desktop.engine.metadata.a1111 import map_a1111_sampler, parse_parameters
from desktop.engine.metadata.chunks import (
    METADATA_VERSION,
    PARAMETERS_KEY,
    SANDSTORM_KEY,
    collect_chunks,
    decode_user_comment,
    png_text_chunks,
)
from desktop.engine.metadata.comfyui import map_comfy_sampler, workflow_to_prompt
from desktop.engine.metadata.invokeai import map_invoke_scheduler
from desktop.engine.metadata.reader import (
    SOURCES,
    ImageMetadata,
    metadata_from_chunks,
    read_metadata,
)
from desktop.engine.metadata.writer import (
    format_number,
    format_parameters,
    model_display_name,
    png_info,
    quote,
    sandstorm_chunk,
)

__all__ = [
    "METADATA_VERSION",
    "PARAMETERS_KEY",
    "SANDSTORM_KEY",
    "SOURCES",
    "ImageMetadata",
    "collect_chunks",
    "decode_user_comment",
    "format_number",
    "format_parameters",
    "map_a1111_sampler",
    "map_comfy_sampler",
    "map_invoke_scheduler",
    "metadata_from_chunks",
    "model_display_name",
    "parse_parameters",
    "png_info",
    "png_text_chunks",
    "quote",
    "read_metadata",
    "sandstorm_chunk",
    "workflow_to_prompt",
]
