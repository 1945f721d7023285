"""The application as a process: the start-up contract and a real window under Xvfb."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop.engine import paths
from desktop.engine.settings import Settings, save_settings

ARTIFACTS = paths.PROJECT_ROOT / "artifacts"
FIRST_PAINT = re.compile(r"^SANDSTORM_FIRST_PAINT modules=(\S*) seconds=([0-9.]+)$")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def test_window_paints_before_any_model_library_is_imported(sandstorm_home):
    result = subprocess.run(
        [sys.executable, "-m", "desktop"],
        env=_env(SANDSTORM_EXIT_AFTER_PAINT="1", QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=paths.PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("SANDSTORM_")]
    assert len(lines) == 1, result.stdout
    match = FIRST_PAINT.match(lines[0])
    assert match, lines[0]
    assert match.group(1) == ""  # no torch, diffusers or transformers before the first paint
    assert 0.0 < float(match.group(2)) < 30.0


def _start_xvfb(display: str) -> subprocess.Popen:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    server = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    socket = Path(f"/tmp/.X11-unix/X{display.lstrip(':')}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            error = server.stderr.read().decode(errors="replace")[-300:] if server.stderr else ""
            if server.stderr is not None:
                server.stderr.close()
            pytest.skip(f"Xvfb could not start on {display}: {error.strip()}")
        if socket.exists():
            return server
        time.sleep(0.05)
    server.kill()
    server.wait()
    if server.stderr is not None:
        server.stderr.close()
    pytest.skip(f"Xvfb did not open {display} within 10 s")


@pytest.mark.xvfb
@pytest.mark.slow
def test_real_window_under_xvfb_screenshot(sandstorm_home, tiny_sd):
    """Run the app on a real X server, generate once and save a screenshot for review."""
    settings = Settings(
        last_request={
            "model": str(tiny_sd),
            "prompt": "a sandstorm over red dunes at dusk, wide angle",
            "negative_prompt": "blurry",
            "sampler": "Euler",
            "steps": 4,
            "width": 64,
            "height": 64,
        },
        extra_model_folders=[str(tiny_sd.parent)],
        device="cpu",
    )
    save_settings(settings)
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "screenshot-main-window.png"
    grab = ARTIFACTS / "screenshot-main-window-grab.png"
    for old in (target, grab):
        old.unlink(missing_ok=True)
    display = ":99"
    server = _start_xvfb(display)
    try:
        app = subprocess.Popen(
            [sys.executable, "-m", "desktop"],
            env=_env(
                DISPLAY=display,
                QT_QPA_PLATFORM="xcb",
                SANDSTORM_SCREENSHOT=str(grab),
                SANDSTORM_SCREENSHOT_GENERATE="1",
                SANDSTORM_SCREENSHOT_HOLD="4",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=paths.PROJECT_ROOT,
        )
        try:
            announced = False
            assert app.stdout is not None
            for line in app.stdout:
                if line.startswith("SANDSTORM_SCREENSHOT "):
                    announced = True
                    break
            assert announced, app.stderr.read() if app.stderr else ""
            if shutil.which("import"):
                subprocess.run(
                    ["import", "-display", display, "-window", "root", str(target)],
                    check=True,
                    timeout=30,
                    capture_output=True,
                )
            else:
                shutil.copyfile(grab, target)
            assert app.wait(timeout=60) == 0
        finally:
            if app.poll() is None:
                app.kill()
                app.wait()
            for stream in (app.stdout, app.stderr):
                if stream is not None:
                    stream.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr is not None:
            server.stderr.close()
    assert target.stat().st_size > 10_000
    from PIL import Image, ImageStat

    with Image.open(grab) as shot:
        # A dark theme: the window is mostly dark, with the accent Generate button.
        assert ImageStat.Stat(shot.convert("L")).mean[0] < 110
