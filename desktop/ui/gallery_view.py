"""The gallery's thumbnail grids.

``GalleryGrid`` is the strip under the canvas: a ``QListView`` in icon mode over
``GalleryModel``, with a delegate drawing stars. ``BrowserGrid`` is the full-window
browser's grid over ``GalleryPages``: a ``QAbstractScrollArea`` that lays out a header per
day and a cell per image by arithmetic (``DayGridLayout``, no per-item layout pass, so
10,000 rows cost what 10 do) and paints only the cells in view, reading just their pages.
It has its own selection (click, Shift, Ctrl, Ctrl+A, rubber band), keyboard navigation and
Ctrl+wheel zoom.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from PySide6.QtCore import (
    QAbstractItemModel,
    QEvent,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QContextMenuEvent,
    QDrag,
    QFocusEvent,
    QFont,
    QHelpEvent,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QApplication,
    QListView,
    QRubberBand,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolTip,
    QWidget,
)

from desktop.ui.collector import note_activity
from desktop.ui.gallery_model import (
    MISSING,
    DaySection,
    FavouriteRole,
    GalleryPages,
    count_text,
    day_label,
    draw_failure,
    tooltip,
)
from desktop.ui.thumbnails import THUMB_SIZE

#: Rows laid out per slice: large result sets never block the window for long.
LAYOUT_BATCH = 200


class GalleryDelegate(QStyledItemDelegate):
    """Draws the thumbnail as usual plus a star on favourites."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        super().paint(painter, option, index)
        if not index.data(FavouriteRole):
            return
        painter.save()
        font = QFont(painter.font())
        font.setPixelSize(20)
        painter.setFont(font)
        rect = option.rect.adjusted(4, 2, -6, -4)  # type: ignore[attr-defined]
        corner = Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight
        painter.setPen(QColor(0, 0, 0, 160))
        painter.drawText(rect.translated(1, 1), corner, "★")
        painter.setPen(QColor(255, 200, 40))
        painter.drawText(rect, corner, "★")
        painter.restore()


