"""``sandstorm --check``: what this install would run on, and whether it can run at all.

Prints versions, the torch build and device, the folders in use and the models found, then
exits non-zero when the install is broken: a required package is missing or fails to import,
the shipped model configs are missing, or there is no usable model. It stays fast (no model
is loaded) so it is the first thing to run when something goes wrong, and the output is
meant to be pasted into a bug report.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from desktop import __version__

#: (import name, distribution name) of every package Sandstorm cannot run without.
REQUIRED_PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("safetensors", "safetensors"),
    ("PIL", "pillow"),
    ("numpy", "numpy"),
    ("yaml", "pyyaml"),
    ("PySide6.QtCore", "PySide6-Essentials"),
)
QT_PROBE_TIMEOUT = 60.0
_QT_PROBE = (
    "import sys\n"
    "from PySide6.QtGui import QGuiApplication\n"
    "app = QGuiApplication([sys.argv[0], '-platform', 'offscreen'])\n"
    "print(app.platformName())\n"
)


def _line(label: str, value: object) -> None:
    print(f"{label + ':':<14}{value}")


def _package_versions(problems: list[str]) -> dict[str, str]:
    """Import each required package; a missing or broken one is a problem."""
    versions = {}
    for module, dist in REQUIRED_PACKAGES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install raises anything, not only ImportError
            problems.append(f"the package {dist} does not import ({type(exc).__name__}: {exc})")
            versions[dist] = "MISSING"
            continue
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "installed (version unknown)"
    return versions


def _torch_build() -> str:
    import torch

    cuda = getattr(torch.version, "cuda", None)
    if cuda:
        return f"CUDA {cuda}"
    if sys.platform == "darwin":
        return "default (Metal/MPS)"
    return "CPU"


def _device(setting: str) -> str:
    """The device generation would use, with the GPU's name when there is one."""
    import torch

    from desktop.engine.devices import parse_device, resolve_device
    from desktop.engine.errors import RequestError

    try:
        device = resolve_device(parse_device(setting))
    except RequestError as exc:  # a device chosen in the settings that is not there
        device = resolve_device("auto")
        return f"{_with_gpu_name(device, torch)} (the setting {setting!r} cannot be used: {exc})"
    return _with_gpu_name(device, torch)


def _compute_plan(setting: str, options: Any = None) -> list[str]:
    """What generation will compute in, and why (number formats, memory mode, threads), with
    the performance settings ``options`` (a ``ComputeOptions``; None: all auto)."""
    from desktop.engine.devices import parse_device, plan_compute, probe, resolve_device
    from desktop.engine.errors import RequestError

    try:
        device = resolve_device(parse_device(setting))
    except RequestError:
        device = resolve_device("auto")
    return plan_compute(probe(device), options).lines()


def _with_gpu_name(device: str, torch: Any) -> str:
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return f"{device} ({torch.cuda.get_device_name(int(index or 0))})"
    return device


def _settings() -> tuple[str, list[str], Any]:
    """The device setting, the extra model sources and the performance options from the
    user's settings file."""
    try:
        from desktop.engine.settings import load_settings

        settings = load_settings()
        sources = [str(s) for s in settings.extra_model_folders]
        return str(settings.device or "auto"), sources, settings.compute_options()
    except Exception:  # a damaged settings file is reported by the app itself, not here
        return "auto", [], None


def _qt_offscreen() -> tuple[bool, str]:
    """Whether Qt can start at all; in a child process, because a Qt that cannot start
    aborts the process instead of raising."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _QT_PROBE],
            capture_output=True,
            text=True,
            timeout=QT_PROBE_TIMEOUT,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not run the Qt probe ({exc})"
    if done.returncode == 0:
        return True, f"ok (offscreen QGuiApplication, platform {done.stdout.strip()})"
    tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return False, f"failed: {tail}"


def run_check() -> int:
    """Print the diagnostics; return 0 when the install can generate, 1 when it is broken."""
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    problems: list[str] = []
    notes: list[str] = []

    _line("Sandstorm", __version__)
    _line("Python", f"{platform.python_version()} ({sys.executable})")
    _line("Platform", f"{platform.platform()} {platform.machine()}")

    versions = _package_versions(problems)
    torch_ok = versions.get("torch") != "MISSING"
    if torch_ok:
        _line("torch", f"{versions['torch']} ({_torch_build()} build)")
    else:
        _line("torch", "MISSING")
    device_setting, sources, options = _settings()
    _line("Device", _device(device_setting) if torch_ok else "unknown (torch is missing)")
    if torch_ok:
        for text in _compute_plan(device_setting, options):
            _line("Compute", text)
    for dist in ("diffusers", "transformers", "safetensors", "pillow", "pyyaml"):
        _line(dist, versions[dist])
    _line("PySide6", versions["PySide6-Essentials"])
    qt_ok, qt_text = _qt_offscreen()
    _line("Qt", qt_text)
    if not qt_ok:
        problems.append("Qt cannot start, so the window cannot open (see the Qt line above)")

    from desktop.engine import models, paths

    print()
    _line("Data", paths.data_dir())
    _line("Settings", paths.config_dir())
    _line("Cache", paths.cache_dir())
    _line("Pictures", paths.pictures_dir())
    _line("Configs", paths.MODEL_CONFIGS)
    if not paths.MODEL_CONFIGS.is_dir():
        problems.append(
            f"the model configs folder {paths.MODEL_CONFIGS} is missing; reinstall from a "
            "complete copy of Sandstorm"
        )

    from desktop.engine.model_folders import checkpoint_search_folders, folders_for

    folders = checkpoint_search_folders(sources)
    for folder in folders:
        state = "" if Path(folder).is_dir() else "  (does not exist yet)"
        _line("Models in", f"{folder}{state}")
    for folder in folders_for("vae", sources):
        if Path(folder).is_dir():
            _line("VAEs in", folder)

    builtin = paths.BUILTIN_MODEL / "model_index.json"
    _line("Built-in", "present" if builtin.is_file() else f"missing ({paths.BUILTIN_MODEL})")
    if not builtin.is_file():
        notes.append("the built-in model is missing, so only your own models can be used")

    found = models.scan(folders)
    print()
    print(f"Models found: {len(found)}")
    for info in found:
        state = "usable" if info.usable else f"not usable: {info.reason}"
        extra = f" ({info.reason})" if info.usable and info.reason else ""
        print(f"  {info.name}  [{info.label}]  {state}{extra}")
    if not any(info.usable for info in found):
        problems.append(
            "no usable model: put a Stable Diffusion checkpoint in "
            f"{paths.user_models_dir() / 'checkpoints'} or restore models/builtin"
        )

    print()
    for note in notes:
        print(f"note: {note}")
    if problems:
        for problem in problems:
            print(f"problem: {problem}")
        print(f"sandstorm --check found {len(problems)} problem(s).")
        return 1
    print("Sandstorm is ready.")
    return 0
