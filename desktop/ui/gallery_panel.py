"""The gallery panel: a thumbnail grid of the output folder, searchable, with actions.

``install_gallery(window)`` docks it on the main window and wires it to the window's
public API; ``offer_parameters_from_file(window, path)`` offers the settings stored in any
dropped image. Deleting moves files to the system trash (or, where there is none, to a
holding folder private to this run) so "Undo delete" can bring them back until quit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QDesktopServices,
    QFont,
    QGuiApplication,
    QKeySequence,
    QPainter,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPlainTextEdit,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine import paths
from desktop.engine.gallery import Gallery, GalleryItem
from desktop.engine.metadata import PARAMETERS_KEY, format_parameters, read_metadata
from desktop.engine.request import GenerationRequest
from desktop.ui.gallery_model import (
    FavouriteRole,
    GalleryFilter,
    GalleryModel,
    read_image,
)
from desktop.ui.thumbnails import ThumbnailLoader

SEARCH_DELAY_MS = 250
ALL_MODELS = "All models"
#: Holding folders of runs that ended without cleaning up (a crash) go after this long.
STALE_HOLDING_SECONDS = 24 * 3600
NO_SETTINGS = "No generation settings are stored in this image."


# -- deleting with undo ------------------------------------------------------------------------
@dataclass(frozen=True)
class DeletedFile:
    """A deleted image and where it went: the system trash or this run's holding folder."""

    original: Path
    held_at: Path
    item: GalleryItem
    in_trash: bool


class DeleteBin:
    """Moves files out of the gallery so they can be restored during this run.

    Args:
        use_trash: try the system trash first (``QFile.moveToTrash``); with False, or where
            the platform has no trash, files go to a holding folder under the cache that
            ``purge`` empties when the application quits.
    """

    def __init__(self, use_trash: bool = True) -> None:
        self.use_trash = use_trash
        base = paths.cache_dir() / "deleted"
        self.folder = base / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _remove_stale_holding(base)

    def delete(self, item: GalleryItem) -> DeletedFile:
        """Move ``item``'s file away; raises ``OSError`` when it cannot be moved."""
        source = Path(item.path)
        if self.use_trash:
            from PySide6.QtCore import QFile

            ok, trashed = QFile.moveToTrash(str(source))
            if ok and trashed:
                return DeletedFile(source, Path(trashed), item, in_trash=True)
            if ok:
                # Trashed, but the platform did not say where: it can only be restored by hand.
                return DeletedFile(source, Path(), item, in_trash=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{uuid.uuid4().hex[:8]}-{source.name}"
        shutil.move(str(source), str(target))
        return DeletedFile(source, target, item, in_trash=False)

    def restore(self, entry: DeletedFile) -> None:
        """Put a deleted file back where it was.

        Raises:
            FileExistsError: another file took its name meanwhile.
            FileNotFoundError: the trash was emptied (or the holding copy is gone).
        """
        if not entry.held_at.name or not entry.held_at.exists():
            raise FileNotFoundError(f"{entry.original.name} is no longer in the trash.")
        if entry.original.exists():
            raise FileExistsError(f"another file named {entry.original.name} exists now")
        entry.original.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(entry.held_at), str(entry.original))
        if entry.in_trash:
            # freedesktop trashes keep a matching info file; without it the trash lists a
            # ghost entry for the restored image.
            info = entry.held_at.parent.parent / "info" / f"{entry.held_at.name}.trashinfo"
            with contextlib.suppress(OSError):
                info.unlink()

    def purge(self) -> None:
        """Delete the holding folder for good (the application is quitting)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_stale_holding(base: Path) -> None:
    cutoff = time.time() - STALE_HOLDING_SECONDS
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)


# -- metadata helpers --------------------------------------------------------------------------
def infotext(path: Path | str) -> str:
    """The ``parameters`` text of an image (AUTOMATIC1111 layout), or a note saying none."""
    meta = read_metadata(path)
    text = meta.raw.get(PARAMETERS_KEY, "").strip()
    if text:
        return text
    if meta.request is not None:
        return format_parameters(meta.request, meta.model_name or None, meta.model_hash or None)
    return NO_SETTINGS


def stored_request(path: Path | str) -> GenerationRequest | None:
    """The request stored in an image, or None."""
    return read_metadata(path).request


def apply_request(window: Any, request: GenerationRequest, keep_seed: bool) -> bool:
    """Fill the window's panels from ``request``; the seed becomes -1 unless ``keep_seed``.

    Uses ``window.apply_request(request, keep_seed=...)`` when the window has it, else the
    panels' public setters. Returns False when the window offers neither.
    """
    if not keep_seed:
        request = replace(request, seed=-1)
    method = getattr(window, "apply_request", None)
    if callable(method):
        method(request, keep_seed=keep_seed)
        return True
    prompt_panel = getattr(window, "prompt_panel", None)
    sampler_panel = getattr(window, "sampler_panel", None)
    if prompt_panel is None or sampler_panel is None:
        return False
    prompt_panel.set_prompt(request.prompt, request.negative_prompt)
    missing = ""
    if request.model:
        key = _installed_model(window, request.model)
        if key:
            prompt_panel.set_models(window.models, select=key)
        else:
            missing = Path(request.model).name
    # After the model: choosing a model of another family resets the size.
    sampler_panel.set_sampler(request.sampler, request.schedule)
    sampler_panel.steps_spin.setValue(request.steps)
    sampler_panel.cfg_spin.setValue(request.cfg_scale)
    sampler_panel.set_size(request.width, request.height)
    sampler_panel.set_seed(request.seed)
    img2img = getattr(window, "img2img_panel", None)
    if img2img is not None and request.is_img2img:
        img2img.set_strength(request.strength)
    if missing and hasattr(window, "show_message"):
        window.show_message(
            f"The model {missing} is not installed here; the other settings were applied.",
            "warning",
        )
    return True


def _installed_model(window: Any, wanted: str) -> str:
    """The picker key of the usable model ``wanted`` names (path, name or file stem), or ""."""
    stem = Path(wanted).stem if Path(wanted).suffix else Path(wanted).name
    for info in getattr(window, "models", []):
        if not info.usable:
            continue
        if wanted in (str(info.path), info.name) or stem in (info.name, Path(info.path).stem):
            return str(info.path)
    return ""


# -- view --------------------------------------------------------------------------------------
class GalleryDelegate(QStyledItemDelegate):
    """Draws the thumbnail as usual plus a star on favourites."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        super().paint(painter, option, index)
        if not index.data(FavouriteRole):
            return
        painter.save()
        font = QFont(painter.font())
        font.setPixelSize(20)
        painter.setFont(font)
        rect = option.rect.adjusted(4, 2, -6, -4)
        painter.setPen(QColor(0, 0, 0, 160))
        painter.drawText(
            rect.translated(1, 1), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight, "★"
        )
        painter.setPen(QColor(255, 200, 40))
        painter.drawText(rect, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight, "★")
        painter.restore()


