"""The reference images panel: cards, values as ReferenceImages, the suggested adapter,
what is missing, restore and bad input (no engine or model weights needed: the adapter and
encoder files are headers only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QStandardItemModel

from desktop.engine.ip_adapter import PLUS
from desktop.engine.parts import ReferenceImage
from desktop.engine.schema import to_plain
from desktop.ui.form import build_request
from desktop.ui.part_list import MODEL_ROLE
from desktop.ui.reference_panel import ReferencePanel
from tests.helpers.tiny_ip_adapter import adapter_shapes, encoder_shapes, header_only_file
from tests.ui.test_control_panel import drop, file_mime


@pytest.fixture
def extra_folder(tmp_path: Path) -> Path:
    """A ComfyUI install with SD1.5 and SDXL adapters, a pickle, and the ViT-H encoder only."""
    root = tmp_path / "ComfyUI"
    (root / "models" / "checkpoints").mkdir(parents=True)
    adapters = root / "models" / "ipadapter"
    adapters.mkdir(parents=True)
    header_only_file(adapters / "ip-adapter_sd15.safetensors", adapter_shapes(768, 1024))
    header_only_file(adapters / "ip-adapter-plus_sd15.safetensors", adapter_shapes(768, 1664, PLUS))
    header_only_file(adapters / "ip-adapter_sdxl.safetensors", adapter_shapes(2048, 1280))
    (adapters / "ip-adapter_sd15_old.bin").write_bytes(b"\x80\x04")
    encoders = root / "models" / "clip_vision"
    encoders.mkdir(parents=True)
    header_only_file(encoders / "vit-h.safetensors", encoder_shapes(1280, 32, 1024))
    return root


@pytest.fixture
def panel(qtbot, extra_folder: Path):
    widget = ReferencePanel(extra_sources=[extra_folder], family="sd1")
    qtbot.addWidget(widget)
    widget.resize(420, 700)
    widget.show()
    return widget


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (96, 64), (200, 120, 40)).save(path)
    return path


def test_cards_are_references_with_the_editors_values(qtbot, panel, photo):
    assert panel.hint_label.isVisible() and "No reference images" in panel.hint_label.text()
    with qtbot.waitSignal(panel.cards_changed) as changed:
        panel.add_button.click()
    assert changed.args == [1] and panel.values() == {"references": ()}  # no image yet
    card = panel.cards()[0]
    assert card.title_label.text() == "Reference 1" and not card.clear_button.isEnabled()
    with qtbot.waitSignal(panel.values_changed):
        assert card.set_image(photo)
    card.set_weight(0.65)
    assert panel.values() == {"references": (ReferenceImage(str(photo), 0.65, ""),)}
    assert "photo.png" in card.path_label.text() and "96×64" in card.path_label.text()
    assert card.slot.has_thumbnail() and not panel.hint_label.isVisible()
    # The weight's editor comes from ReferenceImage's declaration.
    assert card.editors["weight"].maximum() == 2.0
    request = build_request({"prompt": "x", "width": 64, "height": 64, **panel.values()})
    assert request.references == (ReferenceImage(str(photo), 0.65, ""),)

    second = panel.add_card(photo, weight=0.3)
    second.set_active(False)
    assert len(panel.values()["references"]) == 1  # an off card is left out
    second.set_active(True)
    assert [r.weight for r in panel.values()["references"]] == [0.65, 0.3]
    card.remove_button.click()
    assert [c.title_label.text() for c in panel.cards()] == ["Reference 1"]
    assert panel.values()["references"] == (ReferenceImage(str(photo), 0.3),)
    second.clear_image()
    assert panel.values() == {"references": ()}


def test_the_suggested_adapter_follows_the_family_and_says_what_is_missing(qtbot, panel):
    card = panel.add_card()
    combo = card.model_combo
    assert combo.itemText(0) == "Suggested: ip-adapter_sd15"  # plain, its encoder installed
    names = [combo.itemData(i, MODEL_ROLE) for i in range(combo.count())]
    assert names == [
        "",
        "ip-adapter-plus_sd15",
        "ip-adapter_sd15",
        "ip-adapter_sd15_old",
        "ip-adapter_sdxl",
    ]
    model = combo.model()
    assert isinstance(model, QStandardItemModel)
    assert not model.item(names.index("ip-adapter_sd15_old")).isEnabled()  # a pickle
    assert not card.note_label.isVisible()

    card.set_model_name("ip-adapter-plus_sd15")  # reads ViT-bigG's hidden states
    assert "needs the ViT-bigG image encoder" in card.note_label.text()
    card.set_model_name("ip-adapter_sdxl")
    assert "made for SDXL models" in card.note_label.text()
    panel.set_family("sdxl")
    assert combo.itemText(0) == "Suggested: ip-adapter_sdxl"
    assert "needs the ViT-bigG image encoder" in card.note_label.text()
    card.set_model_name("nowhere")
    assert combo.currentText() == "nowhere (not installed)"
    assert "not installed" in card.note_label.text()
    assert panel.values() == {"references": ()}  # no image: nothing is sent


def test_no_adapter_installed_says_where_to_put_one(qtbot, tmp_path):
    widget = ReferencePanel(extra_sources=[], family="sd1")
    qtbot.addWidget(widget)
    assert "No IP-Adapter models found" in widget.hint_label.text()
    assert "models/ipadapter" in widget.hint_label.text()
    assert "models/clip_vision" in widget.hint_label.text()
    card = widget.add_card()
    assert card.model_combo.itemText(0) == "Automatic (none installed)"
    assert "No IP-Adapter for SD1.5 models" in card.note_label.text()


def test_set_values_round_trip_and_a_gone_image_is_named(qtbot, panel, photo, tmp_path):
    panel.add_card(photo, 1.4).set_model_name("ip-adapter_sd15")
    panel.add_card(photo, 0.5)
    saved = panel.values()
    fresh = ReferencePanel(extra_sources=panel.extra_sources, family="sd1")
    qtbot.addWidget(fresh)
    with qtbot.waitSignal(fresh.values_changed):
        fresh.set_values(saved)
    assert fresh.values() == saved
    assert fresh.cards()[0].model_combo.currentText() == "ip-adapter_sd15"
    fresh.set_values({"references": ()})
    assert fresh.cards() == []
    fresh.set_values({"references": [to_plain(r) for r in saved["references"]]})
    assert fresh.values() == saved
    fresh.set_values({"prompt": "a cat"})  # not this panel's: left alone
    assert fresh.values() == saved

    gone = tmp_path / "gone.png"
    refs = (ReferenceImage(str(gone)), ReferenceImage(str(photo), 0.7))
    messages: list[str] = []
    fresh.message.connect(messages.append)
    assert fresh.set_references(refs) == 1
    assert fresh.values() == {"references": (ReferenceImage(str(photo), 0.7),)}
    assert "Reference image 1 was not restored" in messages[0] and "gone.png" in messages[0]
    assert fresh.set_references([{"image": str(photo), "weight": "heavy"}]) == 0
    assert "Reference image 1 was not restored" in messages[-1]


@pytest.mark.parametrize("kind", ["text-file", "remote-url"])
def test_a_bad_drop_gives_a_message_and_the_card_keeps_working(qtbot, panel, photo, tmp_path, kind):
    card = panel.add_card()
    mime = QMimeData()
    if kind == "text-file":
        note = tmp_path / "notes.txt"
        note.write_text("not an image")
        mime.setUrls([QUrl.fromLocalFile(str(note))])
    else:
        mime.setUrls([QUrl("https://example.com/cat.png")])
    with qtbot.waitSignal(panel.message) as message:
        drop(card.slot, mime)
    assert message.args[0].endswith(".") and len(message.args[0]) > 20
    assert card.image_path() is None
    assert drop(card.slot, file_mime(photo))
    assert card.image_path() == photo
    with qtbot.waitSignal(panel.message) as message:
        card.accept_mime(None)
    assert "clipboard" in message.args[0]
