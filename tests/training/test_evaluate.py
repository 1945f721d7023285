"""desktop/training/evaluate.py: PSNR and the comparison of two number formats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from desktop.training import evaluate, score


def _image(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8))


def test_psnr_of_known_pictures():
    assert evaluate.psnr(_image(10), _image(10)) == math.inf
    # Every pixel off by 1: MSE 1, PSNR = 20 log10(255) = 48.13 dB.
    assert evaluate.psnr(_image(10), _image(11)) == pytest.approx(48.1308, abs=1e-3)
    assert evaluate.psnr(_image(0), _image(255)) == pytest.approx(0.0)


def test_compare_reports_points_psnr_and_speed_against_the_first_format():
    fp32 = {name: 0.9 for name in score.ATTRIBUTES}
    bf16 = dict(fp32, shape=0.85)
    results = {
        "fp32": {"accuracy": fp32, "images": [_image(10), _image(20)], "seconds": 4.0},
        "bf16": {"accuracy": bf16, "images": [_image(10), _image(21)], "seconds": 2.0},
    }
    out = evaluate.compare(results)["bf16"]
    assert out["points"]["shape"] == pytest.approx(-5.0)
    assert out["points"]["colour"] == pytest.approx(0.0)
    assert out["identical"] == 1
    assert out["psnr_mean_db"] == pytest.approx(48.1308, abs=1e-3)  # the identical one aside
    assert out["psnr_min_db"] == pytest.approx(48.1308, abs=1e-3)
    assert out["speed_ratio"] == pytest.approx(2.0)
    assert "bf16 vs fp32: points" in evaluate.format_comparison("fp32", {"bf16": out})
