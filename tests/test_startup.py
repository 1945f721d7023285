"""Start-up import hygiene: the window paints before torch, diffusers or transformers load.

Contract with the window code: with ``SANDSTORM_EXIT_AFTER_PAINT=1`` the app prints one line
``SANDSTORM_FIRST_PAINT modules=<comma list> seconds=<float>`` at the main window's first
paint, where ``modules`` lists which of torch, diffusers, transformers are in ``sys.modules``
at that moment and ``seconds`` is the time since the process started, then exits 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAINT_LINE = re.compile(r"^SANDSTORM_FIRST_PAINT modules=(\S*) seconds=(\S+)$", re.MULTILINE)
HEAVY = {"torch", "diffusers", "transformers"}

pytestmark = pytest.mark.skipif(
    not (REPO / "desktop" / "ui" / "application.py").is_file(),
    reason="desktop/ui/application.py (run_gui) does not exist yet",
)


def _launch(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDSTORM_")}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        SANDSTORM_EXIT_AFTER_PAINT="1",
        SANDSTORM_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "desktop", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_window_paints_before_heavy_imports(sandstorm_home: Path):
    done = _launch(sandstorm_home)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = PAINT_LINE.findall(done.stdout)
    assert len(lines) == 1, f"expected one SANDSTORM_FIRST_PAINT line:\n{done.stdout}"
    modules, seconds = lines[0]
    loaded = {m for m in modules.split(",") if m}
    assert loaded <= HEAVY, f"unexpected names in modules=: {loaded - HEAVY}"
    assert not loaded, f"imported before the window painted: {sorted(loaded)}"
    assert float(seconds) > 0


def test_version_does_not_import_the_engine(sandstorm_home: Path):
    # --version must be instant: a probe process reports what ``--version`` pulled in.
    probe = (
        "import sys\n"
        "from desktop.app import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED=' + ','.join(sorted(m for m in ('torch', 'diffusers', 'transformers',"
        " 'PySide6') if m in sys.modules)))\n"
    )
    env = dict(os.environ, SANDSTORM_HOME=str(sandstorm_home), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "sandstorm " in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED=", done.stdout
