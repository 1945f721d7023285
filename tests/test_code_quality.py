"""Lint and architecture checks run with the tests, so CI and developers run the same."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; install the test extras: pip install -e '.[test]'")
    return found


def test_ruff_is_clean():
    result = subprocess.run(
        [_tool("ruff"), "check", "desktop", "tests", "bench", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    """import-linter contracts from pyproject.toml: desktop.engine never imports PySide6, and
    the layers hold (app above ui | cli | training above engine; nothing imports upwards)."""
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "desktop.engine must not import PySide6 KEPT" in result.stdout
    assert "layers: app -> ui | cli | training -> engine KEPT" in result.stdout
    assert "0 broken" in result.stdout


def test_mypy_is_clean_on_the_engine():
    """mypy with the [tool.mypy] settings of pyproject.toml, on desktop/engine.

    Incremental: its cache (.mypy_cache, which ignores itself in git) makes reruns fast.
    """
    result = subprocess.run(
        [_tool("mypy"), "--config-file", "pyproject.toml", "desktop/engine"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_readme_and_ci_run_the_same_test_command():
    """.ci/run runs the README's test command verbatim, with the torch pin from
    installer/constraints.txt (the one place torch is pinned)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in readme if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 1, commands
    assert commands[0] in ci
    assert "-c installer/constraints.txt torch" in commands[0]
    assert "torch==" not in commands[0]


def test_environment_defaults_are_set_in_one_cheap_place():
    """desktop/engine/environment.py sets OMP/HF defaults without importing anything heavy,
    and never overrides a value the user set."""
    code = (
        "import os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "os.environ['HF_HUB_OFFLINE'] = '0'\n"
        "from desktop.engine.environment import apply_defaults\n"
        "print(apply_defaults())\n"
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['HF_HUB_OFFLINE'])\n"
        "print(apply_defaults())\n"
        "print(sorted(m for m in ('torch', 'PySide6', 'numpy', 'huggingface_hub') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["{'OMP_WAIT_POLICY': 'PASSIVE'}", "PASSIVE 0", "{}", "[]"]


def test_entry_points_apply_the_environment_defaults():
    """The app, the window, the engine, the tests and the benchmarks call apply_defaults()."""
    for relative in (
        "desktop/app.py",
        "desktop/ui/application.py",
        "desktop/engine/generate.py",
        "desktop/cli/check.py",
        "tests/conftest.py",
        "bench/__main__.py",
    ):
        text = (ROOT / relative).read_text(encoding="utf-8")
        assert "apply_defaults()" in text, relative
        assert 'setdefault("OMP_WAIT_POLICY"' not in text, relative
