"""Between the panels and a request: building it, remembering it, and size presets.

The panels report their values by setting name (``SettingsPanel.values``); ``build_request``
merges them into the frozen ``GenerationRequest`` (raising ``RequestError`` with a
user-facing message). The values declared ``remember=True`` are kept in
``Settings.last_request`` and restored on the next launch by ``restored_values``, which
drops any value that no longer validates (a renamed sampler, a changed limit).
"""

from __future__ import annotations

from typing import Any

from desktop.engine.errors import RequestError
from desktop.engine.request import GenerationRequest, request_fields
from desktop.engine.schema import to_plain
from desktop.engine.settings import Settings

#: Size presets per model family, native size first.
SIZE_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    "sd1": ((512, 512), (512, 768), (768, 512), (640, 448), (448, 640)),
    "sd2": ((768, 768), (768, 1024), (1024, 768), (512, 512)),
    "sdxl": (
        (1024, 1024),
        (896, 1152),
        (1152, 896),
        (832, 1216),
        (1216, 832),
        (768, 1344),
        (1344, 768),
    ),
}


def size_presets(family: str, native_size: int = 0) -> tuple[tuple[int, int], ...]:
    """Sizes offered for a model family; the built-in model offers its native size."""
    base = family.split("-")[0]
    if base in SIZE_PRESETS:
        return SIZE_PRESETS[base]
    side = native_size or 512
    return ((side, side), (side * 2, side * 2), (side, side * 3 // 2), (side * 3 // 2, side))


def build_request(values: dict[str, Any]) -> GenerationRequest:
    """The frozen request from the panels' values; raises ``RequestError`` when invalid."""
    return GenerationRequest.from_values(values)


def remember_values(values: dict[str, Any], settings: Settings) -> None:
    """Keep the remembered settings of ``values`` in ``settings.last_request``.

    Values are stored even when the whole form is not a valid request yet (a half-typed
    size), so a restart shows what the user left; each is checked again on restore.
    """
    kept: dict[str, Any] = {}
    for info in request_fields():
        if not info.spec.remember or info.name not in values:
            continue
        value = values[info.name]
        if info.kind in ("part", "parts"):
            try:
                value = to_plain(GenerationRequest(prompt="", **{info.name: value}))[info.name]
            except RequestError:
                continue
        kept[info.name] = value
    settings.last_request = kept


def restored_values(settings: Settings) -> dict[str, Any]:
    """The remembered values that still validate, each on its own (others are dropped)."""
    restored: dict[str, Any] = {}
    remembered = {info.name for info in request_fields() if info.spec.remember}
    for name, value in settings.last_request.items():
        if name not in remembered:
            continue
        try:
            request = GenerationRequest.from_dict({"prompt": "", name: value})
        except RequestError:
            continue
        restored[name] = getattr(request, name)
    return restored
