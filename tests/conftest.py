"""Shared fixtures: per-user folders redirected to a temporary directory, tiny models."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from desktop.engine.environment import apply_defaults
from desktop.ui.application import qt_defaults

# As the app does, before anything imports torch (see desktop/engine/environment.py) or
# creates the QApplication.
apply_defaults()
qt_defaults()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def sandstorm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SANDSTORM_HOME, so nothing touches the real user folders."""
    home = tmp_path / "sandstorm-home"
    monkeypatch.setenv("SANDSTORM_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a Python thread running (QThreads included, via Dummy)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for thread in leaked:
        thread.join(timeout=2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked running threads: {still}"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD1-style diffusers folder (64x64 images, 8x8 latents)."""
    from tests.helpers.tiny_models import build_tiny_sd, mark_native_size

    folder = build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")
    mark_native_size(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL-style diffusers folder."""
    from tests.helpers.tiny_models import build_tiny_sdxl, mark_native_size

    folder = build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    mark_native_size(folder)
    return folder