class GalleryPanel(QWidget):
    """Thumbnail grid of a ``Gallery`` with search, filters and actions on the selection.

    Signals:
        reuse_requested(object, bool): a ``GenerationRequest`` to put in the panels, and
            whether to keep its seed (False: the caller gets it with seed -1).
        send_to_img2img_requested(str): an image path to use as the init image.
        open_requested(str, str): an image path to show large, and its parameters text.
        message(str, str): text and level ("error", "warning", "info") for the window.
        index_synced(int, int): a background sync finished (added or changed, removed).
    """

    reuse_requested = Signal(object, bool)
    send_to_img2img_requested = Signal(str)
    open_requested = Signal(str, str)
    message = Signal(str, str)
    index_synced = Signal(int, int)

    def __init__(
        self,
        gallery: Gallery,
        loader: ThumbnailLoader | None = None,
        delete_bin: DeleteBin | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("GalleryPanel")
        self.gallery = gallery
        self.loader = loader if loader is not None else ThumbnailLoader(parent=self)
        self.bin = delete_bin if delete_bin is not None else DeleteBin()
        self.undo_stack: list[list[DeletedFile]] = []
        self.open_url: Callable[[QUrl], Any] = QDesktopServices.openUrl
        self._closed = False
        self.model = GalleryModel(gallery, self.loader, parent=self)

        self._build()
        self._build_actions()
        self.model.modelReset.connect(self._update_count)
        self.model.rowsInserted.connect(self._update_count)
        self.model.rowsRemoved.connect(self._update_count)
        self.index_synced.connect(self._on_synced)
        self.refresh_models()
        self._update_count()
        self._update_actions()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)

        filters = QHBoxLayout()
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

        self.view = QListView()
        self.view.setObjectName("GalleryView")
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setWrapping(True)
        self.view.setUniformItemSizes(True)
        # Lays out large result sets in slices so the window stays responsive.
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(200)
        self.view.setIconSize(QSize(128, 128))
        self.view.setGridSize(QSize(140, 140))
        self.view.setSpacing(4)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setDragEnabled(True)
        self.view.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.view.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.setItemDelegate(GalleryDelegate(self.view))
        self.view.setModel(self.model)

        self.params_view = QPlainTextEdit()
        self.params_view.setObjectName("GalleryParameters")
        self.params_view.setReadOnly(True)
        self.params_view.setPlaceholderText("Select an image to see its settings.")
        self.params_view.setToolTip("The settings stored in the selected image")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(self.params_view)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
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

    def _action(self, text: str, tip: str, slot: Callable[[], Any], keys: Any = None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
            # Only while the grid has focus: Delete, F or Ctrl+C typed in the search box (or
            # the prompt box) must edit text, not act on images.
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.view.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.open_action = self._action(
            "Open",
            "Show the image large in the canvas with its settings",
            self.open_current,
            Qt.Key.Key_Return,
        )
        self.reuse_action = self._action(
            "Reuse",
            "Put this image's settings in the panels (with a random seed)",
            lambda: self.reuse_current(keep_seed=False),
        )
        self.reuse_seed_action = self._action(
            "Reuse with seed",
            "Put this image's settings in the panels, seed included",
            lambda: self.reuse_current(keep_seed=True),
        )
        self.img2img_action = self._action(
            "To img2img", "Use this image as the image-to-image input", self.send_to_img2img
        )
        self.copy_image_action = self._action(
            "Copy image",
            "Copy the image to the clipboard",
            self.copy_image,
            QKeySequence.StandardKey.Copy,
        )
        self.copy_params_action = self._action(
            "Copy settings",
            "Copy the image's settings as text (AUTOMATIC1111 format)",
            self.copy_parameters,
            "Ctrl+Shift+C",
        )
        self.reveal_action = self._action(
            "Show in folder",
            "Open the folder holding this image in the file manager",
            self.reveal,
        )
        self.favourite_action = self._action(
            "★ Favourite",
            "Mark or unmark the selected images as favourites",
            self.toggle_favourite,
            "F",
        )
        self.delete_action = self._action(
            "Delete",
            "Move the selected images to the trash (Undo brings them back)",
            self.delete_selected,
            QKeySequence.StandardKey.Delete,
        )
        self.undo_action = self._action(
            "Undo delete",
            "Bring back the images deleted last",
            self.undo_delete,
            QKeySequence.StandardKey.Undo,
        )
        for action in (
            self.reuse_action,
            self.reuse_seed_action,
            self.img2img_action,
            self.copy_image_action,
            self.copy_params_action,
            self.reveal_action,
            self.favourite_action,
            self.delete_action,
            self.undo_action,
        ):
            self.toolbar.addAction(action)

    def _context_menu(self, pos: QPoint) -> None:
        if not self.view.indexAt(pos).isValid():
            return
        self.context_menu().popup(self.view.viewport().mapToGlobal(pos))

    def context_menu(self) -> QMenu:
        """The actions on the selection, as a menu (shown on right-click)."""
        menu = QMenu(self)
        for action in (
            self.open_action,
            self.reuse_action,
            self.reuse_seed_action,
            self.img2img_action,
            None,
            self.copy_image_action,
            self.copy_params_action,
            self.reveal_action,
            None,
            self.favourite_action,
            self.delete_action,
            self.undo_action,
        ):
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        return menu

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
        chosen = self.model_combo.currentText() if self.model_combo.currentIndex() > 0 else ""
        names = self.gallery.models()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(ALL_MODELS)
        self.model_combo.addItems(names)
        self.model_combo.setCurrentIndex(names.index(chosen) + 1 if chosen in names else 0)
        self.model_combo.blockSignals(False)

    def _update_count(self, *_args: Any) -> None:
        total = self.model.total
        self.count_label.setText(f"{total} image{'s' if total != 1 else ''}")

    # -- results and sync ------------------------------------------------------------------
    def add_results(self, saved: list) -> int:
        """Show freshly saved images (``GalleryItem``s or paths) at the top."""
        added = self.model.add_items(saved)
        names = {getattr(item, "model", "") for item in saved}
        if any(name and self.model_combo.findText(name) < 0 for name in names) or not all(
            isinstance(item, GalleryItem) for item in saved
        ):
            self.refresh_models()
        self._update_count()
        return added

    def set_gallery(self, gallery: Gallery) -> None:
        """Show another gallery (the output folder changed); the caller owns both."""
        self.undo_stack.clear()
        self.gallery = gallery
        self.model.gallery = gallery
        self.refresh_models()
        self.model.reload()
        self.sync_in_background()

    def sync_in_background(self) -> None:
        """Bring the index in line with the folder on a pool thread, then reload."""

        def work() -> None:
            try:
                added, removed = self.gallery.sync()
            except Exception as exc:  # a broken index must not take the window down
                self.message.emit(f"The gallery index could not be updated: {exc}.", "warning")
                return
            self.index_synced.emit(added, removed)

        self.loader.pool.start(work)

    def _on_synced(self, added: int, removed: int) -> None:
        if added or removed:
            self.refresh_models()
            self.model.reload()

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
        has = self.current_item() is not None
        for action in (
            self.open_action,
            self.reuse_action,
            self.reuse_seed_action,
            self.img2img_action,
            self.copy_image_action,
            self.copy_params_action,
            self.reveal_action,
            self.favourite_action,
            self.delete_action,
        ):
            action.setEnabled(has)
        self.undo_action.setEnabled(bool(self.undo_stack))

    # -- actions ---------------------------------------------------------------------------
    def open_current(self) -> None:
        item = self.current_item()
        if item is not None:
            self.open_item(self.model.row_of(item.path))

    def open_item(self, row: int) -> None:
        """Show row ``row`` large (``open_requested``) and its settings in the side view."""
        item = self.model.item(row)
        if item is None:
            return
        text = infotext(item.path)
        self.params_view.setPlainText(text)
        self.open_requested.emit(str(item.path), text)

    def reuse_current(self, keep_seed: bool) -> None:
        item = self.current_item()
        if item is None:
            return
        request = stored_request(item.path)
        if request is None:
            self.message.emit(f"{item.path.name}: {NO_SETTINGS}", "warning")
            return
        if not keep_seed:
            request = replace(request, seed=-1)
        self.reuse_requested.emit(request, keep_seed)

    def send_to_img2img(self) -> None:
        item = self.current_item()
        if item is not None:
            self.send_to_img2img_requested.emit(str(item.path))

    def copy_image(self) -> None:
        item = self.current_item()
        if item is None:
            return
        image = read_image(item.path)
        if image.isNull():
            self.message.emit(f"{item.path.name} could not be read.", "error")
            return
        QGuiApplication.clipboard().setImage(image)

    def copy_parameters(self) -> None:
        item = self.current_item()
        if item is not None:
            QGuiApplication.clipboard().setText(infotext(item.path))

    def reveal(self) -> None:
        item = self.current_item()
        if item is not None:
            self.open_url(QUrl.fromLocalFile(str(item.path.parent)))

    def toggle_favourite(self) -> None:
        items = self.selected_items()
        if not items:
            return
        current = self.current_item() or items[0]
        flag = not current.favourite
        for item in items:
            self.model.set_favourite(item.path, flag)
        if self.model.filter.favourites and not flag:
            self.model.reload()

    def delete_selected(self) -> list[DeletedFile]:
        """Move the selected images away, drop them from the index and the view."""
        deleted: list[DeletedFile] = []
        for item in self.selected_items():
            try:
                entry = self.bin.delete(item)
            except OSError as exc:
                self.message.emit(
                    f"{item.path.name} could not be deleted: {exc.strerror or exc}.", "error"
                )
                continue
            self.gallery.forget(item.path)
            self.model.remove_path(item.path)
            deleted.append(entry)
        if deleted:
            self.undo_stack.append(deleted)
            count = len(deleted)
            self.message.emit(
                f"Deleted {count} image{'s' if count != 1 else ''}.",
                "info",
            )
        self._update_actions()
        return deleted

    def undo_delete(self) -> list[Path]:
        """Bring back the images deleted last; returns the restored paths."""
        if not self.undo_stack:
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
        if restored:
            # The file keeps its modification time, so a sync indexes it as before.
            self.gallery.sync()
            for entry in batch:
                if entry.original in restored and entry.item.favourite:
                    self.gallery.set_favourite(entry.original, True)
            self.model.reload()
            row = self.model.row_of(restored[0])
            if row >= 0:
                self.select_row(row)
        self._update_actions()
        return restored

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop thumbnail work, wait for it and empty the holding folder; safe twice."""
        if self._closed:
            return True
        self._closed = True
        self._search_timer.stop()
        done = self.loader.shutdown(msecs)
        self.bin.purge()
        return done


# -- window integration ------------------------------------------------------------------------
class _CloseWatcher(QObject):
    """Shuts the panel down when its window closes (the pool must not outlive it)."""

    def __init__(self, panel: GalleryPanel, window: QObject) -> None:
        super().__init__(panel)
        self._panel = panel
        window.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self._panel.shutdown()
        return False


def install_gallery(window: Any, gallery: Gallery | None = None) -> GalleryPanel:
    """Dock a gallery panel on ``window`` and wire it to the window's public API.

    Uses, when the window has them: ``add_dock``, ``results_saved``,
    ``apply_request(request, keep_seed=...)`` (else the panels' setters),
    ``set_init_image(path)`` (else ``img2img_panel.set_image``),
    ``show_image(path, infotext)`` (else ``canvas.set_image``),
    ``show_message(text, level, action)`` and ``output_dir_changed(str)``. A missing one
    only disables that feature.
    """
    if gallery is None:
        settings = getattr(window, "settings", None)
        root = settings.output_path if settings is not None else None
        gallery = Gallery(root=root)
    panel = GalleryPanel(gallery)
    add_dock = getattr(window, "add_dock", None)
    if callable(add_dock):
        add_dock(panel, "Gallery", Qt.DockWidgetArea.BottomDockWidgetArea, "GalleryDock")

    results_saved = getattr(window, "results_saved", None)
    if results_saved is not None:
        results_saved.connect(panel.add_results)

    panel.reuse_requested.connect(
        lambda request, keep: apply_request(window, request, keep_seed=keep)
    )
    panel.send_to_img2img_requested.connect(lambda path: _set_init_image(window, path))
    panel.open_requested.connect(lambda path, text: _show_image(window, path, text))
    if hasattr(window, "show_message"):
        panel.message.connect(lambda text, level: window.show_message(text, level))
    output_dir_changed = getattr(window, "output_dir_changed", None)
    if output_dir_changed is not None:
        output_dir_changed.connect(lambda folder: panel.set_gallery(Gallery(root=folder)))

    _CloseWatcher(panel, window)
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(panel.shutdown)
    panel.sync_in_background()
    return panel


def _set_init_image(window: Any, path: str) -> None:
    method = getattr(window, "set_init_image", None)
    if callable(method):
        method(path)
        return
    panel = getattr(window, "img2img_panel", None)
    if panel is not None:
        panel.set_image(path)


def _show_image(window: Any, path: str, text: str) -> None:
    method = getattr(window, "show_image", None)
    if callable(method):
        method(path, text)
        return
    canvas = getattr(window, "canvas", None)
    if canvas is None:
        return
    image = read_image(path)
    if image.isNull():
        if hasattr(window, "show_message"):
            window.show_message(f"{Path(path).name} could not be read.")
        return
    canvas.set_image(image)


def offer_parameters_from_file(window: Any, path: Path | str) -> bool:
    """If ``path`` carries generation settings, offer "Use its parameters" in the window.

    The offer is the window's non-blocking message bar; its button fills the panels with
    the stored settings, seed included. Returns False (and shows nothing) when the image
    has no usable settings or the window has no message bar.
    """
    meta = read_metadata(path)
    if meta.request is None or not hasattr(window, "show_message"):
        return False
    request = meta.request
    source = {
        "sandstorm": "Sandstorm",
        "a1111": "AUTOMATIC1111-style",
        "comfyui": "ComfyUI",
        "invokeai": "InvokeAI",
    }.get(meta.source, meta.source)
    window.show_message(
        f"{Path(path).name} carries {source} generation settings.",
        "info",
        action=("Use its parameters", lambda: apply_request(window, request, keep_seed=True)),
    )
    return True
