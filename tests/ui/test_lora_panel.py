"""The LoRA panel: listing with previews, search, tags and trigger words written into the prompt."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from desktop.engine import paths
from desktop.engine.settings import Settings
from desktop.ui.lora_panel import (
    LoraPanel,
    format_strength,
    lora_tag_edit,
    phrase_edit,
)
from desktop.ui.prompt_edit import PromptEdit

WAIT = 10_000


@pytest.fixture(autouse=True)
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's own ``models/`` (which may hold real LoRAs) moved to a tmp folder."""
    folder = tmp_path / "bundled-models"
    monkeypatch.setattr(paths, "BUNDLED_MODELS", folder)
    return folder


def _loras() -> Path:
    folder = paths.user_models_dir() / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _preview(path: Path, size: tuple[int, int] = (64, 32)) -> Path:
    Image.new("RGB", size, "orange").save(path)
    return path


def _library() -> Path:
    """detail (preview, civitai + A1111 sidecars), plain (no sidecars), old (.pt)."""
    folder = _loras()
    _touch(folder / "detail.safetensors")
    _preview(folder / "detail.preview.png")
    (folder / "detail.civitai.info").write_text(
        json.dumps({"trainedWords": ["intricate", "sharp focus"], "baseModel": "SD 1.5"}),
        encoding="utf-8",
    )
    (folder / "detail.json").write_text(json.dumps({"preferred weight": 0.6}), encoding="utf-8")
    _touch(folder / "plain.safetensors")
    _touch(folder / "old.pt")
    return folder


@pytest.fixture
def make_panel(qtbot) -> Iterator[Callable[..., tuple[LoraPanel, PromptEdit]]]:
    """Build a shown panel writing into its own prompt box; shut down after the test."""
    made: list[LoraPanel] = []

    def make(sources=(), prompt: str = "") -> tuple[LoraPanel, PromptEdit]:
        edit = PromptEdit()
        qtbot.addWidget(edit)
        edit.setPlainText(prompt)
        panel = LoraPanel(sources, prompt_edit=edit)
        qtbot.addWidget(panel)
        made.append(panel)
        panel.show()
        qtbot.waitExposed(panel)
        return panel, edit

    yield make
    for panel in made:
        assert panel.shutdown(WAIT)


# -- the text rules ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [(0.8, "0.8"), (1.0, "1"), (0.75, "0.75"), (-0.0, "0"), (0.1 + 0.2, "0.3"), (-1.5, "-1.5")],
)
def test_format_strength(value: float, text: str):
    assert format_strength(value) == text


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", "<lora:detail:0.8>"),
        ("   ", "<lora:detail:0.8>"),
        ("a fox", "a fox, <lora:detail:0.8>"),
        ("a fox,", "a fox, <lora:detail:0.8>"),
        ("a fox, ", "a fox, <lora:detail:0.8>"),
        ("a fox\n", "a fox, <lora:detail:0.8>\n"),
        ("a fox <lora:other:1>", "a fox <lora:other:1>, <lora:detail:0.8>"),
        ("<lora:detail>, a fox", "<lora:detail:0.8>, a fox"),
        ("a fox, <LORA:Detail:0.5:0.3>, snow", "a fox, <lora:Detail:0.8>, snow"),
        ("<lora:styles/detail.safetensors:1> a", "<lora:styles/detail.safetensors:0.8> a"),
        ("<lora:detailer:1>", "<lora:detailer:1>, <lora:detail:0.8>"),
    ],
)
def test_lora_tag_edit_adds_or_updates_one_tag(prompt: str, expected: str):
    assert lora_tag_edit(prompt, "detail", 0.8).applied(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "cursor", "expected"),
    [
        ("", 0, "word"),
        ("a fox", 5, "a fox, word"),
        ("a fox ", 6, "a fox, word"),
        ("a fox,", 6, "a fox, word"),
        ("a fox, ", 7, "a fox, word"),
        ("a fox in snow", 5, "a fox, word, in snow"),
        ("a fox, snow", 5, "a fox, word, snow"),
        ("snow", 0, "word, snow"),
        ("(", 1, "(word"),
        ("(a fox)", 6, "(a fox, word)"),
        ("a fox\n", 6, "a fox\nword"),
    ],
)
def test_phrase_edit_separates_with_one_comma(prompt: str, cursor: int, expected: str):
    assert phrase_edit(prompt, cursor, cursor, "word").applied(prompt) == expected


def test_phrase_edit_replaces_a_selection():
    assert phrase_edit("a fox XX snow", 6, 8, "word").applied("a fox XX snow") == (
        "a fox, word, snow"
    )


