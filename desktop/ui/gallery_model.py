"""The gallery as models: index search results, read a page at a time.

``GalleryModel`` (the strip under the canvas) is a Qt list model: rows are ``GalleryItem``s
from ``Gallery.search`` (newest first). Only the first page is read when a filter changes;
``fetchMore`` reads the next page when the view scrolls near the end, so a 10,000-image
gallery costs one small query to show. Thumbnails are asked for only when the view paints a
row (``DecorationRole``), and arrive from the ``ThumbnailLoader``; new results are inserted
at the top without a reload.

``GalleryPages`` (the full-window browser) gives random access by position instead: the
days and their counts come from one grouped query (``Gallery.day_counts``), so a view can
lay out every day's header and cell of a 100,000-image result at once and read only the
pages it paints, wherever the user drags the scroll bar.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QImage, QImageReader, QPainter, QPixmap

from desktop.engine.gallery import Gallery, GalleryItem
from desktop.ui.threads import lower_priority
from desktop.ui.thumbnails import MAX_PENDING, MISSING_REASON, THUMB_SIZE, ThumbnailLoader

PAGE_SIZE = 200
#: Pixmaps kept in memory (about 64 MB at 256 px); the disk cache holds the rest.
PIXMAP_CACHE = 1000
#: Longest the browser spends turning arrived thumbnails into pixmaps in one turn of the
#: event loop (the rest wait for the next turn).
ARRIVAL_BUDGET_S = 0.004
ItemRole = Qt.ItemDataRole.UserRole + 1
PathRole = Qt.ItemDataRole.UserRole + 2
FavouriteRole = Qt.ItemDataRole.UserRole + 3
#: Longest side of the image put on the clipboard of a drag (full size would stall it).
DRAG_IMAGE_MAX = 2048
#: Pages the browser keeps read (a page is ``PAGE_SIZE`` items); older ones are read again.
MAX_PAGES = 40
#: Why a row has no thumbnail: its file is gone, or it cannot be decoded.
MISSING = "missing"
UNREADABLE = "unreadable"
#: The date filter's choices (``period_range``); the browser adds a custom range.
PERIODS = ("Any time", "Today", "Yesterday", "This week", "This month", "This year")

_Index = QModelIndex | QPersistentModelIndex


@dataclasses.dataclass(frozen=True)
class GalleryFilter:
    """What the gallery shows: words of the prompt, one model, favourites only, and the days
    from ``since`` to ``until`` (both included; None: no bound)."""

    text: str = ""
    model: str | None = None
    favourites: bool = False
    since: dt.date | None = None
    until: dt.date | None = None

    def matches(self, item: GalleryItem) -> bool:
        """The same test as ``Gallery.search``, for rows added without a query."""
        prompt = item.prompt.casefold()
        if any(word not in prompt for word in self.text.casefold().split()):
            return False
        if self.model and item.model != self.model:
            return False
        if self.favourites and not item.favourite:
            return False
        day = item.created_at.date()
        return (self.since is None or day >= self.since) and (
            self.until is None or day <= self.until
        )

    def query(self) -> dict[str, Any]:
        """The filter as ``Gallery.search`` / ``count`` / ``day_counts`` keywords."""
        return {
            "text": self.text,
            "model": self.model,
            "favourites": self.favourites,
            "since": self.since,
            "until": self.until,
        }


def period_range(period: str, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The days one of ``PERIODS`` covers, as (since, until); weeks start on Monday.

    Raises ``ValueError`` for a name that is not in ``PERIODS``.
    """
    if period == "Any time":
        return None, None
    if period == "Today":
        return today, today
    if period == "Yesterday":
        yesterday = today - dt.timedelta(days=1)
        return yesterday, yesterday
    if period == "This week":
        return today - dt.timedelta(days=today.weekday()), today
    if period == "This month":
        return today.replace(day=1), today
    if period == "This year":
        return today.replace(month=1, day=1), today
    raise ValueError(f"unknown period {period!r}")


