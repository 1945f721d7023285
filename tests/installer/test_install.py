"""installer/install.sh end to end: install into a temporary prefix, launch check, uninstall.

Everything happens under ``tmp_path``: HOME and the XDG folders point there, so the real home
folder and applications menu are never touched. pip's cache is shared with the real one so a
second run installs from it instead of downloading again. torch and torchvision are the pair that
installer/constraints.txt pins: the CPU build where pip can get one, otherwise (no CPU
torchvision on pip's indexes and PyTorch's CPU index out of reach, as on an offline machine)
the default build from pip's indexes, which on Linux is the CUDA one (several GB; the install
then takes several minutes).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "installer" / "install.sh"
INSTALL_TIMEOUT = 900
CONSTRAINTS = REPO / "installer" / "constraints.txt"

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


def _pinned(dist: str) -> str:
    text = CONSTRAINTS.read_text(encoding="utf-8")
    found = re.findall(rf"^\s*{dist}\s*==\s*([0-9][0-9A-Za-z.]*)\s*$", text, re.MULTILINE)
    assert len(found) == 1, f"expected one {dist}==VERSION line in {CONSTRAINTS}"
    return found[0]


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
    # torch and torchvision are the pinned pair, of one build: torchvision imports (one built
    # for another torch, or CUDA beside a CPU torch, fails with "operator torchvision::nms
    # does not exist") and so does spandrel, which needs it.
    probe = subprocess.run(
        [
            str(install.prefix / "venv/bin/python"),
            "-c",
            "import torch, torchvision, spandrel\n"
            "print(torch.__version__, torchvision.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    torch_version, torchvision_version = probe.stdout.split()
    assert torch_version.split("+")[0] == _pinned("torch"), torch_version
    assert torchvision_version.split("+")[0] == _pinned("torchvision"), torchvision_version
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
