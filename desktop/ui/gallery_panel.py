"""The gallery panel: a searchable thumbnail grid of the output folder, and its actions.

The panel stands on its own: it opens the ``Gallery`` of its folder, syncs it in the
background and reports through signals; the window constructs it, docks it and connects
the signals (it has no knowledge of the window). Slow work (opening another folder's
index and syncing it, re-indexing restored files) runs on worker threads via
``desktop.ui.tasks``; the GUI thread only reads pages of the index.

The actions on images live here once, item by item (``reuse_item``, ``delete_items``,
``set_favourites``, ``export_items`` ...): the strip's own actions call them for its
selection, and so does the full-window browser (``gallery_browser``) for its own, so both
end in the same signals the window connects.

Other modules: ``gallery_view`` (the grids), ``gallery_actions`` (the ``QAction``s and the
file helpers), ``gallery_model`` (the models), ``delete_bin`` (delete with undo),
``gallery_info`` (an image's settings as text).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QSplitter,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.gallery import Gallery, GalleryItem
from desktop.ui.delete_bin import DeleteBin, DeletedFile
from desktop.ui.gallery_actions import (
    ExportResult,
    GalleryActions,
    copy_image_to_clipboard,
    copy_parameters_to_clipboard,
    describe_os_error,
    export_files,
    folder_url,
    reusable_request,
)
from desktop.ui.gallery_info import NO_SETTINGS, infotext
from desktop.ui.gallery_model import FirstPage, GalleryFilter, GalleryModel
from desktop.ui.gallery_view import GalleryGrid
from desktop.ui.tasks import Task, TaskRunner, stop_requested
from desktop.ui.thumbnails import ThumbnailLoader

__all__ = ["DeleteBin", "GalleryPanel"]

SEARCH_DELAY_MS = 250
ALL_MODELS = "All models"


class GalleryPanel(QWidget):
    """Thumbnail grid of the gallery in ``root`` with search, filters and actions.

    It syncs the index in the background as it opens. Call ``shutdown`` before it goes.

    Signals:
        reuse_requested(object, bool): a ``GenerationRequest`` to put in the panels, and
            whether to keep its seed (when False the request already has seed -1).
        send_to_img2img_requested(str): an image path to use as the init image.
        open_requested(str, str): an image path to show large, and its parameters text.
        upscale_requested(str): an image path to make a larger copy of.
        browse_requested(): the user asked for the full-window gallery.
        message(str, str): text and level ("error", "warning", "info") for the window.
        index_synced(int, int): a background sync finished (added or changed, removed);
            also after ``set_root`` switched the view and after ``undo_delete`` re-indexed.
        images_removed(list): paths deleted (or found missing and dropped from the index).
        images_restored(list): paths an undo brought back, once they are indexed again.
        favourites_changed(list, bool): paths marked (True) or unmarked as favourites.
    """

    reuse_requested = Signal(object, bool)
    send_to_img2img_requested = Signal(str)
    open_requested = Signal(str, str)
    upscale_requested = Signal(str)
    browse_requested = Signal()
    message = Signal(str, str)
    index_synced = Signal(int, int)
    images_removed = Signal(list)
    images_restored = Signal(list)
    favourites_changed = Signal(list, bool)

    def __init__(
        self,
        root: Path,
        loader: ThumbnailLoader | None = None,
        delete_bin: DeleteBin | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("GalleryPanel")
        self.tasks = TaskRunner(self)
        # Opening is cheap (no walk); the sync that may take seconds runs on a worker.
        self.gallery = Gallery(root=root)
        self.loader = loader if loader is not None else ThumbnailLoader(parent=self)
        self.bin = delete_bin if delete_bin is not None else DeleteBin()
        self.undo_stack: list[list[DeletedFile]] = []
        self.open_url: Callable[[QUrl], Any] = QDesktopServices.openUrl
        self._closed = False
        #: Galleries opened by a worker and not yet shown or closed (closed at shutdown).
        self._opening: list[Gallery] = []
        self._opening_lock = threading.Lock()
        #: Galleries replaced by ``set_root``; closed once no task may still use them.
        self._retired: list[Gallery] = []
        self._root_generation = 0
        #: The gallery a background sync is running for, if any.
        self._syncing: Gallery | None = None
        self._sync_again = False
        self.model = GalleryModel(self.gallery, self.loader, parent=self)

        self._build()
        self.gallery_actions = GalleryActions(self, self.view, parent=self)
        self.browse_action = QAction("⛶ Browse", self)
        self.browse_action.setObjectName("GalleryBrowseAction")
        self.browse_action.setToolTip("Show the whole gallery in the window, by day (Ctrl+G)")
        self.browse_action.setStatusTip(self.browse_action.toolTip())
        self.browse_action.triggered.connect(lambda _checked=False: self.browse_requested.emit())
        self.toolbar.addAction(self.browse_action)
        self.toolbar.addSeparator()
        for action in self.gallery_actions.toolbar():
            self.toolbar.addAction(action)
        self.model.modelReset.connect(self._update_count)
        self.model.rowsInserted.connect(self._update_count)
        self.model.rowsRemoved.connect(self._update_count)
        self.tasks.idle.connect(self._close_retired)
        self.refresh_models()
        self._update_count()
        self._update_actions()
        self.sync_in_background()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)

        self._filters = filters = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("GallerySearch")
        self.search_edit.setPlaceholderText("Search prompts…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setToolTip("Show images whose prompt contains all these words")
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("GalleryModelFilter")
        self.model_combo.setToolTip("Show images made with one model")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.favourites_button = QToolButton()
        self.favourites_button.setObjectName("GalleryFavouritesFilter")
        self.favourites_button.setText("★ Favourites")
        self.favourites_button.setCheckable(True)
        self.favourites_button.setToolTip("Show only favourite images")
        self.count_label = QLabel()
        self.count_label.setObjectName("GalleryCount")
        filters.addWidget(self.search_edit, 1)
        filters.addWidget(self.model_combo)
        filters.addWidget(self.favourites_button)
        filters.addWidget(self.count_label)
        layout.addLayout(filters)

        self.toolbar = QToolBar()
        self.toolbar.setObjectName("GalleryToolbar")
        self.toolbar.setIconSize(QSize(16, 16))
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        layout.addWidget(self.toolbar)

        self.view = GalleryGrid(self.model)
        self.params_view = QPlainTextEdit()
        self.params_view.setObjectName("GalleryParameters")
        self.params_view.setReadOnly(True)
        self.params_view.setPlaceholderText("Select an image to see its settings.")
        self.params_view.setToolTip("The settings stored in the selected image")
        # Side by side: in a strip under the canvas every pixel of height is a row of images.
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setObjectName("GallerySplitter")
        splitter.addWidget(self.view)
        splitter.addWidget(self.params_view)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([720, 260])
        layout.addWidget(splitter, 1)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.apply_filter)
        self.search_edit.textChanged.connect(self._search_timer.start)
        self.model_combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.favourites_button.toggled.connect(lambda _on: self.apply_filter())
        self.view.doubleClicked.connect(lambda index: self.open_item(index.row()))
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        self.model.modelReset.connect(self._on_selection)

    def _context_menu(self, pos: QPoint) -> None:
        if not self.view.indexAt(pos).isValid():
            return
        self.context_menu().popup(self.view.viewport().mapToGlobal(pos))

    def context_menu(self) -> QMenu:
        """The actions on the selection, as a menu (shown on right-click)."""
        return self.gallery_actions.menu(self)

    def height_for_rows(self, rows: int) -> int:
        """The panel's height that shows ``rows`` full rows of thumbnails in the grid."""
        layout = self.layout()
        margins = layout.contentsMargins()
        chrome = self._filters.sizeHint().height() + self.toolbar.sizeHint().height()
        return (
            margins.top()
            + margins.bottom()
            + 2 * layout.spacing()
            + chrome
            + self.view.rows_height(rows)
        )

    @property
    def root(self) -> Path:
        """The folder shown (the previous one until a ``set_root`` is ready)."""
        return self.gallery.root

    # -- filters ---------------------------------------------------------------------------
    def current_filter(self) -> GalleryFilter:
        model = self.model_combo.currentText() if self.model_combo.currentIndex() > 0 else None
        return GalleryFilter(
            text=self.search_edit.text().strip(),
            model=model,
            favourites=self.favourites_button.isChecked(),
        )

    def apply_filter(self) -> None:
        """Re-query with the search box and filters (the search box calls it debounced)."""
        self._search_timer.stop()
        wanted = self.current_filter()
        if wanted != self.model.filter:
            self.model.set_filter(wanted)

    def refresh_models(self) -> None:
        """Refill the model filter from the index, keeping the chosen model."""
        if self.gallery.closed:
            return
        chosen = self.model_combo.currentText() if self.model_combo.currentIndex() > 0 else ""
        names = self.gallery.models()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(ALL_MODELS)
        self.model_combo.addItems(names)
        self.model_combo.setCurrentIndex(names.index(chosen) + 1 if chosen in names else 0)
        self.model_combo.blockSignals(False)
        if chosen and chosen not in names:
            self.apply_filter()

    def _update_count(self, *_args: Any) -> None:
        total = self.model.total
        self.count_label.setText(f"{total} image{'s' if total != 1 else ''}")

    # -- results, folders and sync ---------------------------------------------------------
    def add_results(self, saved: list) -> int:
        """Show freshly saved images (``GalleryItem``s or paths) at the top; returns the
        rows added (images of another folder than the one shown are skipped)."""
        if self._closed:
            return 0
        added = self.model.add_items(saved)
        names = {getattr(item, "model", "") for item in saved}
        if any(name and self.model_combo.findText(name) < 0 for name in names) or not all(
            isinstance(item, GalleryItem) for item in saved
        ):
            self.refresh_models()
        self._update_count()
        return added

    def set_root(self, path: Path) -> None:
        """Show the gallery of another output folder.

        Its index is opened and synced on a worker thread; the view keeps showing the old
        folder until the new one is ready, then switches and emits ``index_synced``. A
        later call wins over one still in progress.
        """
        if self._closed:
            return
        self._root_generation += 1
        generation = self._root_generation
        wanted = Path(path)

        def superseded() -> bool:
            return stop_requested() or generation != self._root_generation

        def work() -> tuple[Gallery, int, int, FirstPage]:
            gallery = Gallery(root=wanted)
            with self._opening_lock:
                self._opening.append(gallery)
            try:
                added, removed = gallery.sync(should_stop=superseded)
                # The strip's first page too: 200 rows made into items on the GUI thread
                # took up to 40 ms there while other threads wanted the GIL.
                first = self.model.read_first_page(gallery)
            except BaseException:
                with self._opening_lock:
                    self._opening.remove(gallery)
                gallery.close()
                raise
            return gallery, added, removed, first

        self.tasks.submit(
            work,
            name="open gallery",
            on_result=lambda result: self._on_root_ready(generation, result),
            on_error=lambda exc: self._on_task_error("The output folder could not be read", exc),
        )

    def _on_root_ready(self, generation: int, result: tuple[Gallery, int, int, FirstPage]) -> None:
        gallery, added, removed, first = result
        with self._opening_lock:
            self._opening.remove(gallery)
        if generation != self._root_generation or self._closed:
            gallery.close()
            return
        self._retired.append(self.gallery)
        self.undo_stack.clear()
        self._sync_again = False
        self.gallery = gallery
        self.model.set_gallery(gallery, first)
        self.refresh_models()
        self._update_actions()
        self.index_synced.emit(added, removed)

    def sync_in_background(self) -> None:
        """Bring the index in line with the folder on a worker thread, then reload."""
        if self._closed:
            return
        if self._syncing is self.gallery:
            self._sync_again = True  # one more pass after the running one
            return
        gallery = self._syncing = self.gallery
        self.tasks.submit(
            gallery.sync,
            should_stop=stop_requested,
            name="sync gallery",
            on_result=lambda counts: self._on_synced(gallery, *counts),
            on_error=lambda exc: self._on_sync_failed(gallery, exc),
        )

    def _on_synced(self, gallery: Gallery, added: int, removed: int) -> None:
        if self._syncing is gallery:
            self._syncing = None
        if gallery is not self.gallery:
            return
        if added or removed:
            self.refresh_models()
            self.model.reload()
        self.index_synced.emit(added, removed)
        if self._sync_again:
            self._sync_again = False
            self.sync_in_background()

    def _on_sync_failed(self, gallery: Gallery, exc: BaseException) -> None:
        if self._syncing is gallery:
            self._syncing = None
        if gallery is self.gallery:
            self._on_task_error("The gallery index could not be updated", exc)

    def _on_task_error(self, what: str, exc: BaseException) -> None:
        # A broken index or an unreadable folder must not take the window down.
        self.message.emit(f"{what}: {exc}.", "warning")

    def _close_retired(self) -> None:
        while self._retired:
            self._retired.pop().close()

    # -- selection -------------------------------------------------------------------------
    def selected_items(self) -> list[GalleryItem]:
        rows = sorted(i.row() for i in self.view.selectionModel().selectedIndexes())
        items = [self.model.item(r) for r in rows]
        return [item for item in items if item is not None]

    def current_item(self) -> GalleryItem | None:
        index = self.view.currentIndex()
        if index.isValid() and self.view.selectionModel().isSelected(index):
            return self.model.item(index.row())
        selected = self.selected_items()
        return selected[0] if selected else None

    def select_row(self, row: int) -> None:
        index = self.model.index(row)
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)

    def _on_selection(self) -> None:
        item = self.current_item()
        self.params_view.setPlainText(infotext(item.path) if item else "")
        self._update_actions()

    def _update_actions(self) -> None:
        self.gallery_actions.update(self.current_item() is not None, bool(self.undo_stack))

    # -- actions (see gallery_actions): the strip's selection -------------------------------
    def open_current(self) -> None:
        item = self.current_item()
        if item is not None:
            self.open_item(self.model.row_of(item.path))

    def open_item(self, row: int) -> None:
        """Show row ``row`` large (``open_requested``) and its settings in the side view."""
        item = self.model.item(row)
        if item is None or not self.check_exists(item):
            return
        text = infotext(item.path)
        self.params_view.setPlainText(text)
        self.open_requested.emit(str(item.path), text)

    def reuse_current(self, keep_seed: bool) -> None:
        item = self.current_item()
        if item is not None:
            self.reuse_item(item, keep_seed)

    def send_to_img2img(self) -> None:
        item = self.current_item()
        if item is not None:
            self.send_item_to_img2img(item)

    def upscale_current(self) -> None:
        item = self.current_item()
        if item is not None:
            self.upscale_item(item)

    def copy_image(self) -> None:
        item = self.current_item()
        if item is not None:
            self.copy_item_image(item)

    def copy_parameters(self) -> None:
        item = self.current_item()
        if item is not None:
            self.copy_item_parameters(item)

    def reveal(self) -> None:
        item = self.current_item()
        if item is not None:
            self.reveal_item(item)

    def toggle_favourite(self) -> None:
        items = self.selected_items()
        if items:
            current = self.current_item() or items[0]
            self.set_favourites(items, not current.favourite)

    def delete_selected(self) -> list[DeletedFile]:
        """Move the selected images away, drop them from the index and the view."""
        return self.delete_items(self.selected_items())

    def export_selected(self, folder: Path | str | None = None) -> Task | None:
        """Copy the selected images to ``folder`` (asks for one when None)."""
        return self.export_items(self.selected_items(), folder)

    # -- actions on given images (the strip's and the browser's) -----------------------------
    def check_exists(self, item: GalleryItem) -> bool:
        """True when ``item``'s file is there; otherwise says so (``message``)."""
        if item.path.is_file():
            return True
        self.message.emit(
            f"{item.path.name} is missing: it was deleted or moved outside Sandstorm. "
            "The gallery drops it at its next sync.",
            "warning",
        )
        return False

    def reuse_item(self, item: GalleryItem, keep_seed: bool) -> None:
        request = reusable_request(item, keep_seed)
        if request is None:
            self.message.emit(f"{item.path.name}: {NO_SETTINGS}", "warning")
            return
        self.reuse_requested.emit(request, keep_seed)

    def send_item_to_img2img(self, item: GalleryItem) -> None:
        if self.check_exists(item):
            self.send_to_img2img_requested.emit(str(item.path))

    def upscale_item(self, item: GalleryItem) -> None:
        if self.check_exists(item):
            self.upscale_requested.emit(str(item.path))

    def copy_item_image(self, item: GalleryItem) -> None:
        if self.check_exists(item) and not copy_image_to_clipboard(item.path):
            self.message.emit(f"{item.path.name} could not be read.", "error")

    def copy_item_parameters(self, item: GalleryItem) -> None:
        if self.check_exists(item):
            copy_parameters_to_clipboard(item.path)

    def reveal_item(self, item: GalleryItem) -> None:
        self.open_url(folder_url(item.path))

    def set_favourites(self, items: Sequence[GalleryItem], flag: bool) -> None:
        """Mark or unmark ``items`` as favourites (``favourites_changed``)."""
        changed = [str(item.path) for item in items if self.model.set_favourite(item.path, flag)]
        if self.model.filter.favourites and not flag:
            self.model.reload()
        if changed:
            self.favourites_changed.emit(changed, flag)

    def delete_items(self, items: Sequence[GalleryItem]) -> list[DeletedFile]:
        """Move ``items`` away (undo brings them back), drop them from the index and the
        view (``images_removed``). Files already gone only leave the index."""
        deleted: list[DeletedFile] = []
        removed: list[str] = []
        for item in items:
            if item.path.is_file():
                try:
                    deleted.append(self.bin.delete(item))
                except OSError as exc:
                    self.message.emit(
                        f"{item.path.name} could not be deleted: {describe_os_error(exc)}.",
                        "error",
                    )
                    continue
            self.gallery.forget(item.path)
            self.model.remove_path(item.path)
            removed.append(str(item.path))
        if deleted:
            self.undo_stack.append(deleted)
            count = len(deleted)
            self.message.emit(f"Deleted {count} image{'s' if count != 1 else ''}.", "info")
        self._update_actions()
        if removed:
            self.images_removed.emit(removed)
        return deleted

    def export_items(
        self, items: Sequence[GalleryItem], folder: Path | str | None = None
    ) -> Task | None:
        """Copy ``items``' files (their settings are stored in them) into ``folder`` on a
        worker thread, never overwriting a file there; asks for the folder when None.
        The outcome comes as a ``message``. Returns the task (None when nothing to do)."""
        if not items or self._closed:
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export the images to…")
            if not folder:
                return None
        target = Path(folder)
        return self.tasks.submit(
            export_files,
            [item.path for item in items],
            target,
            name="export images",
            on_result=self._on_exported,
            on_error=lambda exc: self.message.emit(
                f"The images could not be exported to {target}: "
                f"{describe_os_error(exc) if isinstance(exc, OSError) else exc}.",
                "error",
            ),
        )

    def _on_exported(self, result: ExportResult) -> None:
        count = len(result.copied)
        text = f"Exported {count} image{'s' if count != 1 else ''} to {result.folder}."
        if not result.failed:
            self.message.emit(text, "info")
            return
        names = ", ".join(f"{path.name} ({why})" for path, why in result.failed[:3])
        more = f" and {len(result.failed) - 3} more" if len(result.failed) > 3 else ""
        self.message.emit(f"{text} Not exported: {names}{more}.", "warning")

    def undo_delete(self) -> list[Path]:
        """Bring back the images deleted last; returns the restored paths.

        The files are moved back at once; re-indexing them runs on a worker thread, after
        which the view reloads, selects the first one and ``index_synced`` is emitted.
        """
        if not self.undo_stack or self._closed:
            return []
        batch = self.undo_stack.pop()
        restored: list[Path] = []
        for entry in batch:
            try:
                self.bin.restore(entry)
            except OSError as exc:
                self.message.emit(
                    f"{entry.original.name} could not be restored: {exc.strerror or exc}.",
                    "error",
                )
                continue
            restored.append(entry.original)
        self._update_actions()
        if not restored:
            return restored
        gallery = self.gallery
        favourites = [e.original for e in batch if e.original in restored and e.item.favourite]

        def work() -> int:
            # The files kept their modification time, so they sort where they were.
            items = gallery.index_files(restored)
            for path in favourites:
                gallery.set_favourite(path, True)
            return len(items)

        self.tasks.submit(
            work,
            name="index restored images",
            on_result=lambda count: self._on_restored(gallery, batch, restored, count),
            on_error=lambda exc: self._on_task_error("The restored images were not indexed", exc),
        )
        return restored

    def _on_restored(
        self, gallery: Gallery, batch: list[DeletedFile], restored: list[Path], count: int
    ) -> None:
        if gallery is not self.gallery:
            return
        # Restored images bring back their model only when the filter no longer lists it.
        if any(self.model_combo.findText(e.item.model) < 0 for e in batch if e.item.model):
            self.refresh_models()
        self.model.reload()
        row = self.model.row_of(restored[0])
        if row >= 0:
            self.select_row(row)
        self._update_actions()
        self.images_restored.emit([str(path) for path in restored])
        self.index_synced.emit(count, 0)

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop background work and wait for it (up to ``msecs``), empty the holding folder
        and close the index; True when everything stopped. Safe to call twice."""
        if self._closed:
            return True
        self._closed = True
        self._search_timer.stop()
        done = self.tasks.shutdown(msecs)
        done = self.loader.shutdown(msecs) and done
        self.bin.purge()
        with self._opening_lock:
            opened, self._opening = self._opening, []
        for gallery in opened:
            gallery.close()
        self._close_retired()
        if done:
            # A task still running past the deadline may use it; the process ends soon.
            self.gallery.close()
        return done
