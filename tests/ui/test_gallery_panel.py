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

from desktop.engine.gallery import Gallery, GalleryItem, index_row
from desktop.engine.request import GenerationRequest
from desktop.ui import thumbnails
from desktop.ui.delete_bin import DeleteBin
from desktop.ui.gallery_model import FavouriteRole, GalleryFilter, GalleryModel, PathRole
from desktop.ui.gallery_panel import GalleryPanel
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
    widget = GalleryPanel(gallery.root, delete_bin=DeleteBin(use_trash=False))
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.index_synced, timeout=WAIT):
        widget.resize(700, 500)  # the panel syncs its index as it opens
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
    panel.gallery_actions.favourite.trigger()
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
        panel.gallery_actions.reuse.trigger()
    request, keep = plain.args
    assert (request.prompt, request.seed, request.steps, keep) == ("a bridge", -1, 7, False)
    with qtbot.waitSignal(panel.reuse_requested, timeout=WAIT) as seeded:
        panel.gallery_actions.reuse_seed.trigger()
    assert seeded.args[0].seed == 1234 and seeded.args[1] is True


def test_copy_actions_and_reveal(qtbot, panel, gallery):
    item = _save(gallery, "a teapot", 5)
    panel.model.reload()
    _select(panel, 0)
    panel.gallery_actions.copy_params.trigger()
    clipboard = QGuiApplication.clipboard()
    assert clipboard.text().startswith("a teapot\n")
    panel.gallery_actions.copy_image.trigger()
    assert clipboard.image().size().width() == 320
    opened = []
    panel.open_url = opened.append
    panel.gallery_actions.reveal.trigger()
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
    assert panel.gallery_actions.undo.isEnabled()

    with qtbot.waitSignal(panel.index_synced, timeout=WAIT) as synced:
        assert panel.undo_delete() == [doomed.path]
        assert doomed.path.is_file()  # the file is back at once, the index follows
    assert synced.args == [1, 0]
    restored = gallery.get(doomed.path)
    assert restored is not None and restored.favourite and restored.prompt == "delete me"
    assert sorted(_rows(panel)) == ["delete me", "keep me"]
    assert panel.current_item().path == doomed.path
    assert not panel.gallery_actions.undo.isEnabled()
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
    gallery._upsert(
        [
            index_row(
                real.path.with_name(f"{i:05d}-x.png"),
                GenerationRequest(prompt=f"p{i}", seed=i),
                created=i,
                mtime_ns=1,
                size=1,
            )
            for i in range(2000)
        ]
    )
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
            index_row(real.path.with_name(f"{i:05d}-y.png"), None, created=i, mtime_ns=1, size=1)
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


def test_model_ignores_invalid_parent_and_unknown_roles(gallery):
    _save(gallery, "z", 1)
    model = GalleryModel(gallery, None)
    assert model.rowCount(model.index(0)) == 0
    assert model.data(model.index(0), PathRole).endswith(".png")
    assert model.data(model.index(5), PathRole) is None
    assert not model.canFetchMore(model.index(0))
    model.fetchMore(QModelIndex())


# -- standalone: folders, background work, shutdown ---------------------------------------------


