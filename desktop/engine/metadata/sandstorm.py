"""Reading Sandstorm's own ``sandstorm`` chunk: the full request, every part included."""

from __future__ import annotations

import json

from desktop.engine.errors import RequestError
from desktop.engine.metadata.chunks import METADATA_VERSION
from desktop.engine.request import GenerationRequest


def read_sandstorm(text: str) -> tuple[GenerationRequest, str, str]:
    """(request, model name, model hash) from the chunk written by ``sandstorm_chunk``.

    Raises ``ValueError`` (malformed JSON) or ``RequestError`` (not a valid request, or a
    newer format than this Sandstorm reads).
    """
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
    return (
        request,
        model_name if isinstance(model_name, str) else "",
        model_hash if isinstance(model_hash, str) else "",
    )
