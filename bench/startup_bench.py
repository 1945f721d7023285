"""Start-up benchmark: how soon the window paints, against ``import diffusers`` alone.

The window must paint before torch, diffusers and transformers are imported (they load in the
worker thread afterwards), so opening Sandstorm should take a fraction of the time that
importing diffusers takes. Both are timed from outside, from process launch, so interpreter
start-up counts in both.

The app honours ``SANDSTORM_EXIT_AFTER_PAINT=1``: at the first paint of the main window it
prints one line ``SANDSTORM_FIRST_PAINT modules=<comma list> seconds=<float>`` (``modules``:
which of torch, diffusers, transformers were in ``sys.modules``; ``seconds``: since the
process started) and exits 0.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAINT_LINE = re.compile(
    r"^SANDSTORM_FIRST_PAINT modules=(?P<modules>\S*) seconds=(?P<seconds>\S+)$"
)
HEAVY_MODULES = ("torch", "diffusers", "transformers")
LAUNCH_TIMEOUT = 120.0


@dataclass(frozen=True)
class FirstPaint:
    """One launch: what was imported at first paint and how long it took."""

    modules: tuple[str, ...]
    reported_seconds: float
    wall_seconds: float


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        SANDSTORM_EXIT_AFTER_PAINT="1",
        SANDSTORM_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def launch_to_first_paint(timeout: float = LAUNCH_TIMEOUT) -> FirstPaint:
    """Run ``python -m desktop`` until it reports its first paint.

    Raises:
        RuntimeError: the app exited without the line, failed, or took longer than ``timeout``.
    """
    with (
        tempfile.TemporaryDirectory(prefix="sandstorm-bench-") as home,
        tempfile.TemporaryFile("w+") as errors,
    ):
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "desktop"],
            cwd=REPO,
            env=_env(Path(home)),
            stdout=subprocess.PIPE,
            stderr=errors,  # a file, so a chatty stderr can never block the child
            text=True,
        )
        # Reading stdout blocks; the watchdog ends a launch that hangs before painting.
        watchdog = threading.Timer(timeout, child.kill)
        watchdog.start()
        match = None
        wall = 0.0
        try:
            assert child.stdout is not None
            # Line by line, so the wall time stops at the paint, not at process exit.
            for line in child.stdout:
                found = PAINT_LINE.match(line.strip())
                if found and match is None:
                    match = found
                    wall = time.perf_counter() - start
            child.wait()
        finally:
            watchdog.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
        errors.seek(0)
        err = errors.read()
    if child.returncode < 0:
        raise RuntimeError(f"the app was stopped after {timeout:.0f} s without exiting:\n{err}")
    if match is None:
        raise RuntimeError(
            f"the app exited ({child.returncode}) without printing SANDSTORM_FIRST_PAINT:\n{err}"
        )
    if child.returncode != 0:
        raise RuntimeError(f"the app exited with {child.returncode} after painting:\n{err}")
    modules = tuple(m for m in match["modules"].split(",") if m)
    return FirstPaint(modules, float(match["seconds"]), wall)


def time_import(module: str = "diffusers") -> float:
    """Wall time of ``python -c "import <module>"`` in a fresh interpreter."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=env)
    return time.perf_counter() - start


def run(repeats: int = 5) -> dict:
    """Median window time, median ``import diffusers`` time and their ratio.

    Returns:
        {"window_seconds", "window_reported_seconds", "import_diffusers_seconds",
        "window_vs_import_diffusers_ratio", "heavy_modules_at_paint", "repeats"}; the ratio
        is window / import (lower is better;
        above 1 the window waits for the engine).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    paints = [launch_to_first_paint() for _ in range(repeats)]
    imports = [time_import("diffusers") for _ in range(repeats)]
    window = statistics.median(p.wall_seconds for p in paints)
    diffusers_import = statistics.median(imports)
    heavy = sorted({m for p in paints for m in p.modules if m in HEAVY_MODULES})
    return {
        "window_seconds": round(window, 3),
        "window_reported_seconds": round(statistics.median(p.reported_seconds for p in paints), 3),
        "import_diffusers_seconds": round(diffusers_import, 3),
        "window_vs_import_diffusers_ratio": round(window / diffusers_import, 3),
        "heavy_modules_at_paint": heavy,
        "repeats": repeats,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
