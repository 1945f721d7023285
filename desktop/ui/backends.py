"""Where jobs run, as the window offers it: the backend picker's choices, the servers'
checkpoints as model-picker entries and why no server has answered yet. Plain logic, no
widgets, so the tests drive it directly."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.engine.models import ModelInfo
from desktop.engine.remote.comfy_client import ServerConfig, ServerModels
from desktop.engine.settings import ALL_SERVERS, LOCAL_BACKEND

if TYPE_CHECKING:  # the pool module imports torch; the window must not before it paints
    from desktop.engine.remote.pool import ServerStatus

#: A checkpoint whose name says "xl" (sd_xl_base, juggernautXL_v9, …) is taken for SDXL.
_XL = re.compile(r"xl(?![a-z])", re.IGNORECASE)


def backend_choices(configs: Sequence[ServerConfig]) -> list[tuple[str, str]]:
    """(key, label) pairs for the picker: "Local", each server, and "All servers" when there
    are two or more. Only "Local" without servers (the picker is hidden then)."""
    labels = [config.label for config in configs]
    choices = [(LOCAL_BACKEND, "Local")]
    for config, label in zip(configs, labels, strict=True):
        if labels.count(label) > 1:  # two servers of the same name: tell them apart
            label = f"{label} ({urllib.parse.urlsplit(config.url).netloc})"
        choices.append((config.url, label))
    if len(configs) >= 2:
        choices.append((ALL_SERVERS, "All servers"))
    return choices


def is_server_backend(backend: str) -> bool:
    return backend != LOCAL_BACKEND


def checkpoint_info(name: str) -> ModelInfo:
    """A model-picker entry for the server checkpoint ``name``.

    The path is the server's name as it spells it, so the request's ``model`` is exactly what
    the server lists; nothing ever opens it here. The family is a guess from the name (the
    file is not here to be read): SDXL when it says so, else SD 1.x.
    """
    stem = Path(name.replace("\\", "/")).stem or name
    xl = bool(_XL.search(stem))
    return ModelInfo(
        name=stem,
        path=Path(name),
        format=Path(name).suffix.lstrip(".") or "safetensors",
        family="sdxl" if xl else "sd1",
        native_size=1024 if xl else 512,
        extras={"server": True},
    )


def checkpoint_infos(models: ServerModels | None) -> list[ModelInfo]:
    """The servers' checkpoints as picker entries (empty while none has answered)."""
    return [checkpoint_info(name) for name in models.checkpoints] if models else []


def connecting_reason(statuses: Sequence[ServerStatus]) -> str:
    """Why the servers list no models yet: each one's error, or that it is being asked."""
    if not statuses:
        return "No server is set up for this choice: add one in File ▸ Settings."
    parts = []
    for status in statuses:
        if status.online:
            parts.append(f"{status.label} answered")
        elif status.error:
            # The client's messages mostly name the server already.
            named = status.label in status.error
            parts.append(status.error.rstrip(".") if named else f"{status.label}: {status.error}")
        else:
            parts.append(f"connecting to {status.label}…")
    text = "; ".join(parts)
    return text[0].upper() + text[1:]


def servers_summary(statuses: Sequence[ServerStatus]) -> str:
    """One line for the status bar: which servers answer and which do not (and why)."""
    online = [s.label for s in statuses if s.online]
    offline = [s for s in statuses if not s.online]
    parts = []
    if online:
        parts.append(f"Connected to {', '.join(online)}")
    if offline:
        parts.append(connecting_reason(offline))
    return ". ".join(parts)