def _record_threads(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Record the thread every call of ``Gallery.<name>`` runs on."""
    seen: list[int] = []
    real = getattr(Gallery, name)

    def recording(self, *args, **kwargs):
        seen.append(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Gallery, name, recording)
    return seen


def test_set_root_opens_and_syncs_off_the_gui_thread(qtbot, panel, gallery, monkeypatch, tmp_path):
    _save(gallery, "in the first folder", 1)
    panel.model.reload()
    other_root = tmp_path / "elsewhere"
    with Gallery(root=other_root, index_path=tmp_path / "scratch.sqlite3") as other:
        for seed in range(3):
            _save(other, f"in the second folder {seed}", seed + 10)
    opened = _record_threads(monkeypatch, "__init__")
    synced = _record_threads(monkeypatch, "sync")
    searched = _record_threads(monkeypatch, "search")
    counted = _record_threads(monkeypatch, "count")
    previous = panel.gallery
    with qtbot.waitSignal(panel.index_synced, timeout=WAIT) as done:
        panel.set_root(other_root)
        # Until the new folder is ready the old one stays on screen.
        assert _rows(panel) == ["in the first folder"]
    assert done.args == [3, 0]
    gui = threading.get_ident()
    assert opened and gui not in opened
    assert synced and gui not in synced
    # The strip's first page was read there too.
    assert searched and gui not in searched and counted and gui not in counted
    assert panel.root == other_root.resolve()
    assert sorted(_rows(panel)) == [f"in the second folder {s}" for s in range(3)]
    assert panel.model_combo.findText("tiny-model") > 0
    qtbot.waitUntil(lambda: previous.closed, timeout=WAIT)  # the old index is closed
    # New results of the old folder no longer belong in the view.
    assert panel.add_results([_save(gallery, "late result of the old folder", 99)]) == 0


def test_a_first_page_read_ahead_is_used_only_for_its_own_filter(qtbot, gallery):
    for prompt, seed in (("a red cat", 1), ("a blue fox", 2), ("a green cat", 3)):
        _save(gallery, prompt, seed)
    model = GalleryModel(gallery, None)
    ahead = model.read_first_page(gallery)
    assert ahead.total == 3 and len(ahead.items) == 3
    model.set_gallery(gallery, ahead)
    assert model.rowCount() == 3 and model.pages_fetched == 1
    # The filter changed while the page was read: the model reads its own.
    model.set_filter(GalleryFilter(text="cat"))
    model.set_gallery(gallery, ahead)
    assert sorted(item.prompt for item in model.items()) == ["a green cat", "a red cat"]


def test_a_later_set_root_wins(qtbot, panel, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for root, prompt in ((first, "first folder"), (second, "second folder")):
        with Gallery(root=root) as g:
            _save(g, prompt, 1)
    with qtbot.waitSignal(panel.index_synced, timeout=WAIT):
        panel.set_root(first)
        panel.set_root(second)
    qtbot.waitUntil(lambda: panel.tasks.active() == 0, timeout=WAIT)
    assert panel.root == second.resolve()
    assert _rows(panel) == ["second folder"]


def test_undo_delete_reindexes_off_the_gui_thread(qtbot, panel, gallery, monkeypatch):
    item = _save(gallery, "undo me", 4)
    panel.model.reload()
    _select(panel, 0)
    panel.delete_selected()
    indexed = _record_threads(monkeypatch, "index_files")
    synced = _record_threads(monkeypatch, "sync")
    with qtbot.waitSignal(panel.index_synced, timeout=WAIT):
        panel.undo_delete()
    assert indexed and threading.get_ident() not in indexed
    assert threading.get_ident() not in synced
    assert _rows(panel) == ["undo me"]
    assert gallery.get(item.path) is not None


def test_sync_in_background_finds_files_copied_in_by_hand(qtbot, panel, gallery):
    with Gallery(root=gallery.root / "import", index_path=gallery.index_path.with_name("x")) as g:
        copied = _save(g, "copied by hand", 5)
    assert panel.model.rowCount() == 0
    with qtbot.waitSignal(panel.index_synced, timeout=WAIT) as done:
        panel.sync_in_background()
        panel.sync_in_background()  # coalesced with the running one
    assert done.args == [1, 0]
    assert [i.path for i in panel.model.items()] == [copied.path]


def test_sync_failure_is_a_message_not_a_crash(qtbot, panel, monkeypatch):
    def broken(self, should_stop=None):
        raise OSError("disk on fire")

    monkeypatch.setattr(Gallery, "sync", broken)
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        panel.sync_in_background()
    text, level = said.args
    assert "disk on fire" in text and level == "warning"


def test_reuse_without_settings_warns(qtbot, panel, gallery):
    plain = gallery.root / "plain.png"
    plain.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(plain)
    with qtbot.waitSignal(panel.index_synced, timeout=WAIT):
        panel.sync_in_background()
    _select(panel, 0)
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        panel.gallery_actions.reuse.trigger()
    assert "No generation settings" in said.args[0]


def test_img2img_action_emits_the_path(qtbot, panel, gallery):
    item = _save(gallery, "to img2img", 3)
    panel.model.reload()
    _select(panel, 0)
    with qtbot.waitSignal(panel.send_to_img2img_requested, timeout=WAIT) as sent:
        panel.gallery_actions.img2img.trigger()
    assert sent.args == [str(item.path)]


def test_shutdown_stops_background_work_and_is_safe_twice(qtbot, gallery, tmp_path):
    widget = GalleryPanel(gallery.root, delete_bin=DeleteBin(use_trash=False))
    qtbot.addWidget(widget)
    widget.set_root(tmp_path / "another")  # still running or just done: either is fine
    assert widget.shutdown(10_000)
    assert widget.shutdown()
    assert widget.tasks.active() == 0
    assert widget.gallery.closed
    widget.sync_in_background()  # ignored after shutdown
    widget.set_root(tmp_path)
    assert widget.undo_delete() == []


def test_panel_needs_no_window(qtbot, gallery):
    # Constructed on its own, with its own loader: the signals are the whole interface.
    _save(gallery, "standalone", 1)
    widget = GalleryPanel(gallery.root)
    qtbot.addWidget(widget)
    try:
        with qtbot.waitSignal(widget.index_synced, timeout=WAIT):
            pass
        assert widget.parentWidget() is None
        assert _rows(widget) == ["standalone"]
    finally:
        widget.shutdown()


def test_upscale_and_export_actions_of_the_strip(qtbot, panel, gallery, tmp_path):
    item = _save(gallery, "make me bigger", 8)
    panel.model.reload()
    _select(panel, 0)
    assert panel.gallery_actions.upscale in panel.toolbar.actions()
    assert "Upscale…" in [a.text() for a in panel.context_menu().actions()]
    with qtbot.waitSignal(panel.upscale_requested, timeout=WAIT) as asked:
        panel.gallery_actions.upscale.trigger()
    assert asked.args == [str(item.path)]
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        panel.export_selected(tmp_path / "copies")
    assert said.args[1] == "info" and (tmp_path / "copies" / item.path.name).is_file()
    with qtbot.waitSignal(panel.browse_requested, timeout=WAIT):
        panel.browse_action.trigger()


def test_missing_file_in_the_strip_shows_a_placeholder_and_open_says_so(qtbot, panel, gallery):
    item = _save(gallery, "deleted by hand", 4)
    item.path.unlink()
    panel.model.reload()
    index = panel.model.index(0)
    placeholder = panel.model.data(index, Qt.ItemDataRole.DecorationRole)
    qtbot.waitUntil(lambda: panel.model.failure(item.path) == "missing", timeout=WAIT)
    missing = panel.model.data(index, Qt.ItemDataRole.DecorationRole)
    assert missing.cacheKey() != placeholder.cacheKey()  # a "Missing" square, not the grey one
    opened = []
    panel.open_requested.connect(lambda *args: opened.append(args))
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        panel.open_item(0)
    assert "missing" in said.args[0] and not opened


def test_strip_height_for_two_rows(panel):
    assert panel.height_for_rows(2) >= 2 * panel.view.gridSize().height()
    assert panel.height_for_rows(2) - panel.height_for_rows(1) == panel.view.gridSize().height()
