"""torch is pinned in one place, installer/constraints.txt, for both installers and CI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "installer" / "constraints.txt"
PIN = re.compile(r"^\s*torch\s*==\s*([0-9][0-9A-Za-z.]*)\s*$", re.MULTILINE)


def _pinned() -> str:
    found = PIN.findall(CONSTRAINTS.read_text(encoding="utf-8"))
    assert len(found) == 1, f"expected exactly one torch==VERSION line in {CONSTRAINTS}"
    return found[0]


def test_constraints_file_pins_one_torch_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", _pinned())


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_install_sh_reads_the_pin():
    done = subprocess.run(
        ["sh", str(REPO / "installer" / "install.sh"), "--print-torch-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _pinned()


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_install_sh_refuses_to_run_without_the_pin(tmp_path: Path):
    copy = tmp_path / "checkout" / "installer"
    copy.mkdir(parents=True)
    shutil.copy(REPO / "installer" / "install.sh", copy / "install.sh")
    (copy / "constraints.txt").write_text("# emptied\n", encoding="utf-8")
    done = subprocess.run(
        ["sh", str(copy / "install.sh"), "--print-torch-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "no torch==VERSION line" in done.stderr


@pytest.mark.parametrize("script", ["install.sh", "install.ps1"])
def test_installers_hard_code_no_torch_version(script: str):
    text = (REPO / "installer" / script).read_text(encoding="utf-8")
    assert _pinned() not in text
    assert "constraints.txt" in text


def test_readme_and_ci_install_torch_through_the_constraints_file():
    for path in (REPO / "README.md", REPO / ".ci" / "run"):
        commands = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("python3 -m venv .venv")
        ]
        assert commands, path
        for command in commands:
            assert "pip install -c installer/constraints.txt torch " in command, path
            assert "torch==" not in command, path