# -- the panel -----------------------------------------------------------------------------
def test_lists_loras_with_preview_icons_and_trigger_words(qtbot, make_panel):
    _library()
    panel, _edit = make_panel()

    assert [item.name for item in panel.loras()] == ["detail", "old", "plain"]
    assert "3 LoRAs" in panel.search_edit.placeholderText()
    assert panel.select("detail")
    qtbot.waitUntil(panel.has_preview, timeout=WAIT)
    pixmap = panel.preview_label.pixmap()
    assert (pixmap.width(), pixmap.height()) == (192, 96)  # 64x32 scaled to fit, aspect kept
    assert panel.base_label.text() == "Base model: SD 1.5"
    assert "intricate" in panel.trigger_label.text()
    assert "sharp focus" in panel.trigger_label.text()
    assert panel.strength() == 0.6  # the file's preferred weight

    model = panel.model
    detail, plain = panel.loras()[0], panel.loras()[2]
    qtbot.waitUntil(lambda: model.has_icon(detail), timeout=WAIT)
    icon = model.data(model.index(0), Qt.ItemDataRole.DecorationRole)
    assert max(icon.width(), icon.height()) == 48
    # No preview: the neutral placeholder, in the list and in the details.
    placeholder = model.data(model.index(2), Qt.ItemDataRole.DecorationRole)
    assert not placeholder.isNull() and not model.has_icon(plain)
    assert placeholder.cacheKey() != icon.cacheKey()
    panel.select("plain")
    assert not panel.has_preview() and panel.preview_label.text() == "No preview"
    assert panel.base_label.text() == "Base model: unknown"
    assert panel.strength() == 1.0
    assert "No trigger words" in panel.trigger_label.text()


def test_an_unreadable_preview_shows_a_message(qtbot, make_panel):
    (_loras() / "broken.preview.png").write_bytes(b"not a png")
    _touch(_loras() / "broken.safetensors")
    panel, _edit = make_panel()
    qtbot.waitUntil(lambda: "cannot be read" in panel.preview_label.text(), timeout=WAIT)
    assert not panel.has_preview()


def test_search_filters_by_name_and_trigger_word(qtbot, make_panel):
    _library()
    panel, _edit = make_panel()

    qtbot.keyClicks(panel.search_edit, "PLA")
    assert [item.name for item in panel.loras()] == ["plain"]
    assert panel.selected().name == "plain"
    panel.search_edit.clear()
    qtbot.keyClicks(panel.search_edit, "sharp")
    assert [item.name for item in panel.loras()] == ["detail"]
    panel.search_edit.setText("nothing like it")
    assert panel.loras() == [] and panel.selected() is None
    assert panel.hint_label.isVisible()
    assert "No LoRA matches “nothing like it”" in panel.hint_label.text()
    assert not panel.details.isVisible()
    panel.search_edit.clear()
    assert len(panel.loras()) == 3 and not panel.hint_label.isVisible()


def test_add_to_prompt_appends_the_tag_as_one_undo_step(qtbot, make_panel):
    _library()
    panel, edit = make_panel(prompt="a red fox")
    panel.select("detail")
    panel.strength_spin.setValue(0.8)

    with qtbot.waitSignal(panel.prompt_edited, timeout=WAIT):
        qtbot.mouseClick(panel.add_button, Qt.MouseButton.LeftButton)

    assert edit.toPlainText() == "a red fox, <lora:detail:0.8>"
    edit.undo()
    assert edit.toPlainText() == "a red fox"
    edit.setPlainText("")
    panel.strength_spin.setValue(1.0)
    panel.add_button.click()
    assert edit.toPlainText() == "<lora:detail:1>"


def test_add_to_prompt_updates_the_strength_of_the_tag_already_there(qtbot, make_panel):
    _library()
    panel, edit = make_panel(prompt="a fox, <LORA:Detail:0.5:0.3>, snow")
    panel.select("detail")
    assert panel.strength() == 0.5  # read from the tag in the prompt
    panel.strength_slider.setValue(25)  # 25 steps of 0.05
    assert panel.strength_spin.value() == 1.25

    panel.add_button.click()

    assert edit.toPlainText() == "a fox, <lora:Detail:1.25>, snow"
    panel.strength_spin.setValue(0.75)
    panel.add_button.click()
    assert edit.toPlainText() == "a fox, <lora:Detail:0.75>, snow"
    edit.undo()
    assert edit.toPlainText() == "a fox, <lora:Detail:1.25>, snow"


def test_strength_slider_and_spin_box_follow_each_other(make_panel):
    _library()
    panel, _edit = make_panel()
    slider, spin = panel.strength_slider, panel.strength_spin
    assert (slider.minimum(), slider.maximum()) == (-40, 40)
    assert (spin.minimum(), spin.maximum(), spin.singleStep()) == (-2.0, 2.0, 0.05)
    slider.setValue(-7)
    assert spin.value() == -0.35
    spin.setValue(2.0)
    assert slider.value() == 40
    panel.set_strength(9)
    assert panel.strength() == 2.0


