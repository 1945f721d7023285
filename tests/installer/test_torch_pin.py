"""torch and torchvision are pinned in one place, installer/constraints.txt, for both
installers and CI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "installer" / "constraints.txt"
INSTALLERS = ("install.sh", "install.ps1")


def _pinned(dist: str = "torch") -> str:
    pin = re.compile(rf"^\s*{dist}\s*==\s*([0-9][0-9A-Za-z.]*)\s*$", re.MULTILINE)
    found = pin.findall(CONSTRAINTS.read_text(encoding="utf-8"))
    assert len(found) == 1, f"expected exactly one {dist}==VERSION line in {CONSTRAINTS}"
    return found[0]


def test_constraints_file_pins_one_torch_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", _pinned())


def test_constraints_file_pins_one_torchvision_version_beside_torch():
    torchvision = _pinned("torchvision")
    assert re.fullmatch(r"\d+\.\d+\.\d+", torchvision)
    # torchvision 0.N+15 goes with torch 2.N (0.29 with 2.14): a pin that bumps one and
    # not the other gives a pair pip cannot install.
    torch_minor = int(_pinned().split(".")[1])
    assert int(torchvision.split(".")[1]) == torch_minor + 15, (_pinned(), torchvision)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize("dist", ["torch", "torchvision"])
def test_install_sh_reads_the_pin(dist: str):
    done = subprocess.run(
        ["sh", str(REPO / "installer" / "install.sh"), f"--print-{dist}-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _pinned(dist)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(("kept", "missing"), [("", "torch"), ("torch==1.0.0\n", "torchvision")])
def test_install_sh_refuses_to_run_without_the_pin(tmp_path: Path, kept: str, missing: str):
    copy = tmp_path / "checkout" / "installer"
    copy.mkdir(parents=True)
    shutil.copy(REPO / "installer" / "install.sh", copy / "install.sh")
    (copy / "constraints.txt").write_text(f"# emptied\n{kept}", encoding="utf-8")
    done = subprocess.run(
        ["sh", str(copy / "install.sh"), "--print-torch-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert f"no {missing}==VERSION line" in done.stderr


@pytest.mark.parametrize("script", INSTALLERS)
def test_installers_hard_code_no_torch_or_torchvision_version(script: str):
    text = (REPO / "installer" / script).read_text(encoding="utf-8")
    assert _pinned() not in text
    assert _pinned("torchvision") not in text
    assert "constraints.txt" in text


@pytest.mark.parametrize("script", INSTALLERS)
def test_installers_install_torch_and_torchvision_in_one_pip_call(script: str):
    """A pip call with torch alone could let the resolver keep a torchvision built for
    another torch (or another build: CUDA beside CPU), which then fails to import."""
    lines = (REPO / "installer" / script).read_text(encoding="utf-8").splitlines()
    torch_installs = [line for line in lines if re.search(r"[\"\s]torch==\$Torch", line, re.I)]
    assert torch_installs, script
    for line in torch_installs:
        assert re.search(r"torchvision==\$Torchvision", line, re.I), line


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
