"""The prompt box: highlighting, Ctrl+Up/Down weights with undo, and the token count."""

from __future__ import annotations

from PySide6.QtCore import Qt

from desktop.engine import paths
from desktop.engine.prompt_tokens import count_prompt, counting_tokenizer
from desktop.ui.prompt_edit import PromptEdit
from desktop.ui.prompt_panel import PromptPanel


def test_highlighter_marks_weights_tags_break_and_embeddings(qtbot):
    edit = PromptEdit()
    qtbot.addWidget(edit)
    spans = edit.highlighter.spans(
        r"(masterpiece:1.2), [blurry], \(literal\) <lora:detail:0.8> embedding:bad BREAK x"
    )
    kinds = {kind for kind, _ in spans}
    assert {"bracket", "weight", "tag", "embedding", "break"} <= kinds
    assert ("weight", "1.2") in spans and ("tag", "<lora:detail:0.8>") in spans
    # Escaped brackets are text, not syntax.
    assert ("bracket", "(") in spans and spans.count(("bracket", "(")) == 1


def test_ctrl_up_and_down_reweight_the_selection_and_undo_restores_it(qtbot):
    edit = PromptEdit()
    qtbot.addWidget(edit)
    edit.setPlainText("a red circle")
    cursor = edit.textCursor()
    cursor.setPosition(2)
    cursor.setPosition(5, cursor.MoveMode.KeepAnchor)
    edit.setTextCursor(cursor)
    qtbot.keyClick(edit, Qt.Key.Key_Up, Qt.KeyboardModifier.ControlModifier)
    assert edit.toPlainText() == "a (red:1.1) circle"
    assert edit.textCursor().selectedText() == "red"
    qtbot.keyClick(edit, Qt.Key.Key_Up, Qt.KeyboardModifier.ControlModifier)
    assert edit.toPlainText() == "a (red:1.2) circle"
    for _ in range(3):
        qtbot.keyClick(edit, Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)
    assert edit.toPlainText() == "a (red:0.9) circle"
    # Each change is one undo step.
    edit.undo()
    assert edit.toPlainText() == "a red circle"  # before the last Ctrl+Down (1.0 → 0.9)
    edit.undo()
    assert edit.toPlainText() == "a (red:1.1) circle"


def test_token_count_follows_the_text_like_a1111(qtbot):
    panel = PromptPanel()
    qtbot.addWidget(panel)
    tokenizer = counting_tokenizer()
    panel.set_token_counter(lambda text: count_prompt(tokenizer, text))
    with qtbot.waitSignal(panel.prompt_edit.token_count_changed, timeout=5000) as blocker:
        panel.prompt_edit.setPlainText("a photo of an astronaut riding a horse")
    assert blocker.args[0].text == "8/75"
    assert panel.prompt_count.text() == "8/75"
    with qtbot.waitSignal(panel.prompt_edit.token_count_changed, timeout=5000):
        panel.prompt_edit.setPlainText(" ".join(["cat"] * 80) + " <lora:x:0.5> (dog:1.2)")
    assert panel.prompt_count.text() == "81/150"  # the tag is not counted, the weight is not


def test_built_in_model_count_says_when_the_prompt_is_cut(qtbot):
    if not (paths.BUILTIN_MODEL / "tokenizer" / "tokenizer.json").is_file():
        return
    panel = PromptPanel()
    qtbot.addWidget(panel)
    tokenizer = counting_tokenizer(paths.BUILTIN_MODEL)
    panel.set_token_counter(lambda text: count_prompt(tokenizer, text))
    with qtbot.waitSignal(panel.prompt_edit.token_count_changed, timeout=5000):
        panel.prompt_edit.setPlainText("a big (red:1.2) circle in the center, blue background")
    # Every domain word is one token of the built-in vocabulary (and padding is not counted).
    assert panel.prompt_count.text() == "10/30" and "reads only" not in panel.prompt_count.toolTip()
    with qtbot.waitSignal(panel.prompt_edit.token_count_changed, timeout=5000):
        panel.prompt_edit.setPlainText("a red circle BREAK blue background")
    assert panel.prompt_edit.last_count.cut  # one chunk only: the part after BREAK is dropped
    with qtbot.waitSignal(panel.prompt_edit.token_count_changed, timeout=5000):
        panel.prompt_edit.setPlainText(", ".join(["a big red circle"] * 10))
    assert panel.prompt_count.text().endswith("/30")
    assert "reads only 30 tokens" in panel.prompt_count.toolTip()


def test_counting_tokenizer_matches_the_pipelines_tokenizer(tiny_sd):
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    ours = counting_tokenizer()
    for text in ("a photo of an astronaut riding a horse", "(masterpiece), best-quality, 4k!"):
        assert ours(text).input_ids == reference(text, add_special_tokens=False).input_ids
