"""The full-window gallery: days, thumbnail size, filters, selection, delete/undo, export,
the viewer, missing files and a large result."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QObject, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QImage, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.engine.gallery import Gallery, GalleryItem, index_row
from desktop.engine.metadata import read_metadata
from desktop.engine.request import GenerationRequest
from desktop.ui.delete_bin import DeleteBin
from desktop.ui.gallery_browser import CUSTOM_RANGE, GalleryBrowser
from desktop.ui.gallery_model import MISSING, GalleryPages, day_label, period_range
from desktop.ui.gallery_panel import GalleryPanel
from desktop.ui.gallery_view import MAX_THUMBNAIL, MIN_THUMBNAIL, DayGridLayout
from desktop.ui.thumbnails import MAX_PENDING

WAIT = 10_000
Ctrl = Qt.KeyboardModifier.ControlModifier
Shift = Qt.KeyboardModifier.ShiftModifier


def _noon(days_ago: int) -> float:
    day = dt.date.today() - dt.timedelta(days=days_ago)
    return dt.datetime.combine(day, dt.time(12)).timestamp()


def _save(
    gallery: Gallery, prompt: str, seed: int, days_ago: int = 0, minute: int = 0, **changes
) -> GalleryItem:
    """Save an image made ``days_ago`` days ago (its file's time says so) and index it."""
    request = GenerationRequest(prompt=prompt, seed=seed, width=64, height=48, **changes)
    item = gallery.save(Image.new("RGB", (64, 48), (seed * 20 % 255, 90, 160)), request)
    when = _noon(days_ago) + minute * 60
    os.utime(item.path, (when, when))
    (indexed,) = gallery.index_files([item.path])
    return indexed


@pytest.fixture
def gallery(sandstorm_home: Path):
    with Gallery(root=sandstorm_home / "out") as g:
        yield g


@pytest.fixture
def panel(qtbot, gallery: Gallery):
    widget = GalleryPanel(gallery.root, delete_bin=DeleteBin(use_trash=False))
    qtbot.addWidget(widget)
    qtbot.waitSignal(widget.index_synced, timeout=WAIT).wait()
    yield widget
    widget.shutdown()


@pytest.fixture
def browser(qtbot, panel: GalleryPanel):
    widget = GalleryBrowser(panel)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.shutdown()


@pytest.fixture
def twelve(gallery: Gallery, browser: GalleryBrowser) -> list[GalleryItem]:
    """Twelve images over three days (four a day), newest first, shown in the browser."""
    items = [_save(gallery, f"image {i}", i + 1, days_ago=i // 4, minute=60 - i) for i in range(12)]
    browser.refresh()
    browser.panel.model.reload()
    return items


def _settle(qtbot, browser: GalleryBrowser) -> None:
    """Wait for a filter's results, read on a worker thread."""
    qtbot.waitUntil(lambda: not browser.pages.loading, timeout=WAIT)


def _paths(browser: GalleryBrowser) -> list[Path]:
    return [item.path for item in browser.pages.items_at(range(browser.pages.total))]


def _centre(browser: GalleryBrowser, position: int) -> QPoint:
    rect = browser.grid.cell_rect(position)
    assert rect.isValid() and browser.grid.viewport().rect().contains(rect.center())
    return rect.center()


def _click(browser: GalleryBrowser, position: int, modifiers=Qt.KeyboardModifier.NoModifier):
    viewport = browser.grid.viewport()
    QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, modifiers, _centre(browser, position))


# -- pure helpers ---------------------------------------------------------------------------------


def test_day_labels_and_periods():
    today = dt.date(2026, 12, 3)  # a Thursday
    assert day_label(today, today) == "Today"
    assert day_label(dt.date(2026, 12, 2), today) == "Yesterday"
    assert day_label(dt.date(2026, 11, 30), today) == "Monday 30 November 2026"
    assert period_range("Any time", today) == (None, None)
    assert period_range("Today", today) == (today, today)
    assert period_range("Yesterday", today) == (dt.date(2026, 12, 2),) * 2
    assert period_range("This week", today) == (dt.date(2026, 11, 30), today)
    assert period_range("This month", today) == (dt.date(2026, 12, 1), today)
    assert period_range("This year", today) == (dt.date(2026, 1, 1), today)
    with pytest.raises(ValueError):
        period_range("Last decade", today)


def test_day_grid_layout_places_headers_cells_and_navigation():
    from desktop.ui.gallery_model import DaySection

    sections = [
        DaySection(dt.date(2026, 12, 3), 7, 0),
        DaySection(dt.date(2026, 12, 2), 2, 7),
    ]
    layout = DayGridLayout(sections, width=16 * 2 + 3 * 100 + 2 * 6, cell=100)
    assert layout.columns == 3
    # Day one: rows of 3, 3, 1; day two starts a new row under its own header.
    assert layout.cell_rect(3).top() == layout.cell_rect(0).top() + layout.step
    assert layout.cell_rect(7).top() > layout.header_rect(1).bottom()
    assert layout.index_at(layout.cell_rect(8).center().x(), layout.cell_rect(8).center().y()) == 8
    header = layout.header_rect(1).center()
    assert layout.index_at(header.x(), header.y()) == -1
    # Columns 0-1 from day one's second row to day two's first: the short row counts too.
    block = layout.cell_rect(3).united(layout.cell_rect(8))
    assert list(layout.indices_in(block)) == [3, 4, 6, 7, 8]
    assert layout.vertical(4, 1) == 6  # down into the short last row
    assert layout.vertical(2, 2) == 6  # column kept, clamped to the row's end
    assert layout.vertical(6, 1) == 7  # into the next day
    assert layout.vertical(8, -1) == 6  # back into the previous day's last row
    assert layout.vertical(1, -1) == 1 and layout.vertical(8, 5) == 8  # the ends hold
    assert layout.height > layout.cell_rect(8).bottom()


# -- days and size --------------------------------------------------------------------------------


def test_day_headers_group_images_by_day_with_counts(qtbot, browser, gallery):
    _save(gallery, "this morning", 1, days_ago=0, minute=1)
    _save(gallery, "this noon", 2, days_ago=0)
    _save(gallery, "yesterday", 3, days_ago=1)
    _save(gallery, "last week", 4, days_ago=6)
    browser.refresh()
    pages, today = browser.pages, dt.date.today()
    labels = [day_label(s.day, today) for s in pages.sections]
    six_days_ago = today - dt.timedelta(days=6)
    assert labels == [
        "Today",
        "Yesterday",
        f"{six_days_ago:%A} {six_days_ago.day} {six_days_ago:%B %Y}",
    ]
    assert [s.count for s in pages.sections] == [2, 1, 1]
    assert [pages.item(i).prompt for i in range(4)] == [
        "this morning",
        "this noon",
        "yesterday",
        "last week",
    ]
    assert browser.count_label.text() == "4 images · 3 days"
    layout = browser.grid.grid_layout
    # Each day starts under its own header, even with room left on the row above.
    assert layout.cell_rect(2).top() > layout.header_rect(1).bottom() > layout.cell_rect(1).bottom()
    assert not browser.grid.grab().isNull()  # the headers and cells paint


def test_thumbnail_size_relayouts_and_is_reported(qtbot, browser, twelve):
    grid = browser.grid
    browser.set_thumbnail_size(MAX_THUMBNAIL)
    wide = grid.grid_layout.columns
    with qtbot.waitSignal(browser.thumbnail_size_changed, timeout=WAIT) as changed:
        browser.size_slider.setValue(MIN_THUMBNAIL)
    assert changed.args == [MIN_THUMBNAIL]
    assert grid.thumbnail_size == MIN_THUMBNAIL
    assert grid.grid_layout.columns > wide
    assert grid.cell_rect(1).width() == MIN_THUMBNAIL + 10
    # Ctrl+wheel over the grid makes them bigger, a notch at a time.
    wheel = QWheelEvent(
        QPointF(_centre(browser, 0)),
        QPointF(grid.viewport().mapToGlobal(_centre(browser, 0))),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Ctrl,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    with qtbot.waitSignal(browser.thumbnail_size_changed, timeout=WAIT) as zoomed:
        QApplication.sendEvent(grid.viewport(), wheel)
    assert zoomed.args[0] > MIN_THUMBNAIL
    browser.set_thumbnail_size(10_000)
    assert grid.thumbnail_size == MAX_THUMBNAIL


# -- filters --------------------------------------------------------------------------------------


def test_each_filter_narrows_the_grid(qtbot, browser, gallery, panel):
    fox = _save(gallery, "a red fox", 1, days_ago=0, model="foxnet")
    _save(gallery, "a blue fox", 2, days_ago=1, model="foxnet")
    _save(gallery, "a cat", 3, days_ago=40, model="catmix")
    browser.refresh()
    assert browser.pages.total == 3

    browser.search_edit.setText("FOX")
    assert browser.pages.total == 3  # debounced: not yet
    qtbot.waitUntil(lambda: browser.pages.total == 2, timeout=WAIT)
    browser.search_edit.clear()
    qtbot.waitUntil(lambda: browser.pages.total == 3, timeout=WAIT)

    with qtbot.waitSignal(browser.pages.reset, timeout=WAIT):
        browser.model_combo.setCurrentText("catmix")
    assert [i.prompt for i in browser.pages.items_at(range(3))] == ["a cat"]
    browser.model_combo.setCurrentIndex(0)
    _settle(qtbot, browser)

    browser.period_combo.setCurrentText("Today")
    _settle(qtbot, browser)
    assert _paths(browser) == [fox.path]
    browser.period_combo.setCurrentText("Yesterday")
    _settle(qtbot, browser)
    assert [i.prompt for i in browser.pages.items_at(range(3))] == ["a blue fox"]
    browser.period_combo.setCurrentText(CUSTOM_RANGE)
    assert browser.since_edit.isVisible() and browser.until_edit.isVisible()
    old = dt.date.today() - dt.timedelta(days=40)
    browser.since_edit.setDate(old)
    browser.until_edit.setDate(old)
    _settle(qtbot, browser)
    assert [i.prompt for i in browser.pages.items_at(range(3))] == ["a cat"]
    browser.period_combo.setCurrentText("Any time")
    _settle(qtbot, browser)
    assert browser.pages.total == 3

    panel.set_favourites([fox], True)
    browser.favourites_button.setChecked(True)
    _settle(qtbot, browser)
    assert _paths(browser) == [fox.path]
    browser.favourites_button.setChecked(False)
    browser.search_edit.setText("zebra")
    qtbot.waitUntil(lambda: browser.pages.total == 0, timeout=WAIT)
    assert browser.grid.empty_text and browser.count_label.text() == "No images"


# -- selection, delete, undo, export --------------------------------------------------------------


def test_click_shift_ctrl_select_all_and_rubber_band(qtbot, browser, twelve):
    grid = browser.grid
    _click(browser, 1)
    assert grid.selected_positions() == [1] and grid.current == 1
    _click(browser, 6, Shift)
    assert grid.selected_positions() == [1, 2, 3, 4, 5, 6]
    _click(browser, 3, Ctrl)
    assert grid.selected_positions() == [1, 2, 4, 5, 6]
    _click(browser, 9, Ctrl)
    assert 9 in grid.selection and browser.selection_label.text() == "6 selected"
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key.Key_A, Ctrl)
    assert grid.selected_positions() == list(range(12))
    _click(browser, 0)
    assert grid.selected_positions() == [0]
    QTest.keyClick(grid, Qt.Key.Key_Right, Shift)
    QTest.keyClick(grid, Qt.Key.Key_Right, Shift)
    assert grid.selected_positions() == [0, 1, 2]

    # A rubber band from the empty space right of the first day's row down into the second
    # day's cells selects what it touches.
    viewport = grid.viewport()
    first, second = grid.cell_rect(0), grid.cell_rect(5)
    start = QPoint(viewport.width() - 20, first.top() - 4)
    end = QPoint(second.center().x(), second.center().y())
    assert grid.index_at(start) == -1
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, QPoint((start.x() + end.x()) // 2, end.y()))
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    # Columns 1 onwards of day one (images 1-3) and of day two's first row (5-7).
    assert grid.grid_layout.columns >= 4
    assert grid.selected_positions() == [1, 2, 3, 5, 6, 7]


def test_delete_selected_then_undo_restores_and_reselects(qtbot, browser, panel, twelve):
    grid = browser.grid
    grid.set_selection([2, 3, 5], current=2)
    doomed = [twelve[2], twelve[3], twelve[5]]
    with qtbot.waitSignal(panel.images_removed, timeout=WAIT):
        grid.setFocus()
        QTest.keyClick(grid, Qt.Key.Key_Delete)
    assert not any(item.path.exists() for item in doomed)
    assert browser.pages.total == 9
    assert grid.selected_positions() == [2]  # the image that took their place
    assert browser.gallery_actions.undo.isEnabled()
    assert panel.model.total == 9  # the strip follows

    with qtbot.waitSignal(panel.index_synced, timeout=WAIT):
        browser.gallery_actions.undo.trigger()
    assert all(item.path.is_file() for item in doomed)
    assert _paths(browser) == [item.path for item in twelve]
    assert grid.selected_positions() == [2, 3, 5]


def test_export_copies_files_with_metadata_and_never_overwrites(
    qtbot, browser, panel, twelve, tmp_path
):
    folder = tmp_path / "export"
    folder.mkdir()
    taken = folder / twelve[0].path.name
    taken.write_bytes(b"the user's own file")
    browser.grid.set_selection([0, 1], current=0)
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        browser.export_selected(folder)
    assert said.args == [f"Exported 2 images to {folder}.", "info"]
    assert taken.read_bytes() == b"the user's own file"
    renamed = folder / f"{twelve[0].path.stem} (2).png"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [taken.name, renamed.name, twelve[1].path.name]
    )
    assert read_metadata(renamed).request == twelve[0].request
    assert read_metadata(folder / twelve[1].path.name).request == twelve[1].request
    assert renamed.stat().st_mtime == pytest.approx(twelve[0].path.stat().st_mtime)
    with qtbot.waitSignal(panel.message, timeout=WAIT):
        browser.export_selected(folder)
    assert (folder / f"{twelve[0].path.stem} (3).png").is_file()
    assert (folder / f"{twelve[1].path.stem} (2).png").is_file()


def test_export_to_a_folder_that_cannot_be_written_says_so(qtbot, browser, panel, twelve, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    browser.grid.set_selection([0], current=0)
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        browser.export_selected(blocker / "export")
    text, level = said.args
    assert level == "error"
    assert text.startswith(f"The images could not be exported to {blocker / 'export'}:")


# -- the viewer -----------------------------------------------------------------------------------


def test_double_click_opens_the_viewer_arrows_step_and_esc_returns(qtbot, browser, twelve):
    grid, viewer = browser.grid, browser.viewer
    QTest.mouseDClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=_centre(browser, 1))
    assert browser.is_viewing()
    assert viewer.current_path() == twelve[1].path
    assert viewer.items() == [item.path for item in twelve]
    qtbot.waitUntil(lambda: viewer.pane.has_image(), timeout=WAIT)
    QTest.keyClick(viewer, Qt.Key.Key_Right)
    QTest.keyClick(viewer, Qt.Key.Key_Right)
    assert viewer.current_path() == twelve[3].path and grid.current == 3
    QTest.keyClick(viewer, Qt.Key.Key_Escape)
    assert not browser.is_viewing()
    assert grid.selected_positions() == [3] and grid.hasFocus()
    # Enter opens the focused image too.
    QTest.keyClick(grid, Qt.Key.Key_Return)
    assert browser.is_viewing() and viewer.current_path() == twelve[3].path
    browser.back()
    assert not browser.is_viewing()
    with qtbot.waitSignal(browser.close_requested, timeout=WAIT):
        browser.back()  # from the grid, Esc asks to leave the browser


def test_viewer_actions_go_through_the_panel(qtbot, browser, panel, gallery, twelve):
    browser.open_position(0)
    path = str(twelve[0].path)
    with qtbot.waitSignal(panel.upscale_requested, timeout=WAIT) as upscale:
        browser.viewer.action_requested.emit("upscale", path)
    assert upscale.args == [path]
    with qtbot.waitSignal(panel.reuse_requested, timeout=WAIT) as reuse:
        browser.viewer.action_requested.emit("reuse", path)
    assert reuse.args[0].prompt == "image 0" and reuse.args[0].seed == -1
    with qtbot.waitSignal(panel.send_to_img2img_requested, timeout=WAIT) as sent:
        browser.viewer.action_requested.emit("img2img", path)
    assert sent.args == [path]
    browser.viewer.action_requested.emit("favourite", path)
    assert gallery.get(path).favourite and browser.pages.item(0).favourite
    with qtbot.waitSignal(panel.images_removed, timeout=WAIT):
        browser.viewer.action_requested.emit("delete", path)
    assert not twelve[0].path.exists()
    # The viewer moves on to the image that took its place; undo is the panel's.
    assert browser.is_viewing() and browser.viewer.current_path() == twelve[1].path
    assert panel.undo_stack


def test_compare_shows_two_selected_images_side_by_side(qtbot, browser, twelve):
    browser.grid.set_selection([0], current=0)
    assert not browser.compare_action.isEnabled()
    browser.grid.set_selection([0, 5], current=5)
    assert browser.compare_action.isEnabled()
    browser.compare_action.trigger()
    assert browser.is_viewing() and browser.viewer.is_comparing()
    assert browser.viewer.compared() == (twelve[0].path, twelve[5].path)
    browser.back()
    assert not browser.is_viewing()


def test_context_menu_and_toolbar_offer_upscale(qtbot, browser, panel, twelve):
    browser.grid.set_selection([4], current=4)
    texts = [a.text() for a in browser.context_menu().actions()]
    assert "Upscale…" in texts and "Export…" in texts and "Compare" in texts
    assert browser.gallery_actions.upscale in browser.toolbar.actions()
    with qtbot.waitSignal(panel.upscale_requested, timeout=WAIT) as asked:
        browser.gallery_actions.upscale.trigger()
    assert asked.args == [str(twelve[4].path)]


# -- bad input ------------------------------------------------------------------------------------


def test_missing_file_shows_its_placeholder_and_opening_says_so(qtbot, browser, panel, gallery):
    kept = _save(gallery, "still here", 1, minute=1)
    gone = _save(gallery, "deleted behind our back", 2)
    gone.path.unlink()
    browser.refresh()
    assert browser.pages.index_of(gone.path) == 1
    browser.grid.grab()  # painting asks for the thumbnails
    qtbot.waitUntil(lambda: browser.pages.failure(gone.path) == MISSING, timeout=WAIT)
    qtbot.waitUntil(lambda: browser.pages.has_thumbnail(kept.path), timeout=WAIT)
    assert not browser.grid.grab().isNull()

    browser.open_position(1)
    qtbot.waitUntil(lambda: "gone" in browser.viewer.pane.message(), timeout=WAIT)
    browser.back()
    # Actions on it say why instead of failing later.
    browser.grid.set_selection([1], current=1)
    with qtbot.waitSignal(panel.message, timeout=WAIT) as said:
        browser.send_to_img2img()
    assert "missing" in said.args[0] and said.args[1] == "warning"
    with qtbot.waitSignal(panel.message, timeout=WAIT) as exported:
        browser.export_selected(gallery.root.parent / "exported")
    assert "Not exported" in exported.args[0] and "missing" in exported.args[0]
    # Deleting it only drops the index row: there is nothing to put in the bin.
    with qtbot.waitSignal(panel.images_removed, timeout=WAIT):
        browser.delete_selected()
    assert gallery.get(gone.path) is None and browser.pages.total == 1


def test_new_results_appear_while_browsing(qtbot, browser, gallery, twelve):
    browser.grid.set_selection([2], current=2)
    fresh = _save(gallery, "just made", 99, minute=120)
    assert browser.add_results([fresh]) == 1
    assert browser.pages.item(0).path == fresh.path
    assert browser.grid.selected_positions() == [3]  # still the same image
    assert browser.pages.item(3).path == twelve[2].path


def test_scrolling_a_large_result_reads_only_the_pages_it_paints(qtbot, browser, gallery):
    real = _save(gallery, "a real one", 1)
    base = time.time()
    rows = [
        index_row(
            real.path.with_name(f"{i:05d}-big.png"),
            GenerationRequest(prompt=f"row {i}", seed=i),
            created=base - i * 600,  # over about three weeks
            mtime_ns=1,
            size=1,
        )
        for i in range(3000)
    ]
    gallery._upsert(rows)
    browser.set_thumbnail_size(MIN_THUMBNAIL)
    browser.refresh()
    pages, grid = browser.pages, browser.grid
    assert pages.total == 3001 and len(pages.sections) >= 20

    def painted_in_full() -> bool:
        return all(pages.peek(p) is not None for p in grid.visible_positions())

    bar = grid.verticalScrollBar()
    bar.setValue(0)
    while True:
        grid.repaint()  # asks for the pages it lacks; they arrive from a worker thread
        qtbot.waitUntil(painted_in_full, timeout=WAIT)
        if bar.value() >= bar.maximum():
            break
        bar.setValue(bar.value() + grid.viewport().height() // 2)
    assert pages.total - 1 in grid.visible_positions()
    assert pages.pages_read <= pages.total // pages.page_size + 3  # each page about once
    # Jumping back to the middle reads the pages there, not the ones before them.
    before = pages.pages_read
    bar.setValue(bar.maximum() // 2)
    grid.repaint()
    qtbot.waitUntil(painted_in_full, timeout=WAIT)
    assert pages.pages_read - before <= 3
    grid.setFocus()
    grid.set_current(0)
    QTest.keyClick(grid, Qt.Key.Key_End)
    assert grid.current == pages.total - 1 and grid.selected_positions() == [pages.total - 1]


class _HeldLoader(QObject):
    """A thumbnail loader that never finishes: records what is asked for and cancelled."""

    thumbnail_ready = Signal(str, QImage)
    thumbnail_failed = Signal(str, str)

    def __init__(self) -> None:
        super().__init__()
        self.requested: list[str] = []
        self.cancelled: list[str] = []

    def request(self, path: str) -> None:
        self.requested.append(path)

    def cancel(self, paths) -> None:
        self.cancelled.extend(paths)


def test_thumbnails_scrolled_far_past_are_no_longer_asked_for(qtbot, gallery):
    loader = _HeldLoader()
    pages = GalleryPages(gallery, loader)
    paths = [f"/nowhere/{i:05d}.png" for i in range(MAX_PENDING + 100)]
    for path in paths:
        assert pages.thumbnail(path) is None
    # The oldest hundred were dropped, here and in the loader; the newest still arrive.
    assert loader.cancelled == paths[:100]
    assert loader.requested == paths
    loader.thumbnail_ready.emit(paths[0], QImage(8, 8, QImage.Format.Format_RGB32))
    loader.thumbnail_ready.emit(paths[-1], QImage(8, 8, QImage.Format.Format_RGB32))
    qtbot.waitUntil(lambda: pages.has_thumbnail(paths[-1]), timeout=WAIT)
    assert not pages.has_thumbnail(paths[0])
    # Asking again for one still waiting keeps it (it becomes the newest): with the one that
    # arrived gone, the second new request drops the next oldest.
    pages.thumbnail(paths[100])
    pages.thumbnail("/nowhere/one-more.png")
    assert len(loader.cancelled) == 100
    pages.thumbnail("/nowhere/two-more.png")
    assert loader.cancelled[-1] == paths[101]
    pages.shutdown()
