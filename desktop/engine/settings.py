"""User settings as a typed, versioned JSON file in the per-user config folder.

The window stores its layout here too (as base64 text), so one file holds everything and a
test fixture that redirects ``SANDSTORM_HOME`` isolates it completely.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.engine import paths

SETTINGS_VERSION = 1


@dataclass
class Settings:
    """Everything that persists across restarts."""

    version: int = SETTINGS_VERSION
    last_model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = ""
    schedule: str = "Automatic"
    steps: int = 0
    cfg_scale: float = 0.0
    width: int = 0
    height: int = 0
    batch_size: int = 1
    strength: float = 0.75
    output_dir: str = ""
    extra_model_folders: list[str] = field(default_factory=list)
    device: str = "auto"
    window_geometry: str = ""
    window_state: str = ""

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else paths.pictures_dir()


def settings_file() -> Path:
    return paths.config_dir() / "settings.json"


def load_settings(path: Path | None = None) -> Settings:
    """Read settings; a missing, corrupt or newer file gives defaults (never raises)."""
    path = path or settings_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Settings()
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return Settings()
    known = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    defaults = Settings()
    for name, value in data.items():
        if name in known and isinstance(value, type(getattr(defaults, name))):
            values[name] = value
        elif (
            name in known and isinstance(getattr(defaults, name), float) and isinstance(value, int)
        ):
            values[name] = float(value)
    values["version"] = SETTINGS_VERSION
    return Settings(**values)


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write settings atomically (a crash never leaves a half-written file)."""
    path = path or settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