class GalleryGrid(QListView):
    """Thumbnails in a wrapping grid; drag copies the files, right-click asks for a menu."""

    def __init__(self, model: QAbstractItemModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("GalleryView")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(LAYOUT_BATCH)
        self.setIconSize(QSize(128, 128))
        self.setGridSize(QSize(140, 140))
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.setItemDelegate(GalleryDelegate(self))
        self.setModel(model)

    def rows_height(self, rows: int) -> int:
        """The height the grid needs to show ``rows`` full rows of thumbnails."""
        frame = 2 * self.frameWidth()
        return rows * self.gridSize().height() + 2 * self.spacing() + frame


# -- the browser's grid -------------------------------------------------------------------------

#: Thumbnail sizes the browser offers (the disk cache holds ``THUMB_SIZE`` images).
MIN_THUMBNAIL = 64
MAX_THUMBNAIL = THUMB_SIZE
DEFAULT_THUMBNAIL = 160
#: How much one Ctrl+wheel notch or Ctrl+plus changes the size.
THUMBNAIL_STEP = 16
MARGIN = 16
SPACING = 6
#: Room around a thumbnail inside its cell (the selection shows there).
CELL_PADDING = 5
HEADER_HEIGHT = 40
#: Extra room under a day's last row.
SECTION_GAP = 10
#: Paint time spent on smooth-scaling thumbnails to the cell size; beyond it the cell is
#: drawn with a cheaper filter and refined on the next pass, so a paint stays short.
SCALE_BUDGET_S = 0.003
#: While the size changes (a slider dragged, a wheel turned) cells are drawn with the cheap
#: filter only; this long after the last change they are refined.
SIZE_SETTLE_MS = 150


def clamp_thumbnail(size: int) -> int:
    return max(MIN_THUMBNAIL, min(MAX_THUMBNAIL, int(size)))


class DayGridLayout:
    """Where each day's header and each image's cell go, for one width and cell size.

    Plain arithmetic over the sections (no Qt): a section's top is found by bisection, a
    cell by its row and column, so laying out a 100,000-image result costs one pass over
    its days. Coordinates are the content's (y grows down from the top of the first day).
    """

    def __init__(
        self,
        sections: list[DaySection],
        width: int,
        cell: int,
        header: int = HEADER_HEIGHT,
        margin: int = MARGIN,
        spacing: int = SPACING,
        gap: int = SECTION_GAP,
    ) -> None:
        self.sections = sections
        self.cell = max(1, cell)
        self.header = header
        self.margin = margin
        self.spacing = spacing
        self.step = self.cell + spacing
        self.width = max(width, 2 * margin + self.cell)
        self.columns = max(1, (self.width - 2 * margin + spacing) // self.step)
        self.tops: list[int] = []
        self.starts = [section.start for section in sections]
        y = margin // 2
        for section in sections:
            self.tops.append(y)
            y += header + self.rows(section) * self.step + gap
        self.height = y + margin // 2

    def rows(self, section: DaySection) -> int:
        return math.ceil(section.count / self.columns)

    @property
    def total(self) -> int:
        return self.sections[-1].stop if self.sections else 0

    def section_of(self, position: int) -> int:
        if not 0 <= position < self.total:
            return -1
        return bisect.bisect_right(self.starts, position) - 1

    def header_rect(self, number: int) -> QRect:
        return QRect(self.margin, self.tops[number], self.width - 2 * self.margin, self.header)

    def cell_rect(self, position: int) -> QRect:
        """The cell of ``position`` (an empty rect when out of range)."""
        number = self.section_of(position)
        if number < 0:
            return QRect()
        row, column = divmod(position - self.sections[number].start, self.columns)
        x = self.margin + column * self.step
        y = self.tops[number] + self.header + row * self.step
        return QRect(x, y, self.cell, self.cell)

    def index_at(self, x: int, y: int) -> int:
        """The position whose cell holds the point, or -1 (a header, a gap, nothing)."""
        number = bisect.bisect_right(self.tops, y) - 1
        if number < 0 or x < self.margin:
            return -1
        section = self.sections[number]
        dy = y - self.tops[number] - self.header
        dx = x - self.margin
        if dy < 0 or dy % self.step >= self.cell or dx % self.step >= self.cell:
            return -1
        row, column = dy // self.step, dx // self.step
        if column >= self.columns or row >= self.rows(section):
            return -1
        position = section.start + row * self.columns + column
        return position if position < section.stop else -1

    def sections_in(self, top: int, bottom: int) -> range:
        """The sections whose band overlaps the content rows ``top`` … ``bottom``."""
        if not self.sections:
            return range(0)
        first = max(0, bisect.bisect_right(self.tops, top) - 1)
        last = max(first, bisect.bisect_right(self.tops, bottom) - 1)
        return range(first, min(last, len(self.sections) - 1) + 1)

    def indices_in(self, rect: QRect) -> Iterator[int]:
        """The positions whose cells overlap ``rect`` (content coordinates), in order."""
        if rect.isEmpty():
            return
        first_col = max(0, (rect.left() - self.margin) // self.step)
        last_col = min(self.columns - 1, (rect.right() - self.margin) // self.step)
        if last_col < first_col:
            return
        for number in self.sections_in(rect.top(), rect.bottom()):
            section = self.sections[number]
            cells_top = self.tops[number] + self.header
            rows = self.rows(section)
            first_row = max(0, (rect.top() - cells_top) // self.step)
            last_row = min(rows - 1, (rect.bottom() - cells_top) // self.step)
            for row in range(first_row, last_row + 1):
                row_start = section.start + row * self.columns
                for column in range(first_col, last_col + 1):
                    position = row_start + column
                    if position >= section.stop:
                        break
                    yield position

    def nearest(self, x: int, y: int) -> int:
        """The position whose cell is closest to the point (-1 when there are none)."""
        if not self.sections:
            return -1
        number = max(0, bisect.bisect_right(self.tops, y) - 1)
        section = self.sections[number]
        row = (y - self.tops[number] - self.header) // self.step
        row = max(0, min(self.rows(section) - 1, row))
        column = max(0, min(self.columns - 1, (x - self.margin) // self.step))
        return min(section.start + row * self.columns + column, section.stop - 1)

    def vertical(self, position: int, rows: int) -> int:
        """The position ``rows`` rows below (negative: above), keeping the column; rows of
        the next or previous day count as rows too."""
        number = self.section_of(position)
        if number < 0:
            return position
        row, column = divmod(position - self.sections[number].start, self.columns)
        step = 1 if rows > 0 else -1
        for _ in range(abs(rows)):
            row += step
            if row >= self.rows(self.sections[number]):
                if number + 1 >= len(self.sections):
                    row -= 1
                    break
                number, row = number + 1, 0
            elif row < 0:
                if number == 0:
                    row = 0
                    break
                number -= 1
                row = self.rows(self.sections[number]) - 1
        section = self.sections[number]
        return min(section.start + row * self.columns + column, section.stop - 1)


class BrowserGrid(QAbstractScrollArea):
    """The full-window browser's grid: a header per day, a cell per image, painted from
    ``GalleryPages`` for the rows in view only.

    Selection: click selects one image, Ctrl+click toggles, Shift+click (or Shift+arrows)
    selects from the anchor, Ctrl+A selects all, and a drag from empty space draws a rubber
    band (with Ctrl it adds to the selection). Dragging a selected image drags its files.

    Signals:
        activated(int): a double-click or Enter on a cell (its position).
        current_changed(int): the focused cell moved (-1: none).
        selection_changed(): the selected positions changed.
        context_menu_requested(QPoint): right-click, at this global position.
        zoom_requested(int): Ctrl+wheel or Ctrl+plus/minus: bigger (+1) or smaller (-1).
    """

    activated = Signal(int)
    current_changed = Signal(int)
    selection_changed = Signal()
    context_menu_requested = Signal(QPoint)
    zoom_requested = Signal(int)

    def __init__(
        self,
        pages: GalleryPages,
        thumbnail_size: int = DEFAULT_THUMBNAIL,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("BrowserGrid")
        self.pages = pages
        self._size = clamp_thumbnail(thumbnail_size)
        self.selection: set[int] = set()
        self.current = -1
        self._anchor = -1
        self.grid_layout = DayGridLayout([], 1, self._cell())
        #: Thumbnails smooth-scaled to the cell size, by path (cleared when it changes).
        self._scaled: OrderedDict[str, QPixmap] = OrderedDict()
        self._press: QPoint | None = None
        self._press_index = -1
        self._band: QRubberBand | None = None
        self._band_base: set[int] = set()
        self._wheel_rest = 0
        self._today = dt.date.today()
        #: Said in the middle of the grid while there are no images.
        self.empty_text = ""
        self._refine = QTimer(self)
        self._refine.setSingleShot(True)
        self._refine.setInterval(0)
        self._refine.timeout.connect(self.viewport().update)
        self._resizing = QTimer(self)
        self._resizing.setSingleShot(True)
        self._resizing.setInterval(SIZE_SETTLE_MS)
        self._resizing.timeout.connect(self.viewport().update)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Always there: a bar that comes and goes changes the width, hence the columns and the
        # height, which can make it come and go again.
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.viewport().setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.viewport().setMouseTracking(False)
        pages.reset.connect(self._on_reset)
        pages.item_changed.connect(self._on_item_changed)
        pages.pages_arrived.connect(self._on_pages_arrived)
        self._relayout()

    # -- geometry --------------------------------------------------------------------------
    @property
    def thumbnail_size(self) -> int:
        return self._size

    def _cell(self) -> int:
        return self._size + 2 * CELL_PADDING

    def set_thumbnail_size(self, size: int) -> None:
        """Show thumbnails ``size`` pixels wide, keeping the first visible image in place."""
        size = clamp_thumbnail(size)
        if size == self._size:
            return
        anchor = self._first_visible()
        offset = 0
        if anchor >= 0:
            offset = self.grid_layout.cell_rect(anchor).top() - self._top()
        self._size = size
        self._scaled.clear()
        note_activity()
        self._resizing.start()
        self._relayout()
        if anchor >= 0:
            self.verticalScrollBar().setValue(self.grid_layout.cell_rect(anchor).top() - offset)
        self.viewport().update()

    def _relayout(self) -> None:
        self.grid_layout = DayGridLayout(self.pages.sections, self.viewport().width(), self._cell())
        bar = self.verticalScrollBar()
        page = max(1, self.viewport().height())
        bar.setRange(0, max(0, self.grid_layout.height - page))
        bar.setPageStep(page)
        bar.setSingleStep(max(24, self.grid_layout.step // 3))
        rows = page // self.grid_layout.step + 2
        # A few screens of pixmaps stay in memory, whatever the size.
        self.pages.pixmap_limit = max(self.pages.pixmap_limit, 3 * rows * self.grid_layout.columns)

    def _top(self) -> int:
        return self.verticalScrollBar().value()

    def _content_rect(self) -> QRect:
        return self.viewport().rect().translated(0, self._top())

    def cell_rect(self, position: int) -> QRect:
        """The cell of ``position`` in viewport coordinates (empty when out of range)."""
        rect = self.grid_layout.cell_rect(position)
        return rect.translated(0, -self._top()) if rect.isValid() else rect

    def index_at(self, point: QPoint) -> int:
        """The position under a viewport point, or -1."""
        return self.grid_layout.index_at(point.x(), point.y() + self._top())

    def visible_positions(self) -> list[int]:
        return list(self.grid_layout.indices_in(self._content_rect()))

    def _first_visible(self) -> int:
        return next(self.grid_layout.indices_in(self._content_rect()), -1)

    def scroll_to(self, position: int) -> None:
        """Scroll just enough to show the cell of ``position`` (with its day's header when
        it is on the first row)."""
        rect = self.grid_layout.cell_rect(position)
        if not rect.isValid():
            return
        number = self.grid_layout.section_of(position)
        top = rect.top() - SPACING
        if position - self.grid_layout.sections[number].start < self.grid_layout.columns:
            top = self.grid_layout.tops[number]
        bar = self.verticalScrollBar()
        if top < bar.value():
            bar.setValue(top)
        elif rect.bottom() + SPACING > bar.value() + self.viewport().height():
            bar.setValue(rect.bottom() + SPACING - self.viewport().height())

    # -- selection -------------------------------------------------------------------------
    def selected_positions(self) -> list[int]:
        return sorted(self.selection)

    def set_selection(self, positions: Iterable[int], current: int | None = None) -> None:
        total = self.pages.total
        self.selection = {p for p in positions if 0 <= p < total}
        if current is not None:
            self._set_current(current)
            self._anchor = self.current
        self.viewport().update()
        self.selection_changed.emit()

    def select_all(self) -> None:
        self.set_selection(range(self.pages.total))

    def clear_selection(self) -> None:
        self.set_selection(())

    def set_current(self, position: int, select: bool = True) -> None:
        """Move the focus to ``position`` (selecting only it when ``select``), scrolled in."""
        if select:
            self.set_selection([position], current=position)
        else:
            self._set_current(position)
        self.scroll_to(self.current)

    def _set_current(self, position: int) -> None:
        position = position if 0 <= position < self.pages.total else -1
        if position != self.current:
            old = self.current
            self.current = position
            for p in (old, position):
                self.viewport().update(self.cell_rect(p).adjusted(-2, -2, 2, 2))
            self.current_changed.emit(position)

    def _select_range(self, start: int, stop: int, add: bool) -> None:
        low, high = sorted((start, stop))
        chosen = set(range(max(0, low), high + 1))
        self.set_selection(self.selection | chosen if add else chosen)

    def _on_reset(self) -> None:
        """The results were read again: lay out anew; the browser restores what it can."""
        self._today = dt.date.today()
        total = self.pages.total
        self.selection = {p for p in self.selection if p < total}
        if self.current >= total:
            self._set_current(-1)
        self._anchor = min(self._anchor, total - 1)
        self._relayout()
        self.viewport().update()

    def _on_pages_arrived(self, first: int, last: int) -> None:
        visible = self.visible_positions()
        if visible and first <= visible[-1] and last >= visible[0]:
            self.viewport().update()

    def _on_item_changed(self, position: int) -> None:
        rect = self.cell_rect(position)
        if rect.isValid() and rect.intersects(self.viewport().rect()):
            self.viewport().update(rect)

    # -- painting --------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self.viewport())
        palette = self.palette()
        clip = event.rect()
        painter.fillRect(clip, palette.color(QPalette.ColorRole.Base))
        if not self.pages.total and self.empty_text:
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
        top = self._top()
        content = clip.translated(0, top)
        layout = self.grid_layout
        painter.translate(0, -top)
        for number in layout.sections_in(content.top(), content.bottom()):
            header = layout.header_rect(number)
            if header.intersects(content):
                self._paint_header(painter, header, layout.sections[number])
        resizing = self._resizing.isActive()
        deadline = 0.0 if resizing else time.perf_counter() + SCALE_BUDGET_S
        unrefined = False
        for position in layout.indices_in(content):
            unrefined |= self._paint_cell(painter, position, layout.cell_rect(position), deadline)
        painter.end()
        if unrefined and not resizing:
            self._refine.start()
        self._prefetch()

    def _prefetch(self) -> None:
        """Ask for the pages one screen above and below the view: scrolling finds them read."""
        rows = max(1, self.viewport().height() // self.grid_layout.step) + 1
        screen = rows * self.grid_layout.columns
        first = self._first_visible()
        if first < 0:
            return
        for position in (first, first + 2 * screen, first - screen):
            self.pages.request(position)

    def _paint_header(self, painter: QPainter, rect: QRect, section: DaySection) -> None:
        painter.save()
        font = QFont(self.font())
        font.setPixelSize(16)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(self.palette().color(QPalette.ColorRole.Text))
        label = day_label(section.day, self._today)
        flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        used = painter.boundingRect(rect, flags, label)
        painter.drawText(rect, flags, label)
        font.setBold(False)
        font.setPixelSize(13)
        painter.setFont(font)
        painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
        painter.drawText(
            rect.adjusted(used.width() + 12, 0, 0, 0), flags, count_text(section.count)
        )
        painter.restore()

    def _paint_cell(self, painter: QPainter, position: int, rect: QRect, deadline: float) -> bool:
        """Paint one cell; True when its thumbnail still needs a smoother scaling."""
        palette = self.palette()
        selected = position in self.selection
        if selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(rect, 6, 6)
        inner = rect.adjusted(CELL_PADDING, CELL_PADDING, -CELL_PADDING, -CELL_PADDING)
        # Never read the index while painting: a page not in memory is asked for and the
        # cell repainted when it arrives.
        item = self.pages.peek(position)
        unrefined = False
        if item is None:
            self.pages.request(position)
            painter.fillRect(inner, QColor(60, 60, 68))
        else:
            key = str(item.path)
            failure = self.pages.failure(key)
            pixmap = None if failure else self.pages.thumbnail(key)
            if failure:
                painter.fillRect(inner, QColor(48, 44, 50))
                title = "Missing" if failure == MISSING else "Unreadable"
                detail = "the file is gone" if failure == MISSING else "cannot be decoded"
                draw_failure(painter, inner, title, detail)
            elif pixmap is None:
                painter.fillRect(inner, QColor(60, 60, 68))
            else:
                unrefined = self._paint_thumbnail(painter, key, pixmap, inner, deadline)
            if item.favourite:
                self._paint_star(painter, inner)
        if position == self.current and self.hasFocus():
            painter.setBrush(Qt.BrushStyle.NoBrush)
            role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Highlight
            painter.setPen(palette.color(role))
            painter.drawRoundedRect(rect.adjusted(1, 1, -2, -2), 6, 6)
        return unrefined

    def _paint_thumbnail(
        self, painter: QPainter, key: str, pixmap: QPixmap, inner: QRect, deadline: float
    ) -> bool:
        scaled = self._scaled.get(key)
        if scaled is None and time.perf_counter() < deadline:
            scaled = pixmap.scaled(
                inner.size(),
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
            self._scaled[key] = scaled
            while len(self._scaled) > self.pages.pixmap_limit:
                self._scaled.popitem(last=False)
        if scaled is not None:
            x = inner.x() + (inner.width() - scaled.width()) // 2
            y = inner.y() + (inner.height() - scaled.height()) // 2
            painter.drawPixmap(x, y, scaled)
            return False
        target = QSize(pixmap.size()).scaled(inner.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = inner.x() + (inner.width() - target.width()) // 2
        y = inner.y() + (inner.height() - target.height()) // 2
        # While the size slider moves, a plain (nearest) scaling keeps each frame cheap; the
        # smooth one follows when it settles (or in the next frames, within their budget).
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, deadline > 0.0)
        painter.drawPixmap(QRect(QPoint(x, y), target), pixmap)
        painter.restore()
        return True

    @staticmethod
    def _paint_star(painter: QPainter, inner: QRect) -> None:
        painter.save()
        font = QFont(painter.font())
        font.setPixelSize(max(14, min(24, inner.height() // 6)))
        painter.setFont(font)
        corner = Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight
        box = inner.adjusted(2, 0, -4, -2)
        painter.setPen(QColor(0, 0, 0, 170))
        painter.drawText(box.translated(1, 1), corner, "★")
        painter.setPen(QColor(255, 200, 40))
        painter.drawText(box, corner, "★")
        painter.restore()

    # -- scrolling and size ----------------------------------------------------------------
    def scrollContentsBy(self, dx: int, dy: int) -> None:
        # Moves the pixels already drawn; only the strip scrolled in is painted anew.
        note_activity()
        self.viewport().scroll(dx, dy)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        anchor = self._first_visible()
        self._relayout()
        if anchor >= 0:
            self.scroll_to(anchor)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self._wheel_rest += event.angleDelta().y()
            notches = int(self._wheel_rest / 120)
            if notches:
                self._wheel_rest -= notches * 120
                self.zoom_requested.emit(1 if notches > 0 else -1)
            event.accept()
            return
        super().wheelEvent(event)

    # -- mouse -----------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            super().mousePressEvent(event)
            return
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        point = event.position().toPoint()
        position = self.index_at(point)
        modifiers = event.modifiers()
        ctrl = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        self._press = QPoint(point.x(), point.y() + self._top())
        self._press_index = position
        if position < 0:
            self._band_base = set(self.selection) if ctrl else set()
            if not ctrl:
                self.clear_selection()
            return
        if shift and self._anchor >= 0:
            self._select_range(self._anchor, position, add=ctrl)
            self._set_current(position)
        elif ctrl:
            self.selection ^= {position}
            self._anchor = position
            self._set_current(position)
            self.viewport().update(self.cell_rect(position))
            self.selection_changed.emit()
        elif position not in self.selection:
            self.set_selection([position], current=position)
        else:
            # Maybe the start of a drag of the whole selection: decided on move or release.
            self._set_current(position)
            self._anchor = position

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None or not event.buttons() & Qt.MouseButton.LeftButton:
            return
        point = event.position().toPoint()
        here = QPoint(point.x(), point.y() + self._top())
        if self._press_index >= 0:
            distance = (here - self._press).manhattanLength()
            if self._press_index in self.selection and distance >= (
                QApplication.startDragDistance()
            ):
                self._press = None
                self._start_drag()
            return
        self._update_band(point, here)

    def _update_band(self, point: QPoint, here: QPoint) -> None:
        if point.y() < 0 or point.y() > self.viewport().height():
            bar = self.verticalScrollBar()
            bar.setValue(
                bar.value() + (point.y() if point.y() < 0 else point.y() - self.viewport().height())
            )
            here = QPoint(point.x(), point.y() + self._top())
        assert self._press is not None
        band = QRect(self._press, here).normalized()
        if self._band is None:
            self._band = QRubberBand(QRubberBand.Shape.Rectangle, self.viewport())
        self._band.setGeometry(band.translated(0, -self._top()).intersected(self.viewport().rect()))
        self._band.show()
        chosen = set(self.grid_layout.indices_in(band))
        self.selection = self._band_base | chosen
        last = max(chosen) if chosen else -1
        if last >= 0:
            self._set_current(last)
            self._anchor = min(chosen)
        self.viewport().update()
        self.selection_changed.emit()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        plain = not event.modifiers() & (
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
        )
        pressed = self._press_index if self._press is not None else -1
        # A click (not a drag) on one image of a larger selection selects only it.
        if plain and pressed >= 0 and len(self.selection) > 1 and pressed in self.selection:
            self.set_selection([pressed], current=pressed)
        if self._band is not None:
            self._band.hide()
        self._press = None
        self._press_index = -1
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        position = self.index_at(event.position().toPoint())
        if position >= 0:
            self.set_selection([position], current=position)
            self.activated.emit(position)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        position = self.index_at(self.viewport().mapFrom(self, event.pos()))
        if position < 0:
            return
        if position not in self.selection:
            self.set_selection([position], current=position)
        self.context_menu_requested.emit(event.globalPos())

    def _start_drag(self) -> None:
        paths = self.pages.paths(self.selected_positions())
        if not paths:
            return
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        mime.setText(str(paths[0]))
        drag = QDrag(self)
        drag.setMimeData(mime)
        thumb = self.pages.thumbnail(str(paths[0]))
        if thumb is not None:
            drag.setPixmap(thumb.scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio))
        drag.exec(Qt.DropAction.CopyAction)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            position = self.index_at(event.pos())
            item = self.pages.item(position) if position >= 0 else None
            if item is None:
                QToolTip.hideText()
            else:
                text = tooltip(item)
                if self.pages.failure(item.path) == MISSING:
                    text += "\nThe file is missing (deleted or moved outside Sandstorm)."
                QToolTip.showText(event.globalPos(), text, self.viewport())
            return True
        return super().viewportEvent(event)

    # -- keyboard --------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        modifiers = event.modifiers()
        ctrl = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        if event.matches(QKeySequence.StandardKey.SelectAll):
            self.select_all()
            return
        if ctrl and key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal, Qt.Key.Key_Minus):
            self.zoom_requested.emit(-1 if key == Qt.Key.Key_Minus else 1)
            return
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.current >= 0:
            self.activated.emit(self.current)
            return
        target = self._key_target(key)
        if target is None:
            super().keyPressEvent(event)
            return
        if self.pages.total == 0:
            return
        target = max(0, min(self.pages.total - 1, target))
        if modifiers & Qt.KeyboardModifier.ShiftModifier:
            if self._anchor < 0:
                self._anchor = max(0, self.current)
            anchor = self._anchor
            self._select_range(anchor, target, add=ctrl)
            self._anchor = anchor
            self._set_current(target)
            self.scroll_to(target)
        elif ctrl:
            self.set_current(target, select=False)
        else:
            self.set_current(target)

    def _key_target(self, key: int) -> int | None:
        """Where a navigation key moves the focus, or None for other keys."""
        current = self.current if self.current >= 0 else -1
        layout = self.grid_layout
        if current < 0:
            navigation = (Qt.Key.Key_Right, Qt.Key.Key_Left, Qt.Key.Key_Down, Qt.Key.Key_Up)
            return 0 if key in (*navigation, Qt.Key.Key_Home) else None
        rows_per_page = max(1, self.viewport().height() // layout.step)
        targets = {
            Qt.Key.Key_Right: lambda: current + 1,
            Qt.Key.Key_Left: lambda: current - 1,
            Qt.Key.Key_Down: lambda: layout.vertical(current, 1),
            Qt.Key.Key_Up: lambda: layout.vertical(current, -1),
            Qt.Key.Key_PageDown: lambda: layout.vertical(current, rows_per_page),
            Qt.Key.Key_PageUp: lambda: layout.vertical(current, -rows_per_page),
            Qt.Key.Key_Home: lambda: 0,
            Qt.Key.Key_End: lambda: self.pages.total - 1,
        }
        choose = targets.get(Qt.Key(key))
        return choose() if choose is not None else None

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.viewport().update(self.cell_rect(self.current).adjusted(-2, -2, 2, 2))

    def focusOutEvent(self, event: QFocusEvent) -> None:
        super().focusOutEvent(event)
        self.viewport().update(self.cell_rect(self.current).adjusted(-2, -2, 2, 2))

    def sizeHint(self) -> QSize:
        return QSize(800, 600)