def day_label(day: dt.date, today: dt.date) -> str:
    """A day header: "Today", "Yesterday", else e.g. "Monday 30 November 2026"."""
    if day == today:
        return "Today"
    if day == today - dt.timedelta(days=1):
        return "Yesterday"
    return f"{day:%A} {day.day} {day:%B %Y}"


def count_text(count: int) -> str:
    return f"{count} image{'s' if count != 1 else ''}"


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


@dataclasses.dataclass(frozen=True)
class FirstPage:
    """A count and first page read ahead of ``GalleryModel.set_gallery`` (off the GUI
    thread), and the filter they were read for."""

    filter: GalleryFilter
    total: int
    items: list[GalleryItem]


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
        #: Paths without a thumbnail, and why (``MISSING`` or ``UNREADABLE``).
        self._failed: dict[str, str] = {}
        self.pages_fetched = 0
        self._placeholder = self._make_placeholder()
        self._failure_pixmaps = {
            MISSING: placeholder_pixmap(THUMB_SIZE // 2, "Missing", "the file is gone"),
            UNREADABLE: placeholder_pixmap(THUMB_SIZE // 2, "Unreadable", "cannot be decoded"),
        }
        if loader is not None:
            loader.thumbnail_ready.connect(self._on_thumbnail)
            loader.thumbnail_failed.connect(self._on_failed)
        self.reload()

    # -- loading ---------------------------------------------------------------------------
    def set_gallery(self, gallery: Gallery, first: FirstPage | None = None) -> None:
        """Show another gallery (another output folder). Its first page is read here, or
        taken from ``first`` (``read_first_page`` on a worker thread, for this filter)."""
        self.gallery = gallery
        self._pixmaps.clear()
        self._failed.clear()
        self.reload(first if first is not None and first.filter == self.filter else None)

    def read_first_page(self, gallery: Gallery) -> FirstPage:
        """What ``reload`` reads of ``gallery`` for the filter shown now. Meant for the worker
        thread that opened ``gallery``; ``set_gallery`` reads again if the filter changed."""
        flt = self.filter
        query = flt.query()
        return FirstPage(flt, gallery.count(**query), gallery.search(**query, limit=self.page_size))

    def set_filter(self, flt: GalleryFilter) -> None:
        """Show the images matching ``flt`` (reads the first page only)."""
        self.filter = flt
        self.reload()

    def reload(self, first: FirstPage | None = None) -> None:
        """Re-read the index for the current filter (first page only), or show ``first``."""
        if self.loader is not None:
            # Only this model's requests: the browser shares the loader.
            self.loader.cancel(self._requested)
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
        elif first is not None:
            self._total = first.total
            self._offset = len(first.items)
            self.pages_fetched = 1
            self._append(first.items)
        else:
            self._total = self.gallery.count(**f.query())
            self._append(self._read_page())
        self.endResetModel()

    def _read_page(self) -> list[GalleryItem]:
        f = self.filter
        page = self.gallery.search(**f.query(), limit=self.page_size, offset=self._offset)
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

    def failure(self, path: Path | str) -> str | None:
        """Why ``path`` has no thumbnail (``MISSING``, ``UNREADABLE``), or None."""
        return self._failed.get(str(path))

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
        failure = self._failed.get(key)
        if failure is not None:
            return self._failure_pixmaps[failure]
        if self.loader is not None:
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

    def _on_failed(self, path: str, reason: str) -> None:
        self._requested.discard(path)
        if path not in self._paths:
            return
        self._failed[path] = failure_kind(reason)
        row = self.row_of(path)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    @staticmethod
    def _make_placeholder() -> QPixmap:
        side = THUMB_SIZE // 2
        pixmap = QPixmap(side, side)
        pixmap.fill(QColor(60, 60, 68))
        return pixmap


@dataclasses.dataclass(frozen=True)
class DaySection:
    """One day of the results: ``count`` images from position ``start`` on."""

    day: dt.date
    count: int
    start: int

    @property
    def stop(self) -> int:
        return self.start + self.count


class GalleryPages(QObject):
    """A gallery's search results by position, read a page at a time and grouped by day.

    The days and their counts come from one grouped query; the positions follow
    ``Gallery.search`` (newest first), so the images of ``sections[k]`` are at
    ``sections[k].start`` … ``stop - 1``. The last ``max_pages`` pages read stay in memory.

    Two ways in, for two kinds of callers:

    * the view, painting, asks with ``peek(i)`` and, for a page not in memory yet,
      ``request(i)``: the page is read on a worker thread and ``pages_arrived`` follows, so
      a paint never waits for the index; ``load(filter)`` reads a new filter's days and first
      page the same way (``reset`` when they are in; ``loading`` meanwhile);
    * actions and tests use ``item(i)`` and ``reload()``, which read at once.

    Thumbnails: ``thumbnail(path)`` returns the pixmap or asks the shared loader for it
    (the view asks for what it paints, so what is on screen comes first); ``failure(path)``
    says when there will be none. Call ``shutdown`` before it goes.

    Signals:
        reset(): the results were read again (other rows, days or gallery): lay out anew.
        item_changed(int): the row at this position has a new thumbnail or star.
        pages_arrived(int, int): the rows from the first to the last position were read.
        failed(str): a background read failed (why).
    """

    reset = Signal()
    item_changed = Signal(int)
    pages_arrived = Signal(int, int)
    failed = Signal(str)
    #: From the reader thread to this object's (GUI) thread: a callable to run here.
    _delivered = Signal(object)

    def __init__(
        self,
        gallery: Gallery,
        loader: ThumbnailLoader | None = None,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
        read: bool = True,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.gallery = gallery
        self.loader = loader
        self.page_size = max(1, page_size)
        self.max_pages = max(2, max_pages)
        self.filter = GalleryFilter()
        #: Pixmaps kept at most; the view raises it to hold a few screens of cells.
        self.pixmap_limit = PIXMAP_CACHE
        #: Pages read so far (at once or in the background), for tests and the benchmark.
        self.pages_read = 0
        # One long-lived reader thread: starting a thread per page cost more than the page.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._delivered.connect(self._deliver)
        self._closed = False
        self._sections: list[DaySection] = []
        self._starts: list[int] = []
        self._total = 0
        self._pages: OrderedDict[int, list[GalleryItem]] = OrderedDict()
        #: Page numbers being read in the background.
        self._pending: set[int] = set()
        #: Bumped whenever the results change: background pages of older ones are dropped.
        self._epoch = 0
        #: The filter ``load`` is reading (None when none is on its way), and its ticket.
        self._loading: GalleryFilter | None = None
        self._load_ticket = 0
        #: Position of each path on a page read (a cheap ``index_of``).
        self._positions: dict[str, int] = {}
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        # Thumbnails asked for and not in yet, oldest first; at most ``MAX_PENDING`` (the
        # loader's own limit), so what scrolled far past is neither decoded nor tracked.
        self._requested: dict[str, None] = {}
        self._failed: dict[str, str] = {}
        #: Thumbnails delivered and not yet turned into pixmaps (``_take_arrivals``).
        self._arrived: deque[tuple[str, QImage]] = deque()
        self._take_arrived = QTimer(self)
        self._take_arrived.setSingleShot(True)
        self._take_arrived.setInterval(0)
        self._take_arrived.timeout.connect(self._take_arrivals)
        if loader is not None:
            loader.thumbnail_ready.connect(self._on_thumbnail)
            loader.thumbnail_failed.connect(self._on_failed)
        if read:
            self.reload()

    # -- reading ---------------------------------------------------------------------------
    def set_gallery(self, gallery: Gallery, read: bool = True) -> None:
        """Show another gallery (another output folder); ``read``: read it now."""
        self.gallery = gallery
        self._pixmaps.clear()
        if read:
            self.reload()

    def set_filter(self, flt: GalleryFilter) -> None:
        """Show the results of ``flt``, read at once."""
        self.filter = flt
        self.reload()

    def reload(self) -> None:
        """Read the days and counts again, at once; pages are read as they are asked for.
        A ``load`` on its way is dropped."""
        self._load_ticket += 1
        self._loading = None
        counts = [] if self.gallery.closed else self.gallery.day_counts(**self.filter.query())
        self._install(counts)
        self.reset.emit()

    def load(self, flt: GalleryFilter) -> None:
        """Read the results of ``flt`` on a worker thread (days, counts and the first page);
        the current ones stay until ``reset`` says the new ones are in. A later ``load`` or
        ``reload`` wins."""
        if self._closed or self.gallery.closed:
            self.set_filter(flt)
            return
        self._load_ticket += 1
        ticket = self._load_ticket
        self._loading = flt
        gallery, query, size = self.gallery, flt.query(), self.page_size

        def work() -> tuple[list[tuple[dt.date, int]], list[GalleryItem]]:
            return gallery.day_counts(**query), gallery.search(**query, limit=size)

        self._in_background(
            work,
            lambda result: self._on_loaded(ticket, gallery, flt, *result),
            lambda exc: self._on_task_failed(ticket == self._load_ticket, exc),
        )

    def _in_background(
        self,
        work: Callable[[], Any],
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Run ``work`` on the reader thread; its outcome is handled on this thread."""

        def run() -> None:
            if self._closed:
                return
            lower_priority()
            try:
                result = work()
            except Exception as exc:  # a closed or broken index must not kill the thread
                self._delivered.emit(lambda error=exc: on_error(error))
            else:
                self._delivered.emit(lambda: on_result(result))

        self._pool.start(run)

    def _deliver(self, handler: Callable[[], None]) -> None:
        if not self._closed:
            handler()

    @property
    def loading(self) -> bool:
        """True while a ``load`` is on its way."""
        return self._loading is not None

    @property
    def wanted_filter(self) -> GalleryFilter:
        """The filter being loaded, else the one shown."""
        return self._loading if self._loading is not None else self.filter

    def _on_loaded(
        self,
        ticket: int,
        gallery: Gallery,
        flt: GalleryFilter,
        counts: list[tuple[dt.date, int]],
        first: list[GalleryItem],
    ) -> None:
        if ticket != self._load_ticket or gallery is not self.gallery or self._closed:
            return
        self._loading = None
        self.filter = flt
        self._install(counts)
        self._store(0, first)
        self.reset.emit()

    def _install(self, counts: list[tuple[dt.date, int]]) -> None:
        """Take new results: forget every page, lay out the days."""
        self._epoch += 1
        self._pending.clear()
        if self.loader is not None:
            self.loader.cancel(self._requested)
        self._requested.clear()
        # A file missing before may be back (an undo, a copy by hand): look again.
        self._failed.clear()
        self._pages.clear()
        self._positions.clear()
        sections, start = [], 0
        for day, count in counts:
            sections.append(DaySection(day, count, start))
            start += count
        self._sections = sections
        self._starts = [section.start for section in sections]
        self._total = start

    @property
    def total(self) -> int:
        return self._total

    @property
    def sections(self) -> list[DaySection]:
        return self._sections

    def section_of(self, position: int) -> int:
        """The number of the section holding ``position`` (-1 when out of range)."""
        if not 0 <= position < self._total:
            return -1
        return bisect.bisect_right(self._starts, position) - 1

    def item(self, position: int) -> GalleryItem | None:
        """The item at ``position``, reading its page at once when it is not in memory."""
        if not 0 <= position < self._total or self.gallery.closed:
            return None
        number, offset = divmod(position, self.page_size)
        page = self._pages.get(number)
        if page is None:
            page = self.gallery.search(
                **self.filter.query(), limit=self.page_size, offset=number * self.page_size
            )
            self._store(number, page)
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def peek(self, position: int) -> GalleryItem | None:
        """The item at ``position`` if its page is in memory (never reads)."""
        if position < 0:
            return None
        number, offset = divmod(position, self.page_size)
        page = self._pages.get(number)
        if page is None:
            return None
        self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def request(self, position: int) -> None:
        """Read the page holding ``position`` on a worker thread, unless it is in memory
        or on its way (``pages_arrived`` follows)."""
        if self._closed or self.gallery.closed or not 0 <= position < self._total:
            return
        number = position // self.page_size
        if number in self._pages or number in self._pending:
            return
        self._pending.add(number)
        epoch, gallery, query = self._epoch, self.gallery, self.filter.query()
        offset, size = number * self.page_size, self.page_size

        def work() -> list[GalleryItem]:
            if epoch != self._epoch:
                return []  # scrolled past and replaced before its turn came
            return gallery.search(**query, limit=size, offset=offset)

        self._in_background(
            work,
            lambda page: self._on_page(epoch, number, page),
            lambda exc: self._on_task_failed(epoch == self._epoch, exc),
        )

    def _on_page(self, epoch: int, number: int, page: list[GalleryItem]) -> None:
        if epoch != self._epoch or self._closed:
            return  # read for results that were replaced meanwhile
        self._pending.discard(number)
        if number in self._pages:
            return
        self._store(number, page)
        if page:
            first = number * self.page_size
            self.pages_arrived.emit(first, first + len(page) - 1)

    def _on_task_failed(self, current: bool, exc: BaseException) -> None:
        # A read for a gallery closed meanwhile (another output folder) is no news.
        if current and not self.gallery.closed and not self._closed:
            self.failed.emit(str(exc) or type(exc).__name__)

    def _store(self, number: int, page: list[GalleryItem]) -> None:
        self.pages_read += 1
        self._pages[number] = page
        self._pages.move_to_end(number)
        first = number * self.page_size
        for offset, item in enumerate(page):
            self._positions[str(item.path)] = first + offset
        while len(self._pages) > self.max_pages:
            old_number, old = self._pages.popitem(last=False)
            old_first = old_number * self.page_size
            for offset, item in enumerate(old):
                key = str(item.path)
                if self._positions.get(key) == old_first + offset:
                    del self._positions[key]

    def items_at(self, positions: Iterable[int]) -> list[GalleryItem]:
        """The items at these positions, in order (positions past the end are skipped)."""
        items = (self.item(i) for i in sorted(set(positions)))
        return [item for item in items if item is not None]

    def paths(self, positions: Sequence[int]) -> list[Path]:
        return [item.path for item in self.items_at(positions)]

    def index_of(self, path: Path | str, hint: int = -1) -> int:
        """The position of ``path`` (-1 when the filter leaves it out). ``hint``, where it
        stood before, saves a query when it is still on that page."""
        key = str(path)
        if key in self._positions:
            return self._positions[key]
        if 0 <= hint < self._total:
            self.item(hint)
            if key in self._positions:
                return self._positions[key]
        if self.gallery.closed:
            return -1
        position = self.gallery.position(key, **self.filter.query())
        return -1 if position is None or position >= self._total else position

    # -- changes ---------------------------------------------------------------------------
    def add_items(self, saved: Iterable[GalleryItem | Path | str]) -> int:
        """Take in newly saved images; returns how many more rows there are (they sort
        first, as the newest)."""
        if self.gallery.closed:
            return 0
        matching = False
        for entry in saved:
            item = entry if isinstance(entry, GalleryItem) else self.gallery.get(entry)
            if item is not None and self.gallery.contains(item.path) and self.filter.matches(item):
                matching = True
                break
        if not matching:
            return 0
        before = self._total
        self.reload()
        return max(0, self._total - before)

    def update_favourites(self, paths: Iterable[Path | str], flag: bool) -> None:
        """Show stars changed in the index (by ``GalleryPanel.set_favourites``); a
        favourites-only filter reads the results again when one was unmarked."""
        if self.filter.favourites and not flag:
            self.reload()
            return
        for path in paths:
            position = self._positions.get(str(path), -1)
            number, offset = divmod(position, self.page_size)
            page = self._pages.get(number) if position >= 0 else None
            if page is not None and offset < len(page):
                page[offset] = page[offset].with_favourite(flag)
                self.item_changed.emit(position)

    # -- thumbnails ------------------------------------------------------------------------
    def thumbnail(self, path: str) -> QPixmap | None:
        """The thumbnail of ``path``, or None while it is made (it is asked for here)."""
        pixmap = self._pixmaps.get(path)
        if pixmap is not None:
            self._pixmaps.move_to_end(path)
            return pixmap
        if self.loader is not None and path not in self._failed:
            self.loader.request(path)
            self._requested.pop(path, None)
            self._requested[path] = None  # the newest last
            if len(self._requested) > MAX_PENDING:
                oldest = next(iter(self._requested))
                del self._requested[oldest]
                self.loader.cancel((oldest,))
        return None

    def failure(self, path: Path | str) -> str | None:
        """Why ``path`` has no thumbnail (``MISSING``, ``UNREADABLE``), or None."""
        return self._failed.get(str(path))

    def has_thumbnail(self, path: Path | str) -> bool:
        return str(path) in self._pixmaps

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        if path not in self._requested:
            return  # another view's (the strip, the LoRA list)
        # Thumbnails from the disk cache arrive in bursts of dozens: take them in slices of
        # at most ARRIVAL_BUDGET_S, so a burst never holds the GUI thread while scrolling.
        self._arrived.append((path, image))
        if not self._take_arrived.isActive():
            self._take_arrived.start()

    def _take_arrivals(self) -> None:
        deadline = time.perf_counter() + ARRIVAL_BUDGET_S
        while self._arrived:
            path, image = self._arrived.popleft()
            if path not in self._requested:
                continue
            del self._requested[path]
            self._pixmaps[path] = QPixmap.fromImage(image)
            while len(self._pixmaps) > self.pixmap_limit:
                self._pixmaps.popitem(last=False)
            position = self._positions.get(path, -1)
            if position >= 0:
                self.item_changed.emit(position)
            if time.perf_counter() > deadline:
                break
        if self._arrived:
            self._take_arrived.start()

    def _on_failed(self, path: str, reason: str) -> None:
        if path not in self._requested:
            return
        del self._requested[path]
        self._failed[path] = failure_kind(reason)
        position = self._positions.get(path, -1)
        if position >= 0:
            self.item_changed.emit(position)

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop background reads and wait for the running one; safe to call twice."""
        self._closed = True
        self._take_arrived.stop()
        self._arrived.clear()
        self._pool.clear()
        return self._pool.waitForDone(msecs)


def failure_kind(reason: str) -> str:
    """``MISSING`` or ``UNREADABLE`` from a ``thumbnail_failed`` reason."""
    return MISSING if reason == MISSING_REASON else UNREADABLE


def placeholder_pixmap(side: int, title: str, detail: str = "") -> QPixmap:
    """A grey square saying why there is no thumbnail ("Missing", "Unreadable")."""
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(48, 44, 50))
    painter = QPainter(pixmap)
    try:
        draw_failure(painter, pixmap.rect(), title, detail)
    finally:
        painter.end()
    return pixmap


def draw_failure(painter: QPainter, rect: Any, title: str, detail: str = "") -> None:
    """Draw a crossed frame with ``title`` (and a smaller ``detail``) inside ``rect``."""
    painter.save()
    painter.setPen(QColor(200, 120, 110))
    inner = rect.adjusted(6, 6, -7, -7)
    painter.drawRect(inner)
    font = QFont(painter.font())
    font.setPixelSize(max(10, min(18, rect.height() // 7)))
    font.setBold(True)
    painter.setFont(font)
    centre = Qt.AlignmentFlag.AlignCenter
    if detail and rect.height() >= 80:
        top, bottom = (
            inner.adjusted(0, 0, 0, -inner.height() // 2),
            inner.adjusted(0, inner.height() // 2, 0, 0),
        )
        painter.drawText(top, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, title)
        font.setBold(False)
        font.setPixelSize(max(9, font.pixelSize() * 2 // 3))
        painter.setFont(font)
        painter.setPen(QColor(190, 180, 185))
        flags = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
        painter.drawText(bottom.adjusted(2, 4, -2, 0), int(flags), detail)
    else:
        painter.drawText(inner, centre, title)
    painter.restore()


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
