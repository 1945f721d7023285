"""Integration tests against the real ComfyUI server (a separate GPL program, never imported).

The ``comfyui`` session fixture builds the random-weight SD1.5 test checkpoint once (cached
between sessions, see ``tests.helpers.comfy_server.sd15_checkpoint``), links it into a
session models folder, starts one server for this package and yields its ``ComfyProcess``.
It skips, with the reason, where ComfyUI or its venv is absent (see ``skip_reason``). Every
test that uses it gets the ``comfyui`` marker: ``pytest -m comfyui`` runs only those,
``-m "not comfyui"`` leaves them out.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import comfy_server

#: The name the server lists the test checkpoint under.
TEST_CHECKPOINT = "sandstorm-test-sd15.safetensors"
#: The checkpoint (about 2 GiB) plus room for ComfyUI's temporary files.
NEEDED_DISK_BYTES = 3 * 2**30
#: Building the checkpoint takes about 5.6 GB and the server with it loaded about 6.7 GB;
#: below this much free memory the tests skip rather than risk the out-of-memory killer.
NEEDED_MEMORY_BYTES = 10 * 2**30


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "comfyui: runs the real ComfyUI server (skips with a reason where it cannot)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "comfyui" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.comfyui)
            item.add_marker(pytest.mark.slow)


def _free_bytes(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


@pytest.fixture(scope="session")
def comfyui_checkpoint() -> Path:
    """The cached random-weight SD1.5 checkpoint file (built on first use)."""
    reason = comfy_server.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    memory = _available_memory()
    if memory is not None and memory < NEEDED_MEMORY_BYTES:
        pytest.skip(
            f"only {memory / 2**30:.1f} GiB of memory free; the real ComfyUI with the full-size "
            f"test checkpoint needs about {NEEDED_MEMORY_BYTES / 2**30:.0f} GiB"
        )
    cache = comfy_server.default_cache_dir() / "comfyui"
    started = time.perf_counter()
    try:
        path = comfy_server.sd15_checkpoint(cache)
    except OSError as exc:
        if _free_bytes(cache) < NEEDED_DISK_BYTES:
            pytest.skip(f"not enough disk space in {cache} for the 2 GiB test checkpoint: {exc}")
        raise
    seconds = time.perf_counter() - started
    print(
        f"\n[comfyui] test checkpoint {path.name}: {path.stat().st_size / 2**20:.0f} MiB, "
        f"ready in {seconds:.1f} s"
    )
    return path


@pytest.fixture(scope="package")
def comfyui(
    comfyui_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[comfy_server.ComfyProcess]:
    """One real ComfyUI server for this package's tests, listing ``TEST_CHECKPOINT``.

    Package scope: once per run (every user is in this package), and stopped after the last
    of them, so the server (several GB of memory with the model loaded) does not stay up
    while the rest of the suite runs.
    """
    models = tmp_path_factory.mktemp("comfyui-models")
    comfy_server.link_into(comfyui_checkpoint, models / "checkpoints", TEST_CHECKPOINT)
    with comfy_server.running_comfyui(models) as comfy:
        print(f"\n[comfyui] server {comfy.url} answered after {comfy.startup_s:.1f} s")
        yield comfy
