"""The gallery as a Qt list model: index search results, paged in as the view scrolls.

Rows are ``GalleryItem``s from ``Gallery.search`` (newest first). Only the first page is
read when a filter changes; ``fetchMore`` reads the next page when the view scrolls near
the end, so a 10,000-image gallery costs one small query to show. Thumbnails are asked
for only when the view paints a row (``DecorationRole``), and arrive from the
``ThumbnailLoader``; new results are inserted at the top without a reload.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    QUrl,
)
from PySide6.QtGui import QColor, QImage, QImageReader, QPixmap

from desktop.engine.gallery import Gallery, GalleryItem
from desktop.ui.thumbnails import THUMB_SIZE, ThumbnailLoader

PAGE_SIZE = 200
#: Pixmaps kept in memory (about 64 MB at 256 px); the disk cache holds the rest.
PIXMAP_CACHE = 1000
ItemRole = Qt.ItemDataRole.UserRole + 1
PathRole = Qt.ItemDataRole.UserRole + 2
FavouriteRole = Qt.ItemDataRole.UserRole + 3
#: Longest side of the image put on the clipboard of a drag (full size would stall it).
DRAG_IMAGE_MAX = 2048

_Index = QModelIndex | QPersistentModelIndex


@dataclasses.dataclass(frozen=True)
class GalleryFilter:
    """What the gallery shows: words of the prompt, one model, favourites only."""

    text: str = ""
    model: str | None = None
    favourites: bool = False

    def matches(self, item: GalleryItem) -> bool:
        """The same test as ``Gallery.search``, for rows added without a query."""
        prompt = item.prompt.casefold()
        if any(word not in prompt for word in self.text.casefold().split()):
            return False
        if self.model and item.model != self.model:
            return False
        return not (self.favourites and not item.favourite)


def tooltip(item: GalleryItem) -> str:
    lines = [item.path.name]
    if item.prompt:
        prompt = item.prompt if len(item.prompt) <= 200 else item.prompt[:200] + "…"
        lines.append(prompt)
    details = []
    if item.model:
        details.append(item.model)
    if item.width and item.height:
        details.append(f"{item.width}×{item.height}")
    if item.seed is not None and item.seed >= 0:
        details.append(f"seed {item.seed}")
    if details:
        lines.append(" · ".join(details))
    lines.append(item.created_at.strftime("%Y-%m-%d %H:%M"))
    return "\n".join(lines)


class GalleryModel(QAbstractListModel):
    """Search results of a ``Gallery``, loaded a page at a time.

    Args:
        gallery: the index to read.
        loader: makes thumbnails; without one rows have only the placeholder icon.
        page_size: rows read per ``fetchMore``.
    """

    def __init__(
        self,
        gallery: Gallery,
        loader: ThumbnailLoader | None = None,
        page_size: int = PAGE_SIZE,
        parent: Any = None,
    ) -> None:
        super().__init__(parent)
        self.gallery = gallery
        self.loader = loader
        self.page_size = max(1, page_size)
        self.filter = GalleryFilter()
        self._items: list[GalleryItem] = []
        self._paths: set[str] = set()
        self._rows: dict[str, int] | None = None
        self._total = 0
        #: Rows read from the index for the current filter; the next page starts here.
        self._offset = 0
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._requested: set[str] = set()
        self._failed: set[str] = set()
        self.pages_fetched = 0
        self._placeholder = self._make_placeholder()
        if loader is not None:
            loader.thumbnail_ready.connect(self._on_thumbnail)
            loader.thumbnail_failed.connect(self._on_failed)
        self.reload()

    # -- loading ---------------------------------------------------------------------------
    def set_gallery(self, gallery: Gallery) -> None:
        """Show another gallery (another output folder); reads its first page."""
        self.gallery = gallery
        self._pixmaps.clear()
        self._failed.clear()
        self.reload()

    def set_filter(self, flt: GalleryFilter) -> None:
        """Show the images matching ``flt`` (reads the first page only)."""
        self.filter = flt
        self.reload()

    def reload(self) -> None:
        """Re-read the index for the current filter (first page only)."""
        if self.loader is not None:
            self.loader.clear()
        self.beginResetModel()
        self._items = []
        self._paths = set()
        self._rows = None
        self._offset = 0
        self.pages_fetched = 0
        self._requested.clear()
        f = self.filter
        if self.gallery.closed:
            self._total = 0
        else:
            self._total = self.gallery.count(f.text, f.model, f.favourites)
            self._append(self._read_page())
        self.endResetModel()

    def _read_page(self) -> list[GalleryItem]:
        f = self.filter
        page = self.gallery.search(
            f.text, f.model, f.favourites, limit=self.page_size, offset=self._offset
        )
        self._offset += len(page)
        self.pages_fetched += 1
        return [item for item in page if str(item.path) not in self._paths]

    def _append(self, items: list[GalleryItem]) -> None:
        self._items.extend(items)
        self._paths.update(str(item.path) for item in items)
        self._rows = None

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and self._offset < self._total and not self.gallery.closed

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:  # noqa: B008
        if not self.canFetchMore(parent):
            return
        page = self._read_page()
        if not page:
            # The index shrank behind our back (a sync removed files): stop paging.
            self._total = self._offset
            return
        start = len(self._items)
        self.beginInsertRows(QModelIndex(), start, start + len(page) - 1)
        self._append(page)
        self.endInsertRows()

    def fetch_all(self) -> None:
        """Read every remaining page (for "select all" and the benchmark)."""
        while self.canFetchMore():
            self.fetchMore()

    @property
    def total(self) -> int:
        """How many images match the filter (loaded or not)."""
        return max(self._total, len(self._items))

    # -- changes ---------------------------------------------------------------------------
    def add_items(self, saved: Iterable[GalleryItem | Path | str]) -> int:
        """Put newly saved images at the top (newest first); returns the rows added.

        Paths are looked up in the index; images of another folder, that do not match the
        filter or are already shown are skipped.
        """
        fresh: list[GalleryItem] = []
        for entry in saved:
            if self.gallery.closed:
                break
            item = entry if isinstance(entry, GalleryItem) else self.gallery.get(entry)
            if item is None or not self.gallery.contains(item.path):
                continue
            if not self.filter.matches(item):
                continue
            key = str(item.path)
            if key in self._paths or any(str(f.path) == key for f in fresh):
                continue
            # The new image is in the index and sorts before every page read so far, so
            # the next page starts one row later.
            self._offset += 1
            self._total += 1
            fresh.append(item)
        if not fresh:
            return 0
        fresh.sort(key=lambda i: (i.created, str(i.path)), reverse=True)
        self.beginInsertRows(QModelIndex(), 0, len(fresh) - 1)
        self._items[0:0] = fresh
        self._paths.update(str(item.path) for item in fresh)
        self._rows = None
        self.endInsertRows()
        return len(fresh)

    def remove_path(self, path: Path | str) -> GalleryItem | None:
        """Drop the row of ``path`` (after the file was deleted); returns its item."""
        row = self.row_of(path)
        if row < 0:
            return None
        self.beginRemoveRows(QModelIndex(), row, row)
        item = self._items.pop(row)
        self._paths.discard(str(item.path))
        self._rows = None
        self._offset = max(0, self._offset - 1)
        self._total = max(0, self._total - 1)
        self.endRemoveRows()
        self._pixmaps.pop(str(item.path), None)
        return item

    def update_item(self, item: GalleryItem) -> None:
        """Replace the row showing ``item.path`` (e.g. its favourite flag changed)."""
        row = self.row_of(item.path)
        if row < 0:
            return
        self._items[row] = item
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def set_favourite(self, path: Path | str, flag: bool) -> bool:
        """Mark ``path`` in the index and refresh its star; False when it is not indexed."""
        if not self.gallery.set_favourite(path, flag):
            return False
        row = self.row_of(path)
        if row >= 0:
            self.update_item(self._items[row].with_favourite(flag))
        return True

    # -- lookup ----------------------------------------------------------------------------
    def item(self, row: int) -> GalleryItem | None:
        return self._items[row] if 0 <= row < len(self._items) else None

    def items(self) -> list[GalleryItem]:
        return list(self._items)

    def row_of(self, path: Path | str) -> int:
        if self._rows is None:
            self._rows = {str(item.path): row for row, item in enumerate(self._items)}
        return self._rows.get(str(path), -1)

    def pixmap(self, path: Path | str) -> QPixmap | None:
        """The thumbnail shown for ``path``, or None while it is being made."""
        return self._pixmaps.get(str(path))

    # -- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DecorationRole:
            return self._decoration(str(item.path))
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip(item)
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return item.prompt or item.path.name
        if role == ItemRole:
            return item
        if role == PathRole:
            return str(item.path)
        if role == FavouriteRole:
            return item.favourite
        if role == Qt.ItemDataRole.SizeHintRole:
            return QSize(THUMB_SIZE // 2 + 12, THUMB_SIZE // 2 + 12)
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list", "application/x-qt-image"]

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        """File URLs of the dragged images, plus the first image's pixels.

        The URLs are what a file manager or the img2img drop zone use; the pixels serve
        applications that only accept image data (a chat window, an editor).
        """
        mime = QMimeData()
        rows = sorted({i.row() for i in indexes if i.isValid()})
        paths = [self._items[r].path for r in rows if 0 <= r < len(self._items)]
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        if paths:
            mime.setText(str(paths[0]))
            image = read_image(paths[0], DRAG_IMAGE_MAX)
            if not image.isNull():
                mime.setImageData(image)
        return mime

    # -- thumbnails ------------------------------------------------------------------------
    def _decoration(self, key: str) -> QPixmap:
        pixmap = self._pixmaps.get(key)
        if pixmap is not None:
            self._pixmaps.move_to_end(key)
            return pixmap
        if self.loader is not None and key not in self._failed:
            # Asked again on every paint while it is made: the loader moves it to the front.
            self.loader.request(key)
            self._requested.add(key)
        return self._placeholder

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        # Runs on the GUI thread (queued from the pool): the only place a QPixmap is made.
        self._requested.discard(path)
        if path not in self._paths:
            return
        self._pixmaps[path] = QPixmap.fromImage(image)
        self._pixmaps.move_to_end(path)
        while len(self._pixmaps) > PIXMAP_CACHE:
            self._pixmaps.popitem(last=False)
        row = self.row_of(path)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def _on_failed(self, path: str, _reason: str) -> None:
        self._requested.discard(path)
        self._failed.add(path)

    @staticmethod
    def _make_placeholder() -> QPixmap:
        side = THUMB_SIZE // 2
        pixmap = QPixmap(side, side)
        pixmap.fill(QColor(60, 60, 68))
        return pixmap


def read_image(path: Path | str, max_side: int = 0) -> QImage:
    """Read an image with Qt (EXIF orientation applied), optionally scaled to ``max_side``."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    if max_side:
        size = reader.size()
        if size.isValid() and max(size.width(), size.height()) > max_side:
            reader.setScaledSize(
                size.scaled(QSize(max_side, max_side), Qt.AspectRatioMode.KeepAspectRatio)
            )
    return reader.read()