def test_clicking_a_trigger_word_inserts_it_at_the_cursor(qtbot, make_panel):
    _library()
    panel, edit = make_panel(prompt="a 🦊 fox in snow")
    panel.select("detail")
    cursor = edit.textCursor()
    cursor.setPosition(len("a 🦊 fox".encode("utf-16-le")) // 2)  # Qt counts UTF-16 units
    edit.setTextCursor(cursor)

    # What a click on the first word's link sends.
    panel.trigger_label.linkActivated.emit("0")

    assert edit.toPlainText() == "a 🦊 fox, intricate, in snow"
    edit.undo()
    assert edit.toPlainText() == "a 🦊 fox in snow"
    edit.moveCursor(QTextCursor.MoveOperation.End)
    panel.trigger_label.linkActivated.emit("all")
    assert edit.toPlainText() == "a 🦊 fox in snow, intricate, sharp focus"
    # The next word goes after the one just put in.
    panel.trigger_label.linkActivated.emit("1")
    assert edit.toPlainText() == "a 🦊 fox in snow, intricate, sharp focus, sharp focus"


def test_a_pickle_lora_is_greyed_with_its_problem(make_panel):
    _library()
    panel, edit = make_panel(prompt="a fox")
    model = panel.model
    row = model.row_of("old")
    index = model.index(row)
    assert "pickle file (.pt)" in model.data(index, Qt.ItemDataRole.ToolTipRole)
    assert model.data(index, Qt.ItemDataRole.ForegroundRole) is not None
    assert model.data(model.index(model.row_of("plain")), Qt.ItemDataRole.ForegroundRole) is None

    panel.select("old")
    assert not panel.add_button.isEnabled()
    assert panel.problem_label.isVisible()
    assert "Sandstorm loads only .safetensors LoRAs" in panel.problem_label.text()
    assert not panel.add_to_prompt()
    assert edit.toPlainText() == "a fox"


def test_an_empty_library_says_where_loras_go_and_refresh_finds_new_ones(qtbot, make_panel):
    panel, _edit = make_panel()
    assert panel.hint_label.isVisible()
    hint = panel.hint_label.text()
    assert "models/loras" in hint and "File ▸ Settings" in hint
    assert str(_loras()) in panel.hint_label.toolTip()
    assert not panel.view.isVisible() and not panel.details.isVisible()

    _touch(_loras() / "new.safetensors")
    with qtbot.waitSignal(panel.library_changed, timeout=WAIT) as changed:
        qtbot.mouseClick(panel.refresh_button, Qt.MouseButton.LeftButton)
    assert changed.args == [1]
    assert panel.view.isVisible() and not panel.hint_label.isVisible()
    assert panel.selected().name == "new"


def test_loras_of_a_comfyui_install_and_no_prompt_box(qtbot, tmp_path: Path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models/checkpoints").mkdir(parents=True)
    _touch(comfy / "models/loras" / "comfy-style.safetensors")
    panel = LoraPanel([str(comfy)])
    qtbot.addWidget(panel)
    try:
        assert [item.name for item in panel.loras()] == ["comfy-style"]
        assert not panel.add_button.isEnabled() and not panel.add_to_prompt()
        panel.set_extra_sources([])
        assert panel.loras() == []
    finally:
        assert panel.shutdown(WAIT)


def test_the_window_has_a_lora_dock_behind_the_img2img_panel(qtbot, tmp_path: Path):
    from desktop.ui.main_window import MainWindow

    webui = tmp_path / "webui"
    (webui / "models/Stable-diffusion").mkdir(parents=True)
    _touch(webui / "models/Lora" / "webui-style.safetensors")
    comfy = tmp_path / "ComfyUI"
    (comfy / "models/checkpoints").mkdir(parents=True)
    _touch(comfy / "models/loras" / "comfy-style.safetensors")
    settings = Settings(output_dir=str(tmp_path / "out"), extra_model_folders=[str(webui)])
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    try:
        window.show()
        qtbot.waitExposed(window)
        assert window.lora_dock.objectName() == "LoraDock"
        assert window.lora_dock.windowTitle() == "LoRAs"
        assert window.lora_dock in window.tabifiedDockWidgets(window.img2img_dock)
        # Qt keeps the tab behind "shown" but moves it out of sight.
        assert not window.img2img_panel.visibleRegion().isEmpty()
        assert window.lora_panel.visibleRegion().isEmpty()
        panel = window.lora_panel
        assert [item.name for item in panel.loras()] == ["webui-style"]

        window.prompt_panel.set_prompt("a castle")
        panel.add_to_prompt()
        assert window.prompt_panel.prompt() == "a castle, <lora:webui-style:1>"

        new = replace(settings, extra_model_folders=[str(webui), str(comfy)])
        window.apply_settings(new)
        assert [item.name for item in panel.loras()] == ["comfy-style", "webui-style"]
    finally:
        window.shutdown()
