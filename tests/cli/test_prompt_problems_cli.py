"""Issue 13 item 8 on the command line: a part that cannot be used is one clear error line
and exit code 1 with nothing written; malformed brackets print a warning and still generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from desktop.app import main
from desktop.engine import paths
from tests.helpers import network_files as nf


def _generate(model: Path, out: Path, prompt: str, negative: str = "") -> int:
    args = ["generate", "--prompt", prompt, "--model", str(model), "--steps", "2"]
    args += ["--width", "64", "--height", "64", "--seed", "1", "--out", str(out)]
    args += ["--device", "cpu"]
    if negative:
        args += ["--negative", negative]
    return main(args)


def _loras_dir() -> Path:
    folder = paths.user_models_dir() / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _lora_for(model: Path, name: str) -> Path:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model), dtype=torch.float32)
    return nf.save(nf.kohya_lora(pipe), _loras_dir() / name)


def test_parts_that_cannot_be_used_are_one_error_line_and_nothing_is_written(
    tiny_sd, tiny_sdxl, tmp_path, capsys
):
    out = tmp_path / "out"
    _lora_for(tiny_sdxl, "xl_style.safetensors")
    cut = _lora_for(tiny_sd, "cut.safetensors")
    cut.write_bytes(cut.read_bytes()[:100])
    _lora_for(tiny_sd, "old.pt")
    capsys.readouterr()  # the progress bars of building the test files
    cases = [
        ("a cat, <lora:detail_tweaker:0.8>", "", "The LoRA 'detail_tweaker' is not installed"),
        ("a cat", "embedding:easynegative", "The embedding 'easynegative' is not installed"),
        ("a cat, <lora:xl_style>", "", "made for SDXL"),
        ("a cat, <lora:cut>", "", "damaged or incomplete"),
        ("a cat, <lora:old>", "", "pickle file"),
    ]
    for prompt, negative, expected in cases:
        assert _generate(tiny_sd, out, prompt, negative) == 1, prompt
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0]
    assert not out.exists() or not list(out.rglob("*.png"))


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("((a cat", "never closed"), ("(a cat:abc)", "is not a number")],
)
def test_malformed_brackets_warn_and_still_generate(tiny_sd, tmp_path, capsys, prompt, expected):
    assert _generate(tiny_sd, tmp_path / "out", prompt) == 0
    captured = capsys.readouterr()
    warnings = [
        line for line in captured.err.splitlines() if line.startswith("sandstorm: warning:")
    ]
    assert any(expected in line for line in warnings), captured.err
    assert len(captured.out.split()) == 1 and captured.out.strip().endswith(".png")
