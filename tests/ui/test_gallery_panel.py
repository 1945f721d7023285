"""The gallery panel: new results, search and filters, actions, delete/undo, thumbnails."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from desktop.engine.gallery import Gallery, GalleryItem
from desktop.engine.request import GenerationRequest
from desktop.engine.settings import Settings
from desktop.ui import thumbnails
from desktop.ui.gallery_model import FavouriteRole, GalleryModel, PathRole
from desktop.ui.gallery_panel import (
    DeleteBin,
    GalleryPanel,
    install_gallery,
    offer_parameters_from_file,
)
from desktop.ui.thumbnails import ThumbnailLoader

WAIT = 10_000


def _request(prompt: str, seed: int, **changes) -> GenerationRequest:
    values = dict(
        prompt=prompt,
        negative_prompt="blurry",
        model="tiny-model",
        sampler="Euler a",
        steps=7,
        cfg_scale=4.5,
        seed=seed,
        width=320,
        height=256,
    )
    values.update(changes)
    return GenerationRequest(**values)


def _save(gallery: Gallery, prompt: str, seed: int, colour=(200, 40, 40), **changes) -> GalleryItem:
    image = Image.new("RGB", (320, 256), colour)
    return gallery.save(image, _request(prompt, seed, **changes))


@pytest.fixture
def gallery(sandstorm_home: Path):
    with Gallery(root=sandstorm_home / "out") as g:
        yield g


@pytest.fixture
def panel(qtbot, gallery: Gallery):
    # The holding folder is what CI can exercise: a headless runner may have no trash.
    widget = GalleryPanel(gallery, delete_bin=DeleteBin(use_trash=False))
    qtbot.addWidget(widget)
    widget.resize(700, 500)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.shutdown()


def _rows(panel: GalleryPanel) -> list[str]:
    return [panel.model.item(r).prompt for r in range(panel.model.rowCount())]


def _select(panel: GalleryPanel, row: int) -> None:
    panel.select_row(row)
    assert panel.current_item() is panel.model.item(row)


def test_new_results_appear_at_the_top_without_a_reload(qtbot, panel, gallery):
    first = _save(gallery, "a lighthouse at dusk", 1)
    assert panel.add_results([first]) == 1
    resets: list[int] = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    batch = [_save(gallery, "a fox in snow", 2), _save(gallery, "an owl at night", 3)]
    with qtbot.waitSignal(panel.model.rowsInserted, timeout=WAIT) as inserted:
        panel.add_results([str(batch[0].path), batch[1]])  # paths and items both work
    assert inserted.args[1:] == [0, 1]
    assert not resets
    assert _rows(panel) == ["an owl at night", "a fox in snow", "a lighthouse at dusk"]
    assert panel.add_results([first]) == 0  # already shown
    assert panel.count_label.text() == "3 images"
    assert panel.model_combo.findText("tiny-model") > 0


def test_search_box_is_debounced_and_filters_rows(qtbot, panel, gallery):
    for seed, prompt in enumerate(["red apple", "green apple", "red car"], start=1):
        _save(gallery, prompt, seed)
    panel.model.reload()
    assert panel.model.rowCount() == 3
    panel.search_edit.setText("RED")
    assert panel.model.rowCount() == 3  # not yet: the search waits for typing to pause
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2, timeout=WAIT)
    assert sorted(_rows(panel)) == ["red apple", "red car"]
    panel.search_edit.setText("apple red")
    qtbot.waitUntil(lambda: _rows(panel) == ["red apple"], timeout=WAIT)
    # New results that do not match the search stay out of the view.
    assert panel.add_results([_save(gallery, "blue apple", 9)]) == 0
    assert panel.add_results([_save(gallery, "red apple pie", 10)]) == 1


def test_favourites_and_model_filters(qtbot, panel, gallery):
    a = _save(gallery, "one", 1)
    b = _save(gallery, "two", 2, model="other-model")
    panel.model.reload()
    panel.refresh_models()
    _select(panel, panel.model.row_of(a.path))
    panel.favourite_action.trigger()
    assert gallery.get(a.path).favourite
    assert panel.model.item(panel.model.row_of(a.path)).favourite
    panel.favourites_button.setChecked(True)
    assert _rows(panel) == ["one"]
    panel.favourites_button.setChecked(False)
    panel.model_combo.setCurrentText("other-model")
    assert [i.path for i in panel.model.items()] == [b.path]
    panel.model_combo.setCurrentIndex(0)
    assert panel.model.rowCount() == 2
    # The delegate draws the star from this role.
    assert panel.model.data(panel.model.index(panel.model.row_of(a.path)), FavouriteRole)
    assert not panel.model.data(panel.model.index(panel.model.row_of(b.path)), FavouriteRole)


def test_double_click_opens_image_with_its_parameters(qtbot, panel, gallery):
    item = _save(gallery, "a castle", 42)
    panel.model.reload()
    index = panel.model.index(0)
    # The view lays rows out in batches after returning to the event loop.
    qtbot.waitUntil(lambda: panel.view.visualRect(index).isValid(), timeout=WAIT)
    centre = panel.view.visualRect(index).center()
    with qtbot.waitSignal(panel.open_requested, timeout=WAIT) as opened:
        QTest.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
        QTest.mouseDClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    path, text = opened.args
    assert path == str(item.path)
    assert text.startswith("a castle\nNegative prompt: blurry\n")
    assert "Seed: 42" in text and "Sampler: Euler a" in text
    assert panel.params_view.toPlainText() == text


def test_reuse_emits_request_with_or_without_seed(qtbot, panel, gallery):
    _save(gallery, "a bridge", 1234)
    panel.model.reload()
    _select(panel, 0)
    with qtbot.waitSignal(panel.reuse_requested, timeout=WAIT) as plain:
        panel.reuse_action.trigger()
    request, keep = plain.args
    assert (request.prompt, request.seed, request.steps, keep) == ("a bridge", -1, 7, False)
    with qtbot.waitSignal(panel.reuse_requested, timeout=WAIT) as seeded:
        panel.reuse_seed_action.trigger()
    assert seeded.args[0].seed == 1234 and seeded.args[1] is True


def test_copy_actions_and_reveal(qtbot, panel, gallery):
    item = _save(gallery, "a teapot", 5)
    panel.model.reload()
    _select(panel, 0)
    panel.copy_params_action.trigger()
    clipboard = QGuiApplication.clipboard()
    assert clipboard.text().startswith("a teapot\n")
    panel.copy_image_action.trigger()
    assert clipboard.image().size().width() == 320
    opened = []
    panel.open_url = opened.append
    panel.reveal_action.trigger()
    assert [u.toLocalFile() for u in opened] == [str(item.path.parent)]
    assert panel.context_menu().actions()  # the same actions on right-click


def test_shortcuts_act_on_the_grid_but_not_while_typing_a_search(qtbot, panel, gallery):
    item = _save(gallery, "a shortcut", 3)
    panel.model.reload()
    _select(panel, 0)
    panel.search_edit.setFocus()
    QTest.keyClick(panel.search_edit, Qt.Key.Key_Delete)
    assert item.path.exists()
    panel.view.setFocus()
    qtbot.waitUntil(panel.view.hasFocus, timeout=WAIT)
    QTest.keyClick(panel.view, Qt.Key.Key_F)
    assert gallery.get(item.path).favourite
    QTest.keyClick(panel.view, Qt.Key.Key_Delete)
    assert not item.path.exists()


def test_drag_carries_file_url_and_image(qtbot, panel, gallery):
    item = _save(gallery, "a drag", 6)
    panel.model.reload()
    mime = panel.model.mimeData([panel.model.index(0)])
    assert [u.toLocalFile() for u in mime.urls()] == [str(item.path)]
    assert mime.hasImage()
    assert panel.model.flags(panel.model.index(0)) & Qt.ItemFlag.ItemIsDragEnabled


def test_delete_removes_from_view_index_and_disk_and_undo_restores(qtbot, panel, gallery):
    keep = _save(gallery, "keep me", 1)
    doomed = _save(gallery, "delete me", 2)
    gallery.set_favourite(doomed.path, True)
    panel.model.reload()
    _select(panel, panel.model.row_of(doomed.path))
    deleted = panel.delete_selected()
    assert [d.original for d in deleted] == [doomed.path]
    assert not doomed.path.exists()
    assert deleted[0].held_at.is_file() and not deleted[0].in_trash
    assert gallery.get(doomed.path) is None
    assert _rows(panel) == ["keep me"]
    assert panel.undo_action.isEnabled()

    assert panel.undo_delete() == [doomed.path]
    assert doomed.path.is_file()
    restored = gallery.get(doomed.path)
    assert restored is not None and restored.favourite and restored.prompt == "delete me"
    assert sorted(_rows(panel)) == ["delete me", "keep me"]
    assert not panel.undo_action.isEnabled()
    assert keep.path.is_file()


def test_holding_folder_is_emptied_at_shutdown(qtbot, panel, gallery):
    _save(gallery, "gone for good", 1)
    panel.model.reload()
    _select(panel, 0)
    (entry,) = panel.delete_selected()
    assert entry.held_at.is_file()
    panel.shutdown()
    assert not panel.bin.folder.exists()


def test_thumbnails_are_made_off_the_gui_thread_and_cached(qtbot, gallery):
    for seed in range(3):
        _save(gallery, f"thumb {seed}", seed + 1, colour=(seed * 80, 100, 200))
    loader = ThumbnailLoader()
    model = GalleryModel(gallery, loader)
    try:
        for row in range(3):
            model.data(model.index(row), Qt.ItemDataRole.DecorationRole)
        qtbot.waitUntil(lambda: all(model.pixmap(i.path) for i in model.items()), timeout=WAIT)
        assert loader.made == 3 and loader.cache_hits == 0
        assert threading.get_ident() not in loader.worker_threads
        cached = sorted(thumbnails.thumbnail_dir().iterdir())
        assert len(cached) == 3
        assert max(model.pixmap(model.item(0).path).width(), 1) <= thumbnails.THUMB_SIZE
    finally:
        loader.shutdown()

    # A second model (a new run) reads the cache instead of decoding the images again.
    loader2 = ThumbnailLoader()
    model2 = GalleryModel(gallery, loader2)
    try:
        for row in range(3):
            model2.data(model2.index(row), Qt.ItemDataRole.DecorationRole)
        qtbot.waitUntil(lambda: all(model2.pixmap(i.path) for i in model2.items()), timeout=WAIT)
        assert loader2.made == 0 and loader2.cache_hits == 3
    finally:
        loader2.shutdown()


def test_thumbnail_of_a_large_jpeg_is_decoded_at_reduced_scale(sandstorm_home: Path):
    path = sandstorm_home / "big.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4000, 3000), (10, 120, 30)).save(path, quality=80)
    thumb = thumbnails.make_thumbnail(path)
    assert max(thumb.size) == thumbnails.THUMB_SIZE
    image, made = thumbnails.load_thumbnail(path)
    assert made and image.width() == thumbnails.THUMB_SIZE
    os.utime(path, ns=(1, 1))  # an edited file gets a fresh thumbnail
    assert thumbnails.load_thumbnail(path)[1]


def test_lazy_loading_fetches_pages(qtbot, gallery, sandstorm_home: Path):
    # Index rows pointing at one real file: the model only reads the index.
    real = _save(gallery, "seed image", 1)
    rows = [
        (
            GalleryItem(path=real.path.with_name(f"{i:05d}-x.png"), prompt=f"p{i}", created=i),
            1,
            1,
        )
        for i in range(2000)
    ]
    gallery._upsert(rows)
    model = GalleryModel(gallery, None, page_size=200)
    assert model.rowCount() == 200 and model.total == 2001 and model.pages_fetched == 1
    assert model.canFetchMore()
    model.fetchMore()
    assert model.rowCount() == 400 and model.pages_fetched == 2
    # A result saved while paging shifts the pages by one; nothing is skipped or doubled.
    model.add_items([_save(gallery, "new", 7)])
    model.fetch_all()
    assert model.rowCount() == 2002 == len({i.path for i in model.items()})
    assert model.pages_fetched == 11
    assert not model.canFetchMore()


def test_view_fetches_more_when_scrolled_to_the_end(qtbot, panel, gallery):
    real = _save(gallery, "x", 1)
    gallery._upsert(
        [
            (GalleryItem(path=real.path.with_name(f"{i:05d}-y.png"), created=i), 1, 1)
            for i in range(600)
        ]
    )
    panel.model.reload()
    assert panel.model.rowCount() == 200
    bar = panel.view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=WAIT)
    bar.setValue(bar.maximum())
    qtbot.waitUntil(lambda: panel.model.rowCount() > 200, timeout=WAIT)
    # Thumbnails are only asked for rows the view painted, not for every loaded row.
    assert panel.loader.pending() + panel.loader.made + len(panel.model._failed) < 300


@pytest.fixture
def window(qtbot, sandstorm_home: Path):
    from desktop.ui.main_window import MainWindow

    settings = Settings(output_dir=str(sandstorm_home / "out"), device="cpu")
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    yield win
    win.shutdown()


def test_install_gallery_wires_the_window(qtbot, window, gallery):
    item = _save(gallery, "a harbour at dawn", 777, steps=9, cfg_scale=6.0, sampler="Euler")
    panel = install_gallery(window)
    try:
        assert panel.parentWidget() is not None  # docked
        qtbot.waitUntil(lambda: panel.model.rowCount() == 1, timeout=WAIT)

        window.results_saved.emit([_save(gallery, "a second one", 8)])
        assert panel.model.item(0).prompt == "a second one"

        _select(panel, panel.model.row_of(item.path))
        panel.reuse_seed_action.trigger()
        assert window.prompt_panel.prompt() == "a harbour at dawn"
        assert window.prompt_panel.negative_prompt() == "blurry"
        s = window.sampler_panel
        assert (s.steps_spin.value(), s.cfg_spin.value(), s.seed()) == (9, 6.0, 777)
        assert (s.width_spin.value(), s.height_spin.value()) == (320, 256)
        panel.reuse_action.trigger()
        assert s.seed() == -1

        panel.img2img_action.trigger()
        assert window.img2img_panel.init_image() == str(item.path)

        panel.open_current()
        assert window.canvas.image().width() == 320
    finally:
        panel.shutdown()


def test_dropped_image_offers_its_parameters(qtbot, window, gallery, sandstorm_home: Path):
    item = _save(gallery, "a dropped robot", 31337, steps=11)
    assert offer_parameters_from_file(window, item.path)
    bar = window.message_bar
    assert "generation settings" in bar.text()
    assert bar.action_button.text() == "Use its parameters"
    bar.action_button.click()
    assert window.prompt_panel.prompt() == "a dropped robot"
    assert window.sampler_panel.seed() == 31337
    assert window.sampler_panel.steps_spin.value() == 11

    plain = sandstorm_home / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert not offer_parameters_from_file(window, plain)


def test_model_ignores_invalid_parent_and_unknown_roles(gallery):
    _save(gallery, "z", 1)
    model = GalleryModel(gallery, None)
    assert model.rowCount(model.index(0)) == 0
    assert model.data(model.index(0), PathRole).endswith(".png")
    assert model.data(model.index(5), PathRole) is None
    assert not model.canFetchMore(model.index(0))
    model.fetchMore(QModelIndex())
