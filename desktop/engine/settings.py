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
from desktop.engine.devices import ComputeOptions
from desktop.engine.errors import RequestError
from desktop.engine.remote.comfy_client import ServerConfig, normalize_url

SETTINGS_VERSION = 2
#: What happens to jobs still waiting when the app last closed or crashed.
QUEUE_ON_START = ("run", "paused")
#: ``Settings.backend`` values besides a server's URL.
LOCAL_BACKEND = "local"
ALL_SERVERS = "all"


@dataclass
class Settings:
    """Everything that persists across restarts.

    ``last_request`` holds the generation settings the user last had in the panels, by
    setting name: exactly the settings declared with ``remember=True`` in
    ``desktop.engine.request`` (see ``remembered``). Empty on a first start.
    """

    version: int = SETTINGS_VERSION
    last_request: dict[str, Any] = field(default_factory=dict)
    queue_on_start: str = "run"
    output_dir: str = ""
    extra_model_folders: list[str] = field(default_factory=list)
    device: str = "auto"
    #: Performance settings (see ``desktop.engine.devices.ComputeOptions``): "auto" lets
    #: the engine choose for the device and model (``sandstorm --check`` says what and why).
    precision: str = "auto"
    vae_precision: str = "auto"
    memory_mode: str = "auto"
    torch_compile: bool = False
    window_geometry: str = ""
    window_state: str = ""
    #: Thumbnail size of the full-window gallery, in pixels (the browser clamps it).
    gallery_thumbnail_size: int = 160
    #: ComfyUI servers: {"url", "name", "token", "verify_tls"} each. Access tokens live only
    #: here (the file is readable by its owner alone) and never in image metadata or logs.
    servers: list[dict[str, Any]] = field(default_factory=list)
    #: Where jobs run: "local", "all" (every server) or one server's URL.
    backend: str = LOCAL_BACKEND
    #: The note on seeds differing between this computer and ComfyUI servers was shown (it
    #: is shown once, the first time a server is chosen).
    seen_server_seed_note: bool = False

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else paths.pictures_dir()

    def server_configs(self) -> list[ServerConfig]:
        """The servers as the remote backend takes them (malformed entries left out)."""
        configs: list[ServerConfig] = []
        for entry in self.servers:
            config = server_config(entry)
            if config is not None and config.url not in {c.url for c in configs}:
                configs.append(config)
        return configs

    def backend_servers(self) -> list[ServerConfig]:
        """The servers jobs go to: none for the local engine, all of them, or the chosen one
        (none when it is no longer in the list)."""
        if self.backend == LOCAL_BACKEND:
            return []
        configs = self.server_configs()
        if self.backend == ALL_SERVERS:
            return configs
        return [c for c in configs if c.url == self.backend]

    def compute_options(self) -> ComputeOptions:
        """The performance settings as the engine takes them."""
        return ComputeOptions(
            precision=self.precision,
            vae_precision=self.vae_precision,
            memory_mode=self.memory_mode,
            compile=self.torch_compile,
        )


def server_config(entry: Any) -> ServerConfig | None:
    """A ``ServerConfig`` from a settings entry; None when it is not a valid one."""
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        return None
    try:
        url = normalize_url(entry["url"])
    except RequestError:
        return None
    token, name = entry.get("token", ""), entry.get("name", "")
    return ServerConfig(
        url=url,
        token=token if isinstance(token, str) else "",
        verify_tls=entry.get("verify_tls", True) is not False,
        name=name if isinstance(name, str) else "",
    )


def server_entry(config: ServerConfig) -> dict[str, Any]:
    """The settings entry of ``config``."""
    return {
        "url": config.url,
        "name": config.name,
        "token": config.token,
        "verify_tls": config.verify_tls,
    }


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
    if data.get("version") == 1:
        values["last_request"] = _from_version_1(data)
    if "servers" in values:
        values["servers"] = [e for e in values["servers"] if server_config(e) is not None]
    if values.get("queue_on_start") not in QUEUE_ON_START:
        values.pop("queue_on_start", None)
    values["version"] = SETTINGS_VERSION
    settings = Settings(**values)
    try:  # a hand-edited "precision": "fp64" falls back to the defaults, not a crash
        settings.compute_options()
    except RequestError:
        for name in ("precision", "vae_precision", "memory_mode"):
            setattr(settings, name, "auto")
    return settings


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept each panel value as its own top-level key (zero/empty: unset)."""
    names: tuple[str, ...] = ("prompt", "negative_prompt", "sampler", "schedule", "steps")
    names += ("cfg_scale", "width", "height", "batch_size", "strength")
    last = {name: data[name] for name in names if data.get(name) not in (None, "", 0, 0.0)}
    if isinstance(data.get("last_model"), str) and data["last_model"]:
        last["model"] = data["last_model"]
    return last


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write settings atomically (a crash never leaves a half-written file)."""
    path = path or settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True)
    # mkstemp makes the file readable by its owner only; said again for clarity, because
    # the file holds the servers' access tokens.
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
