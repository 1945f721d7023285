"""Where Sandstorm keeps things, in one module (no Qt: the engine must stay headless).

``SANDSTORM_HOME`` redirects every per-user folder under one directory (tests and portable
installs use it). Otherwise the platform's conventions apply: XDG on Linux, Application
Support on macOS, %APPDATA% / %LOCALAPPDATA% on Windows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESOURCES = PROJECT_ROOT / "resources"
MODEL_CONFIGS = RESOURCES / "model_configs"
BUNDLED_MODELS = PROJECT_ROOT / "models"
BUILTIN_MODEL = BUNDLED_MODELS / "builtin"
APP_NAME = "sandstorm"


def _home_override() -> Path | None:
    value = os.environ.get("SANDSTORM_HOME")
    return Path(value).expanduser() if value else None


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    """Per-user data: user models, gallery index, caches that must survive."""
    if (home := _home_override()) is not None:
        return home / "data"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData/Local")) / "Sandstorm"
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/Sandstorm"
    return _xdg("XDG_DATA_HOME", ".local/share") / APP_NAME


def config_dir() -> Path:
    """Per-user settings."""
    if (home := _home_override()) is not None:
        return home / "config"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData/Roaming")) / "Sandstorm"
    if sys.platform == "darwin":
        return Path.home() / "Library/Preferences/Sandstorm"
    return _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME


def cache_dir() -> Path:
    """Disposable caches: thumbnails, model hashes, temporary init images."""
    if (home := _home_override()) is not None:
        return home / "cache"
    if sys.platform == "win32":
        return data_dir() / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library/Caches/Sandstorm"
    return _xdg("XDG_CACHE_HOME", ".cache") / APP_NAME


def pictures_dir() -> Path:
    """Default output folder for generated images."""
    if (home := _home_override()) is not None:
        return home / "pictures"
    pictures = os.environ.get("XDG_PICTURES_DIR")
    base = Path(pictures) if pictures else Path.home() / "Pictures"
    return base / "Sandstorm"


def user_models_dir() -> Path:
    """Models the user keeps in their data folder (same layout as the bundled ``models/``)."""
    return data_dir() / "models"
