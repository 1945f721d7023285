"""The sampler panel's hires fix group: one switch plus scale, upscaler, steps and denoise."""

from __future__ import annotations

from desktop.engine.parts import HiresSpec
from desktop.engine.request import GenerationRequest
from desktop.engine.schema import to_plain
from desktop.engine.settings import Settings
from desktop.ui.form import build_request, remember_values, restored_values
from desktop.ui.sampler_panel import SamplerPanel


def _panel(qtbot) -> SamplerPanel:
    panel = SamplerPanel()
    qtbot.addWidget(panel)
    return panel


def test_hires_is_off_until_switched_on_and_then_in_the_request(qtbot):
    panel = _panel(qtbot)
    assert panel.values()["hires"] is None
    with qtbot.waitSignal(panel.values_changed):
        panel.hires_box.setChecked(True)
    panel.hires_box.editors["scale"].set_value(1.5)
    panel.hires_box.editors["steps"].set_value(12)
    panel.hires_box.editors["denoise"].set_value(0.35)
    panel.hires_box.upscaler_combo.setCurrentText("Lanczos")
    values = panel.values()
    assert values["hires"] == HiresSpec(scale=1.5, upscaler="Lanczos", steps=12, denoise=0.35)
    request = build_request({"prompt": "x", **values})
    assert request.hires == values["hires"]


def test_the_result_size_follows_the_base_size_and_scale(qtbot):
    panel = _panel(qtbot)
    panel.set_size(512, 768)
    panel.hires_box.setChecked(True)
    panel.hires_box.editors["scale"].set_value(1.5)
    assert panel.hires_box.size_label.text() == "768 × 1152"
    panel.set_size(640, 448)
    assert panel.hires_box.size_label.text() == "960 × 672"


def test_reuse_shows_the_hires_pass_and_keeps_an_upscaler_no_longer_installed(qtbot):
    panel = _panel(qtbot)
    panel.set_upscalers(["4x-UltraSharp"])
    combo = panel.hires_box.upscaler_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "Latent",
        "Lanczos",
        "4x-UltraSharp",
    ]
    spec = HiresSpec(scale=2.0, upscaler="RealESRGAN_x4plus", steps=8, denoise=0.4)
    panel.set_values({"hires": spec})
    assert panel.hires_box.isChecked() and panel.values()["hires"] == spec
    panel.set_values({"hires": None})
    assert not panel.hires_box.isChecked() and panel.values()["hires"] is None


def test_hires_is_remembered_across_launches(qtbot):
    panel = _panel(qtbot)
    spec = HiresSpec(scale=1.75, upscaler="Lanczos", steps=0, denoise=0.55)
    panel.set_values({"hires": spec})
    settings = Settings()
    remember_values({"prompt": "x", **panel.values()}, settings)
    again = _panel(qtbot)
    again.set_values(restored_values(settings))
    assert again.values()["hires"] == spec
    # What the gallery's Reuse gives (plain data) shows too.
    plain = to_plain(GenerationRequest(prompt="x", hires=spec))["hires"]
    third = _panel(qtbot)
    third.set_values({"hires": plain})
    assert third.values()["hires"] == spec
