"""Issue 13 item 8 through the window: each bad prompt either refuses its job with a message
naming the problem, or runs with a visible warning; the next job always works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from desktop.engine import paths
from desktop.ui.main_window import MainWindow
from tests.helpers import network_files as nf

LONG = 60_000


def _loras_dir() -> Path:
    folder = paths.user_models_dir() / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(qtbot, win: MainWindow, prompt: str, negative: str = "") -> tuple[str, list[str]]:
    """Run one job with ``prompt``: ("finished" | "failed", the messages the bar showed)."""
    shown: list[str] = []
    outcome: list[str] = []
    win.worker.warning_raised.connect(lambda _j, text: shown.append(text))
    win.worker.job_failed.connect(lambda _j, message: shown.append(message))
    win.prompt_panel.set_prompt(prompt, negative)
    job = win.generate()
    assert job is not None
    win.worker.job_finished.connect(
        lambda j, _s: outcome.append("finished") if j == job.job_id else None
    )
    win.worker.job_failed.connect(
        lambda j, _m: outcome.append("failed") if j == job.job_id else None
    )
    qtbot.waitUntil(lambda: bool(outcome), timeout=LONG)
    return outcome[0], shown


@pytest.fixture(scope="module")
def lora_states(tiny_sd: Path, tiny_sdxl: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Kohya LoRAs for the tiny SD 1.x and SDXL models, built before any window starts (a
    pipeline load patches module construction process-wide, so it must not overlap the
    worker's own load)."""
    from diffusers import DiffusionPipeline

    return {
        name: nf.kohya_lora(DiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32))
        for name, folder in (("sd", tiny_sd), ("sdxl", tiny_sdxl))
    }


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing LoRA", "The LoRA 'detail_tweaker' is not installed"),
        ("missing embedding", "The embedding 'easynegative' is not installed"),
        ("SDXL LoRA on SD 1.x", "made for SDXL"),
        ("truncated LoRA", "damaged or incomplete"),
        ("pickled .pt LoRA", "pickle file"),
    ],
)
def test_a_part_that_cannot_be_used_refuses_the_job_and_the_next_one_runs(
    lora_states, qtbot, window, case, expected
):
    prompt, negative = "a red circle", ""
    if case == "missing LoRA":
        prompt += ", <lora:detail_tweaker:0.8>"
    elif case == "missing embedding":
        negative = "embedding:easynegative, blurry"
    elif case == "SDXL LoRA on SD 1.x":
        nf.save(lora_states["sdxl"], _loras_dir() / "xl_style.safetensors")
        prompt += ", <lora:xl_style:0.8>"
    elif case == "truncated LoRA":
        path = nf.save(lora_states["sd"], _loras_dir() / "cut.safetensors")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        prompt += ", <lora:cut>"
    else:
        nf.save(lora_states["sd"], _loras_dir() / "old.pt")
        prompt += ", <lora:old:1>"
    outcome, shown = _run(qtbot, window, prompt, negative)
    assert outcome == "failed"
    assert any(expected in text for text in shown), shown
    assert expected in window.message_bar.text()
    assert window.worker.isRunning()
    # Taking the part out of the prompt lets the same window generate again.
    outcome, _ = _run(qtbot, window, "a red circle")
    assert outcome == "finished"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("((a red circle", "never closed"),
        ("(a red circle:abc)", "is not a number"),
    ],
)
def test_malformed_brackets_run_with_a_visible_warning(qtbot, window, prompt, expected):
    outcome, shown = _run(qtbot, window, prompt)
    assert outcome == "finished"
    assert any(expected in text for text in shown), shown
    assert expected in window.message_bar.text()
    assert window.worker.isRunning()
