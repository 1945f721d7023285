"""installer/install.sh end to end: install into a temporary prefix, launch check, uninstall.

Everything happens under ``tmp_path``: HOME and the XDG folders point there, so the real home
folder and applications menu are never touched. pip's cache is shared with the real one so a
second run installs from it instead of downloading again. torch comes from the machine's local
CPU wheel (the installer pins it), which keeps the install to a minute or two.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "installer" / "install.sh"
INSTALL_TIMEOUT = 900

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="install.sh is the Linux/macOS installer"),
    pytest.mark.skipif(shutil.which("python3") is None, reason="the installer needs python3"),
]


def _pip_cache_dir() -> str:
    """The real pip cache, found before HOME is redirected (pip derives it from HOME)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False
    )
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else str(Path.home() / ".cache" / "pip")


class Install:
    """One install in a sandbox: its folders, its environment and the installer's output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.data_home = self.home / ".local" / "share"
        self.prefix = root / "prefix with space"
        self.desktop_file = self.data_home / "applications" / "sandstorm.desktop"
        self.icon = self.data_home / "icons" / "hicolor" / "256x256" / "apps" / "sandstorm.png"
        self.manifest = self.prefix / "install-manifest.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDSTORM_", "XDG_"))}
        env.update(
            HOME=str(self.home),
            XDG_DATA_HOME=str(self.data_home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            PIP_CACHE_DIR=_pip_cache_dir(),
            HF_HUB_OFFLINE="1",
            QT_QPA_PLATFORM="offscreen",
        )
        # No graphical session: the installer must not try to open a window in CI.
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        self.env = env

    def run(self, *args: str, timeout: float = INSTALL_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(INSTALLER), "--prefix", str(self.prefix), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def manifest_paths(self) -> list[Path]:
        lines = self.manifest.read_text(encoding="utf-8").splitlines()
        return [Path(line.split(" ", 1)[1]) for line in lines if line.strip()]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    sandbox = Install(tmp_path_factory.mktemp("install"))
    # Things the user already had: they must survive the install and the uninstall.
    user_menu_entry = sandbox.data_home / "applications" / "other-app.desktop"
    user_menu_entry.parent.mkdir(parents=True)
    user_menu_entry.write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=true\n")
    done = sandbox.run("--no-launch")
    assert done.returncode == 0, f"install failed:\n{done.stdout}\n{done.stderr}"
    sandbox.first_output = done.stdout
    return sandbox


def test_install_creates_venv_launcher_icon_and_manifest(install: Install):
    assert (install.prefix / "venv" / "bin" / "sandstorm").is_file()
    assert install.desktop_file.is_file()
    assert install.icon.is_file()
    recorded = set(install.manifest_paths())
    assert {install.desktop_file, install.icon, install.prefix / "venv"} <= recorded
    # Everything the installer put in the menu and icon folders is in the manifest.
    for folder in ("applications", "icons"):
        created = {p for p in _files(install.data_home / folder) if p.is_file()}
        created.discard(install.data_home / "applications" / "other-app.desktop")
        assert created <= recorded
    # The torch build is the pinned CPU one (an unpinned torch would be the CUDA build).
    torch_version = subprocess.run(
        [str(install.prefix / "venv/bin/python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert torch_version.startswith("2.13.0"), torch_version
    assert "==> Installing Sandstorm" in install.first_output


def test_desktop_file_launches_without_terminal(install: Install):
    entry = install.desktop_file.read_text(encoding="utf-8")
    assert "Terminal=false" in entry
    assert "Icon=sandstorm" in entry
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate is not installed (apt-get install desktop-file-utils)")
    done = subprocess.run([validator, str(install.desktop_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", done.stdout  # no warnings either


def _exec_command(desktop_file: Path) -> list[str]:
    line = next(
        line
        for line in desktop_file.read_text(encoding="utf-8").splitlines()
        if line.startswith("Exec=")
    )
    # The Exec value is quoted like a shell word list in the cases the installer writes.
    return [arg for arg in shlex.split(line.removeprefix("Exec=")) if not arg.startswith("%")]


def test_exec_line_runs_the_installed_app(install: Install):
    command = _exec_command(install.desktop_file)
    assert command == [str(install.prefix / "venv" / "bin" / "sandstorm")]
    done = subprocess.run(
        [*command, "--check"], env=install.env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert "Sandstorm:" in output and "0." in output
    assert "Device:       cpu" in output
    assert "Qt:           ok" in output
    builtin_present = (REPO / "models" / "builtin" / "model_index.json").is_file()
    if builtin_present:
        assert done.returncode == 0, output
    else:
        # Without the built-in model a fresh install legitimately has no usable model; that
        # must be the only problem reported.
        assert done.returncode == 1, output
        problems = [line for line in output.splitlines() if line.startswith("problem:")]
        assert len(problems) == 1 and "no usable model" in problems[0], output


def test_rerun_upgrades_in_place_and_keeps_user_data(install: Install):
    user_model = install.data_home / "sandstorm" / "models" / "checkpoints" / "mine.safetensors"
    user_model.parent.mkdir(parents=True)
    user_model.write_bytes(b"user data")
    venv_marker = install.prefix / "venv" / "pyvenv.cfg"
    before = venv_marker.stat().st_mtime_ns
    done = install.run("--no-launch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Upgrading the existing environment" in done.stdout
    assert "already installed" in done.stdout  # the pinned torch is not reinstalled
    assert venv_marker.stat().st_mtime_ns == before
    assert user_model.read_bytes() == b"user data"
    lines = install.manifest.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines))


def test_uninstall_removes_exactly_what_it_created(install: Install):
    recorded = install.manifest_paths()
    user_model = install.data_home / "sandstorm" / "models" / "checkpoints" / "mine.safetensors"
    user_settings = install.home / ".config" / "sandstorm" / "settings.json"
    user_settings.parent.mkdir(parents=True, exist_ok=True)
    user_settings.write_text("{}")
    other_entry = install.data_home / "applications" / "other-app.desktop"
    before = _files(install.root)

    done = install.run("--uninstall", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uninstalled" in done.stdout

    assert not install.prefix.exists()
    assert not install.desktop_file.exists()
    assert not install.icon.exists()
    assert not any(path.exists() for path in recorded)
    for kept in (user_model, user_settings, other_entry):
        assert kept.is_file(), f"{kept} was removed"
    # Nothing outside the manifest went: every surviving path from before is still there.
    removed = before - _files(install.root)
    allowed = tuple(str(a) for a in {*recorded, install.prefix})
    # Strings, not Path.parents: the venv alone is tens of thousands of paths.
    unexpected = {
        p
        for p in removed
        if not str(p).startswith(allowed)
        or not any(str(p) == a or str(p).startswith(a + os.sep) for a in allowed)
    }
    assert not unexpected, sorted(unexpected)

    again = install.run("--uninstall", timeout=60)
    assert again.returncode != 0
    assert "no Sandstorm install found" in again.stderr
