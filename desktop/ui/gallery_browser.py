"""The full-window gallery: every image by day, large thumbnails, and a viewer.

``GalleryBrowser`` is what the window shows instead of the canvas when the user asks for
the whole gallery (Ctrl+G, View ▸ Gallery, the strip's Browse button). It stands on the
``GalleryPanel`` of the strip: the same index, thumbnail loader and delete bin, and the
same item-level actions (``GalleryPanel.reuse_item``, ``delete_items``, ``export_items``
...), so whatever the user does here ends in the signals the window already connects, and
undo works across both.

The grid is ``gallery_view.BrowserGrid`` over ``gallery_model.GalleryPages``: a header per
day with its count, the cells laid out by arithmetic and painted for the rows in view only,
each page of the index read when first painted. Filters: prompt words (debounced), model,
a period ("Today", "This week", ... or a custom range) and favourites. The thumbnail size
(slider, Ctrl+wheel, Ctrl+plus/minus) is reported with ``thumbnail_size_changed`` for the
window to remember.

Enter or a double-click opens ``image_viewer.ImageViewer`` in place of the grid; its arrow
keys walk the filtered results, Esc (``back``) returns to the grid, and its toolbar's
actions are performed here through the panel. "Compare" shows two selected images side
by side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QDate, QPoint, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QSlider,
    QStackedWidget,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.gallery import GalleryItem
from desktop.ui.collector import note_activity
from desktop.ui.gallery_actions import GalleryActions
from desktop.ui.gallery_info import infotext
from desktop.ui.gallery_model import PERIODS, GalleryFilter, GalleryPages, count_text, period_range
from desktop.ui.gallery_panel import ALL_MODELS, SEARCH_DELAY_MS, GalleryPanel
from desktop.ui.gallery_view import (
    DEFAULT_THUMBNAIL,
    MAX_THUMBNAIL,
    MIN_THUMBNAIL,
    THUMBNAIL_STEP,
    BrowserGrid,
    clamp_thumbnail,
)
from desktop.ui.image_viewer import ImageViewer

CUSTOM_RANGE = "Custom range…"
#: Paths handed to the viewer at once (a window around the opened image, moved along as
#: the user steps): the viewer keeps them in a list, and making 10,000 ``Path``s for one
#: look stalls the window for a few hundred milliseconds.
VIEWER_WINDOW = 2_000
#: How close to either end of that window the viewer may come before it is moved.
VIEWER_MARGIN = 50
#: Selected images whose selection survives a reload (each may cost a small query).
KEPT_SELECTION = 200


class GalleryBrowser(QWidget):
    """The whole gallery in the window: filters, a day-grouped grid and a viewer.

    Call ``shutdown`` before it goes (the viewer decodes on worker threads); the panel it
    stands on is shut down by its owner.

    Signals:
        close_requested(): the user wants the canvas back (Back button; the window maps Esc
            to ``back``, which emits it when the viewer is not open).
        thumbnail_size_changed(int): the user chose another thumbnail size (pixels).
    """

    close_requested = Signal()
    thumbnail_size_changed = Signal(int)

    def __init__(
        self,
        panel: GalleryPanel,
        thumbnail_size: int = DEFAULT_THUMBNAIL,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("GalleryBrowser")
        self.panel = panel
        # Read when first shown: a window that never browses pays nothing for it.
        self.pages = GalleryPages(panel.gallery, panel.loader, read=False, parent=self)
        #: The results must be read again before they are shown (changed while hidden).
        self._stale = True
        #: Restored by an undo: selected once they are indexed (``index_synced`` follows).
        self._select_after: list[str] = []
        #: Where the viewer's list starts in the results.
        self._viewer_offset = 0
        #: A filter change is on its way: when it arrives, start from the top.
        self._filter_changed = False
        self._build(clamp_thumbnail(thumbnail_size))
        self.gallery_actions = GalleryActions(self, self.grid, parent=self)
        self.gallery_actions.open.setToolTip("Show the image full size (Enter)")
        self.gallery_actions.open.setStatusTip(self.gallery_actions.open.toolTip())
        self.compare_action = QAction("Compare", self)
        self.compare_action.setToolTip("Show the two selected images side by side")
        self.compare_action.setStatusTip(self.compare_action.toolTip())
        self.compare_action.triggered.connect(lambda _checked=False: self.compare_selected())
        for action in (self.gallery_actions.open, self.compare_action):
            self.toolbar.addAction(action)
        self.toolbar.addSeparator()
        for action in self.gallery_actions.toolbar():
            self.toolbar.addAction(action)
        self._connect()
        self._update_actions()

    # -- construction ----------------------------------------------------------------------
    def _build(self, thumbnail_size: int) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.stack = QStackedWidget()
        self.grid_page = QWidget()
        page = QVBoxLayout(self.grid_page)
        page.setContentsMargins(6, 6, 6, 0)
        page.setSpacing(4)
        page.addLayout(self._build_filters())

        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.toolbar = QToolBar()
        self.toolbar.setObjectName("GalleryBrowserToolbar")
        self.toolbar.setIconSize(QSize(16, 16))
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addWidget(self.toolbar, 1)
        self.selection_label = QLabel()
        self.selection_label.setObjectName("GalleryBrowserSelection")
        bar.addWidget(self.selection_label)
        size_label = QLabel("Size")
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setObjectName("GalleryBrowserSize")
        self.size_slider.setRange(MIN_THUMBNAIL, MAX_THUMBNAIL)
        self.size_slider.setSingleStep(THUMBNAIL_STEP)
        self.size_slider.setPageStep(THUMBNAIL_STEP * 2)
        self.size_slider.setValue(thumbnail_size)
        self.size_slider.setFixedWidth(140)
        self.size_slider.setToolTip("Thumbnail size (Ctrl+wheel over the grid)")
        size_label.setBuddy(self.size_slider)
        bar.addWidget(size_label)
        bar.addWidget(self.size_slider)
        page.addLayout(bar)

        self.grid = BrowserGrid(self.pages, thumbnail_size)
        page.addWidget(self.grid, 1)
        self.stack.addWidget(self.grid_page)
        self.viewer = ImageViewer(info=infotext)
        self.stack.addWidget(self.viewer)
        layout.addWidget(self.stack)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)

    def _build_filters(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(6)
        self.back_button = QToolButton()
        self.back_button.setObjectName("GalleryBrowserBack")
        self.back_button.setText("← Canvas")
        self.back_button.setToolTip("Back to the canvas (Esc or Ctrl+G)")
        self.back_button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("GalleryBrowserSearch")
        self.search_edit.setPlaceholderText("Search prompts…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setToolTip("Show images whose prompt contains all these words")
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("GalleryBrowserModel")
        self.model_combo.setToolTip("Show images made with one model")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.addItem(ALL_MODELS)
        self.period_combo = QComboBox()
        self.period_combo.setObjectName("GalleryBrowserPeriod")
        self.period_combo.setToolTip("Show images made in this period")
        self.period_combo.addItems([*PERIODS, CUSTOM_RANGE])
        today = QDate.currentDate()
        self.since_edit = self._date_edit("From this day on", today.addDays(-7))
        self.until_edit = self._date_edit("Up to this day", today)
        self.favourites_button = QToolButton()
        self.favourites_button.setObjectName("GalleryBrowserFavourites")
        self.favourites_button.setText("★ Favourites")
        self.favourites_button.setCheckable(True)
        self.favourites_button.setToolTip("Show only favourite images")
        self.count_label = QLabel()
        self.count_label.setObjectName("GalleryBrowserCount")
        row.addWidget(self.back_button)
        row.addWidget(self.search_edit, 1)
        for widget in (
            self.model_combo,
            self.period_combo,
            self.since_edit,
            self.until_edit,
            self.favourites_button,
            self.count_label,
        ):
            row.addWidget(widget)
        return row

    @staticmethod
    def _date_edit(tip: str, day: QDate) -> QDateEdit:
        edit = QDateEdit(day)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")
        edit.setToolTip(tip)
        edit.hide()
        return edit

    def _connect(self) -> None:
        self.back_button.clicked.connect(self.close_requested.emit)
        self._search_timer.timeout.connect(self.apply_filter)
        self.search_edit.textChanged.connect(self._search_timer.start)
        # Typing a search, like scrolling, puts a full garbage collection off.
        self.search_edit.textChanged.connect(lambda _text: note_activity())
        self.model_combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.period_combo.currentIndexChanged.connect(lambda _i: self._on_period())
        self.since_edit.dateChanged.connect(lambda _d: self.apply_filter())
        self.until_edit.dateChanged.connect(lambda _d: self.apply_filter())
        self.favourites_button.toggled.connect(lambda _on: self.apply_filter())
        self.size_slider.valueChanged.connect(self._on_size)
        self.grid.zoom_requested.connect(
            lambda step: self.size_slider.setValue(self.size_slider.value() + step * THUMBNAIL_STEP)
        )
        self.grid.activated.connect(self.open_position)
        self.grid.selection_changed.connect(self._update_actions)
        self.grid.context_menu_requested.connect(self._context_menu)
        self.pages.reset.connect(self._on_reset)
        self.pages.failed.connect(
            lambda why: self.panel.message.emit(f"The gallery could not be read: {why}.", "warning")
        )
        self.viewer.close_requested.connect(self.show_grid)
        self.viewer.current_changed.connect(self._on_viewer_moved)
        self.viewer.action_requested.connect(self.perform)
        p = self.panel
        p.index_synced.connect(lambda *_counts: self._on_index_changed())
        p.images_removed.connect(self._on_removed)
        p.images_restored.connect(self._on_restored)
        p.favourites_changed.connect(self.pages.update_favourites)

    # -- showing ---------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()
        if self.stack.currentWidget() is self.grid_page:
            self.grid.setFocus(Qt.FocusReason.OtherFocusReason)

    def refresh(self) -> None:
        """Read the results again, keeping the focused and selected images where possible."""
        self._stale = False
        if self.pages.gallery is not self.panel.gallery:
            self.pages.set_gallery(self.panel.gallery, read=False)
            self.grid.clear_selection()
        self.refresh_models()
        wanted = self._select_after or self._selected_paths()
        self._select_after = []
        current = self.pages.peek(self.grid.current) if self.grid.current >= 0 else None
        hint = self.grid.current
        scroll = self.grid.verticalScrollBar().value()
        self.pages.reload()
        positions = [self.pages.index_of(path, hint) for path in wanted]
        positions = [p for p in positions if p >= 0]
        focus = self.pages.index_of(current.path, hint) if current is not None else -1
        if focus < 0 and positions:
            focus = positions[0]
        self.grid.verticalScrollBar().setValue(scroll)
        self.grid.set_selection(positions, current=focus)
        if focus >= 0:
            self.grid.scroll_to(focus)

    def _selected_paths(self) -> list[str]:
        items = (self.pages.peek(p) for p in self.grid.selected_positions()[:KEPT_SELECTION])
        return [str(item.path) for item in items if item is not None]

    def refresh_models(self) -> None:
        """Refill the model filter from the index, keeping the chosen model."""
        gallery = self.pages.gallery
        if gallery.closed:
            return
        chosen = self.model_combo.currentText() if self.model_combo.currentIndex() > 0 else ""
        names = gallery.models()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(ALL_MODELS)
        self.model_combo.addItems(names)
        self.model_combo.setCurrentIndex(names.index(chosen) + 1 if chosen in names else 0)
        self.model_combo.blockSignals(False)
        if chosen and chosen not in names:
            self.apply_filter()

    def _when_shown(self) -> bool:
        """True when the browser is on screen; otherwise marks the results stale."""
        if not self.isVisible():
            self._stale = True
            return False
        return True

    def _on_index_changed(self) -> None:
        if self._when_shown():
            self.refresh()

    def _on_removed(self, paths: list[str]) -> None:
        if not self._when_shown():
            return
        before = [self.pages.index_of(path) for path in paths]
        first = min((p for p in before if p >= 0), default=self.grid.current)
        self.pages.reload()
        if self.pages.total:
            spot = max(0, min(first, self.pages.total - 1))
            self.grid.set_selection([spot], current=spot)
        if self.stack.currentWidget() is self.viewer:
            self._reopen_viewer_without(set(paths))

    def _on_restored(self, paths: list[str]) -> None:
        # The panel emits index_synced next, which refreshes and selects them.
        self._select_after = list(paths)
        if not self.isVisible():
            self._stale = True

    def add_results(self, saved: list) -> int:
        """Take in freshly saved images (``GalleryItem``s or paths); returns the rows added.

        While hidden this only marks the results stale: they are read when shown.
        """
        if not self._when_shown():
            return 0
        added = self.pages.add_items(saved)
        if added:
            # The new images sort first: everything the user had moves down by as many.
            grid = self.grid
            current = grid.current + added if grid.current >= 0 else -1
            grid.set_selection([p + added for p in grid.selection], current=current)
            self.refresh_models()
        return added

    # -- filters ---------------------------------------------------------------------------
    def current_filter(self) -> GalleryFilter:
        model = self.model_combo.currentText() if self.model_combo.currentIndex() > 0 else None
        period = self.period_combo.currentText()
        if period == CUSTOM_RANGE:
            since: dt.date | None = self.since_edit.date().toPython()
            until: dt.date | None = self.until_edit.date().toPython()
            if since is not None and until is not None and since > until:
                since, until = until, since
        else:
            since, until = period_range(period, dt.date.today())
        return GalleryFilter(
            text=self.search_edit.text().strip(),
            model=model,
            favourites=self.favourites_button.isChecked(),
            since=since,
            until=until,
        )

    def apply_filter(self) -> None:
        """Show the results of the filters (the search box calls it debounced). They are
        read on a worker thread and shown when in (``pages.reset``)."""
        self._search_timer.stop()
        wanted = self.current_filter()
        if wanted == self.pages.wanted_filter and not self._stale:
            return
        self._stale = False
        self._filter_changed = True
        self.pages.load(wanted)

    def _on_reset(self) -> None:
        if self._filter_changed:
            self._filter_changed = False
            self.grid.clear_selection()
            self.grid.set_current(-1, select=False)
            self.grid.verticalScrollBar().setValue(0)
        self._update_count()

    def _on_period(self) -> None:
        custom = self.period_combo.currentText() == CUSTOM_RANGE
        self.since_edit.setVisible(custom)
        self.until_edit.setVisible(custom)
        self.apply_filter()

    def _update_count(self) -> None:
        total = self.pages.total
        days = len(self.pages.sections)
        self.count_label.setText(
            f"{count_text(total)} · {days} day{'s' if days != 1 else ''}" if total else "No images"
        )
        if total:
            self.grid.empty_text = ""
        elif self.pages.filter != GalleryFilter():
            self.grid.empty_text = "No image matches these filters."
        else:
            self.grid.empty_text = "No images yet: generated images appear here."

    def _on_size(self, size: int) -> None:
        self.grid.set_thumbnail_size(size)
        self.thumbnail_size_changed.emit(self.grid.thumbnail_size)

    @property
    def thumbnail_size(self) -> int:
        return self.grid.thumbnail_size

    def set_thumbnail_size(self, size: int) -> None:
        self.size_slider.setValue(clamp_thumbnail(size))

    # -- selection -------------------------------------------------------------------------
    def selected_items(self) -> list[GalleryItem]:
        return self.pages.items_at(self.grid.selected_positions())

    def current_item(self) -> GalleryItem | None:
        grid = self.grid
        if grid.current >= 0 and grid.current in grid.selection:
            return self.pages.item(grid.current)
        positions = grid.selected_positions()
        return self.pages.item(positions[0]) if positions else None

    def _update_actions(self) -> None:
        count = len(self.grid.selection)
        self.gallery_actions.update(count > 0, bool(self.panel.undo_stack))
        self.compare_action.setEnabled(count == 2)
        self.selection_label.setText(f"{count} selected" if count > 1 else "")

    def _context_menu(self, where: QPoint) -> None:
        self.context_menu().popup(where)

    def context_menu(self) -> QMenu:
        """The actions on the selection, as a menu (shown on right-click)."""
        menu = self.gallery_actions.menu(self)
        menu.insertAction(self.gallery_actions.reuse, self.compare_action)
        return menu

    # -- the viewer ------------------------------------------------------------------------
    def is_viewing(self) -> bool:
        return self.stack.currentWidget() is self.viewer

    def open_position(self, position: int) -> None:
        """Open the image at ``position`` full size; the arrow keys walk the results."""
        if not 0 <= position < self.pages.total:
            return
        self._give_viewer(position)
        self._show_viewer()

    def _give_viewer(self, position: int) -> None:
        """Hand the viewer the results around ``position``, showing that one."""
        total = self.pages.total
        start = max(0, min(position - VIEWER_WINDOW // 2, total - VIEWER_WINDOW))
        paths = self.pages.gallery.paths(
            **self.pages.filter.query(), limit=VIEWER_WINDOW, offset=start
        )
        self._viewer_offset = start
        self.viewer.set_items([Path(p) for p in paths], position - start)

    def compare_selected(self) -> None:
        """Show the two selected images side by side."""
        items = self.selected_items()
        if len(items) != 2:
            return
        if not self.is_viewing():
            self.open_position(self.grid.selected_positions()[0])
        self.viewer.compare(items[0].path, items[1].path)

    def _show_viewer(self) -> None:
        self.stack.setCurrentWidget(self.viewer)
        self.viewer.setFocus(Qt.FocusReason.OtherFocusReason)

    def show_grid(self) -> None:
        """Back from the viewer to the grid, on the image last shown."""
        if not self.is_viewing():
            return
        self.stack.setCurrentWidget(self.grid_page)
        shown = self.viewer.current_path()
        if shown is not None:
            position = self.pages.index_of(shown, self._viewer_offset + self.viewer.current_index())
            if position >= 0:
                self.grid.set_current(position)
        self.grid.setFocus(Qt.FocusReason.OtherFocusReason)

    def back(self) -> None:
        """What Esc does: close the viewer, or ask to leave the browser."""
        if self.is_viewing():
            self.show_grid()
        else:
            self.close_requested.emit()

    def _on_viewer_moved(self, index: int) -> None:
        position = self._viewer_offset + index
        if not 0 <= position < self.pages.total:
            return
        self.grid.set_current(position)
        count = len(self.viewer.items())
        near_start = index < VIEWER_MARGIN and self._viewer_offset > 0
        near_end = index >= count - VIEWER_MARGIN and self._viewer_offset + count < self.pages.total
        if near_start or near_end:
            self._give_viewer(position)

    def _reopen_viewer_without(self, gone: set[str]) -> None:
        """The viewer's list lost images (deleted): show the one that took their place."""
        if self.viewer.is_comparing():
            self.show_grid()
            return
        items = [p for p in self.viewer.items() if str(p) not in gone]
        if not items:
            self.show_grid()
            return
        index = min(self.viewer.current_index(), len(items) - 1)
        self.viewer.set_items(items, index)

    def perform(self, action: str, path: str) -> None:
        """Do what the viewer asks for on ``path``, as the gallery's own actions do."""
        item = self.pages.gallery.get(path) if not self.pages.gallery.closed else None
        if item is None:
            self.panel.message.emit(f"{Path(path).name} is no longer in the gallery.", "warning")
            return
        if action == "reuse":
            self.panel.reuse_item(item, keep_seed=False)
        elif action == "img2img":
            self.panel.send_item_to_img2img(item)
        elif action == "upscale":
            self.panel.upscale_item(item)
        elif action == "favourite":
            self.panel.set_favourites([item], not item.favourite)
        elif action == "delete":
            self.panel.delete_items([item])
        else:
            raise ValueError(f"unknown viewer action {action!r}")

    # -- actions (see gallery_actions) -----------------------------------------------------
    def open_current(self) -> None:
        if self.grid.current >= 0:
            self.open_position(self.grid.current)

    def reuse_current(self, keep_seed: bool) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.reuse_item(item, keep_seed)

    def send_to_img2img(self) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.send_item_to_img2img(item)

    def upscale_current(self) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.upscale_item(item)

    def copy_image(self) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.copy_item_image(item)

    def copy_parameters(self) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.copy_item_parameters(item)

    def reveal(self) -> None:
        item = self.current_item()
        if item is not None:
            self.panel.reveal_item(item)

    def toggle_favourite(self) -> None:
        items = self.selected_items()
        if items:
            current = self.current_item() or items[0]
            self.panel.set_favourites(items, not current.favourite)

    def delete_selected(self) -> list:
        """Delete the selected images (the panel's undo brings them back)."""
        deleted = self.panel.delete_items(self.selected_items())
        self._update_actions()
        return deleted

    def undo_delete(self) -> list[Path]:
        restored = self.panel.undo_delete()
        self._update_actions()
        return restored

    def export_selected(self, folder: Path | str | None = None) -> object:
        """Copy the selected images to ``folder`` (asks for one when None)."""
        return self.panel.export_items(self.selected_items(), folder)

    def select_paths(self, paths: Sequence[Path | str]) -> list[int]:
        """Select these images (those the filter shows); returns their positions."""
        positions = [p for p in (self.pages.index_of(path) for path in paths) if p >= 0]
        self.grid.set_selection(positions, current=positions[0] if positions else -1)
        if positions:
            self.grid.scroll_to(positions[0])
        return positions

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop the viewer's decoding and the background reads; safe to call twice."""
        self._search_timer.stop()
        done = self.pages.shutdown(msecs)
        return self.viewer.shutdown(msecs) and done
