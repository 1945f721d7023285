"""The full-size image viewer: one image of a list, or two side by side to compare.

The gallery browser hosts an ``ImageViewer`` and hands it the list it shows
(``set_items(paths, index)``); the viewer steps through it with the arrow keys and reports
where it is (``current_changed``), when the user wants out (``close_requested``) and which
toolbar action was clicked (``action_requested(action, path)``); the browser performs those.

Images are decoded off the GUI thread (``load_image`` on a ``TaskRunner`` worker, which also
reads the metadata text), a few at a time, the shown one first and then its neighbours;
the last ``CACHE_SIZE`` results are kept, so stepping back and forth is instant. A result
for an image the user already moved past is dropped. While an image loads, the previous
one stays on screen under a "Loading…" badge. Decoding also builds a small pyramid of
halved copies, so a large image drawn zoomed out stays cheap to paint and free of aliasing.

Zoom and pan: opens fitted to the window; the wheel zooms about the cursor, dragging pans,
a double-click toggles fit / 100 %; keys ``+`` ``-`` ``0`` (fit) ``1`` (100 %), ``I`` shows
or hides the settings panel. Below ``NEAREST_FROM`` (200 %) the image is drawn with smooth
scaling, from there on with nearest-neighbour so single pixels can be inspected.

Compare (``compare(left, right)``): two panes whose zoom and pan follow each other. Zoom is
shared relative to the left image's width, so an upscaled copy beside its original shows the
same region at the same size. The settings panel lists both images' settings side by side
with the rows that differ highlighted.
"""

from __future__ import annotations

import html
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from PySide6.QtCore import QObject, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QColor,
    QImage,
    QImageReader,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QResizeEvent,
    QShowEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSplitter,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.metadata import parse_parameters
from desktop.ui.collector import note_activity
from desktop.ui.gallery_info import infotext
from desktop.ui.tasks import Task, TaskRunner, stop_requested

log = logging.getLogger(__name__)

MIN_ZOOM, MAX_ZOOM = 0.02, 32.0
#: From this zoom on pixels are drawn as sharp squares (nearest-neighbour), below it smoothly.
NEAREST_FROM = 2.0
#: Fit never blows a small image up past this.
MAX_FIT_ZOOM = 8.0
ZOOM_STEP = 1.25
#: Decoded images kept (the shown one, its neighbours and a couple just left).
CACHE_SIZE = 5
#: Decodes running at once (a held arrow key must not pile up work).
MAX_RUNNING = 2
#: The pyramid stops halving below this side length.
_PYRAMID_MIN_SIDE = 256
_FIT_MARGIN = 16

#: (action, button text, tooltip) of the toolbar actions the browser performs.
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("reuse", "Reuse", "Load this image's settings into the prompt panel"),
    ("img2img", "Img2img", "Use this image as the img2img source"),
    ("upscale", "Upscale", "Upscale this image"),
    ("favourite", "Favourite", "Mark or unmark this image as a favourite"),
    ("delete", "Delete", "Delete this image (it can be restored from the bin)"),
)


def gone_message(path: Path) -> str:
    return f"This image is gone: {path.name} was deleted or moved."


@dataclass(frozen=True)
class LoadedImage:
    """The outcome of decoding one file: an image and its settings text, or an error.

    ``levels`` holds the full image first, then copies halved in size until the long side is
    under 512 px; ``decoded_on`` is the ``threading.get_ident()`` of the decoding thread.
    """

    path: Path
    image: QImage = field(default_factory=QImage)
    levels: tuple[QImage, ...] = ()
    info: str = ""
    error: str = ""
    decoded_on: int = 0

    @property
    def ok(self) -> bool:
        return not self.error and not self.image.isNull()

    def size(self) -> QSize:
        return self.image.size()


def load_image(path: Path, info: Callable[[Path], str] | None = None) -> LoadedImage:
    """Decode ``path`` (EXIF orientation applied) and read its settings text; never raises.

    Runs on a worker thread: ``info`` must be safe to call there (``infotext`` is).
    """
    thread = threading.get_ident()
    if not path.is_file():
        return LoadedImage(path, error=gone_message(path), decoded_on=thread)
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    image = reader.read()
    if image.isNull():
        if not path.exists():  # deleted while it was being read
            return LoadedImage(path, error=gone_message(path), decoded_on=thread)
        reason = reader.errorString() or "unknown error"
        error = f"This image can't be read: {path.name} ({reason})."
        return LoadedImage(path, error=error, decoded_on=thread)
    # The raster engine draws these two formats without converting on every paint.
    fast = (
        QImage.Format.Format_ARGB32_Premultiplied
        if image.hasAlphaChannel()
        else QImage.Format.Format_RGB32
    )
    if image.format() != fast:
        image = image.convertToFormat(fast)
    levels = _pyramid(image)
    text = _read_info(info, path) if info is not None else ""
    return LoadedImage(path, image, levels, text, decoded_on=thread)


def _pyramid(image: QImage) -> tuple[QImage, ...]:
    levels = [image]
    while max(levels[-1].width(), levels[-1].height()) >= 2 * _PYRAMID_MIN_SIDE:
        if stop_requested():  # the user moved on: the full image alone is still correct
            break
        last = levels[-1]
        levels.append(
            last.scaled(
                max(1, last.width() // 2),
                max(1, last.height() // 2),
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
    return tuple(levels)


def _read_info(info: Callable[[Path], str], path: Path) -> str:
    try:
        return info(path)
    except Exception as exc:  # a broken metadata reader must not lose the picture
        log.warning("could not read the settings of %s", path, exc_info=exc)
        return f"The settings of this image can't be read ({exc})."


# -- settings text -------------------------------------------------------------------------
class SettingRow(NamedTuple):
    """One setting of two images being compared."""

    key: str
    left: str
    right: str
    differs: bool


def settings_fields(text: str) -> dict[str, str]:
    """Infotext as ordered fields: Prompt, Negative prompt, then each ``key: value`` setting.

    Text that is not AUTOMATIC1111 infotext becomes a single "Settings" field.
    """
    parsed = parse_parameters(text) if text.strip() else None
    if parsed is None:
        return {"Settings": text.strip()} if text.strip() else {}
    prompt, negative, params = parsed
    fields = {"Prompt": prompt}
    if negative:
        fields["Negative prompt"] = negative
    fields.update(params)
    return fields


def settings_rows(left: str, right: str) -> list[SettingRow]:
    """The settings of two images side by side, the left image's order first."""
    a, b = settings_fields(left), settings_fields(right)
    keys = list(a) + [key for key in b if key not in a]
    return [
        SettingRow(key, a.get(key, ""), b.get(key, ""), a.get(key, "") != b.get(key, ""))
        for key in keys
    ]


def _text_html(value: str) -> str:
    return html.escape(value).replace("\n", "<br>")


def info_html(text: str) -> str:
    """One image's settings as HTML for the side panel."""
    fields = settings_fields(text)
    if not fields:
        return ""
    if list(fields) == ["Settings"]:
        return f"<p>{_text_html(fields['Settings'])}</p>"
    parts = []
    for key in ("Prompt", "Negative prompt"):
        if key in fields:
            parts.append(f"<p><b>{key}</b><br>{_text_html(fields.pop(key))}</p>")
    if fields:
        rows = "".join(
            f"<tr><td><b>{html.escape(key)}</b></td><td>{_text_html(value)}</td></tr>"
            for key, value in fields.items()
        )
        parts.append(f'<table cellspacing="0" cellpadding="3">{rows}</table>')
    return "".join(parts)


def compare_html(rows: Sequence[SettingRow], left: str, right: str, highlight: str) -> str:
    """The settings table of two images; rows that differ get the ``highlight`` background."""
    differing = [row.key for row in rows if row.differs]
    if differing:
        summary = f"{len(differing)} differ: {html.escape(', '.join(differing))}"
    else:
        summary = "The settings are the same."
    head = (
        f"<tr><th></th><th align='left'>{html.escape(left)}</th>"
        f"<th align='left'>{html.escape(right)}</th></tr>"
    )
    body = "".join(
        f"<tr{f' bgcolor={highlight!r}' if row.differs else ''}>"
        f"<td><b>{'≠ ' if row.differs else ''}{html.escape(row.key)}</b></td>"
        f"<td>{_text_html(row.left)}</td><td>{_text_html(row.right)}</td></tr>"
        for row in rows
    )
    table = f'<table cellspacing="0" cellpadding="3" width="100%">{head}{body}</table>'
    return f"<p><b>{summary}</b></p>{table}"


# -- loading -------------------------------------------------------------------------------
class ImageLoader(QObject):
    """Decodes images on worker threads, wanted ones first, and keeps the last few.

    ``want(paths)`` says what is needed now, most important first; anything else still
    decoding is cancelled and its result dropped. At most ``max_running`` decodes run at
    once, so holding an arrow key never piles up threads. Create and use on the GUI thread;
    call ``shutdown`` before it is destroyed.

    Signals:
        image_loaded(LoadedImage): a wanted image finished decoding (or failed to).
    """

    image_loaded = Signal(object)

    def __init__(
        self,
        info: Callable[[Path], str] | None = infotext,
        cache_size: int = CACHE_SIZE,
        max_running: int = MAX_RUNNING,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.info = info
        self.cache_size = max(1, cache_size)
        self.max_running = max(1, max_running)
        self.runner = TaskRunner(self)
        self.runner.finished.connect(self._task_finished)
        self._cache: OrderedDict[Path, LoadedImage] = OrderedDict()
        self._running: dict[Task, Path] = {}
        self._wanted: list[Path] = []
        self._closed = False
        #: How many decodes were started (for tests and benchmarks).
        self.started = 0

    def get(self, path: Path) -> LoadedImage | None:
        """The cached result for ``path`` (marked as recently used), or None."""
        loaded = self._cache.get(path)
        if loaded is not None:
            self._cache.move_to_end(path)
        return loaded

    def want(self, paths: Sequence[Path]) -> None:
        """Decode ``paths`` (most important first) unless cached; cancel everything else."""
        self._wanted = list(dict.fromkeys(paths))
        for task, path in self._running.items():
            if path not in self._wanted:
                task.cancel()
        self._pump()

    def running(self) -> int:
        """Decodes whose thread has not finished yet (cancelled ones included)."""
        return len(self._running)

    def clear(self) -> None:
        """Forget every cached result (files changed on disk)."""
        self._cache.clear()

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Cancel the decodes and wait up to ``msecs`` for their threads; safe to call twice."""
        self._closed = True
        self._wanted = []
        done = self.runner.shutdown(msecs)
        if done:
            self._running.clear()
        return done

    def _pump(self) -> None:
        if self._closed:
            return
        busy = {path for task, path in self._running.items() if not task.cancelled}
        for path in self._wanted:
            if len(self._running) >= self.max_running:
                break
            if path in busy or path in self._cache:
                continue
            task = self.runner.submit(
                load_image, path, self.info, on_result=self._loaded, name=f"decode {path.name}"
            )
            self._running[task] = path
            self.started += 1

    def _loaded(self, loaded: LoadedImage) -> None:
        if loaded.path not in self._wanted:
            return  # the user moved past it before it was cancelled
        self._cache[loaded.path] = loaded
        self._cache.move_to_end(loaded.path)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self.image_loaded.emit(loaded)

    def _task_finished(self, task: Task) -> None:
        self._running.pop(task, None)
        self._pump()


# -- one pane ------------------------------------------------------------------------------
class ImagePane(QWidget):
    """Draws one loaded image, or a message, with zoom and pan.

    Zoom is kept relative to a *reference width* (the image's own unless
    ``set_reference_width`` says otherwise): two panes with the same zoom and pan then show
    their images at the same size on screen, whatever their pixel sizes. ``None`` zoom means
    "fit to the pane". ``effective_zoom`` is always in this image's own pixels.

    Signals:
        view_changed(object, QPointF): the user zoomed or panned: (zoom or None, pan).
        zoom_changed(float): the effective zoom changed (also when fit follows a resize).
        activated(): the pane was pressed with the mouse.
    """

    view_changed = Signal(object, QPointF)
    zoom_changed = Signal(float)
    activated = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 120)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setToolTip("Wheel to zoom, drag to pan, double-click for fit / 100 %.")
        self._loaded: LoadedImage | None = None
        self._message = ""
        self._loading = False
        self._zoom: float | None = None
        self._pan = QPointF(0.0, 0.0)
        self._reference_width: int | None = None
        self._drag_from: QPointF | None = None
        #: Drawn with a highlighted frame (the pane actions apply to while comparing).
        self.highlighted = False

    # -- content ---------------------------------------------------------------------------
    def set_loaded(self, loaded: LoadedImage, keep_view: bool = False) -> None:
        """Show ``loaded`` (its error message if it failed).

        With ``keep_view`` an image of the same size as the one shown keeps zoom and pan
        (stepping through a batch at 300 % stays on the same detail); otherwise it is fitted.
        """
        old = self._loaded.size() if self._loaded is not None and self._loaded.ok else None
        self._loading = False
        if not loaded.ok:
            self._loaded = None
            self._message = loaded.error
            self._reset_view()
        else:
            self._loaded = loaded
            self._message = ""
            if not (keep_view and old == loaded.size()):
                self._reset_view()
        self.zoom_changed.emit(self.effective_zoom())
        self.update()

    def set_loading(self, message: str) -> None:
        """Keep the image shown (if any) under a "Loading…" badge; ``message`` if none."""
        self._loading = True
        self._message = message
        self.update()

    def set_message(self, message: str) -> None:
        """Show only ``message`` (no image)."""
        self._loaded = None
        self._loading = False
        self._message = message
        self._reset_view()
        self.update()

    def loaded(self) -> LoadedImage | None:
        return self._loaded

    def image(self) -> QImage:
        return self._loaded.image if self._loaded is not None else QImage()

    def has_image(self) -> bool:
        return self._loaded is not None

    def is_loading(self) -> bool:
        return self._loading

    def message(self) -> str:
        """The text shown instead of (or, while loading, over) the image."""
        return self._message

    def set_reference_width(self, width: int | None) -> None:
        """Share zoom with a pane whose image is ``width`` pixels wide (None: its own)."""
        self._reference_width = width if width and width > 0 else None
        self.update()

    # -- zoom and pan ------------------------------------------------------------------------
    def view(self) -> tuple[float | None, QPointF]:
        """(zoom relative to the reference width or None for fit, pan in pixels)."""
        return self._zoom, QPointF(self._pan)

    def set_view(self, zoom: float | None, pan: QPointF) -> None:
        """Follow another pane's view; does not emit ``view_changed``."""
        self._zoom = zoom
        self._pan = QPointF(pan) if zoom is not None else QPointF(0.0, 0.0)
        self.zoom_changed.emit(self.effective_zoom())
        self.update()

    def is_fit(self) -> bool:
        return self._zoom is None

    def effective_zoom(self) -> float:
        """Screen pixels per image pixel."""
        if self._zoom is not None:
            return self._zoom * self._ratio()
        size = self._image_size()
        if size.isEmpty():
            return 1.0
        return min(
            (self.width() - _FIT_MARGIN) / size.width(),
            (self.height() - _FIT_MARGIN) / size.height(),
            MAX_FIT_ZOOM,
        )

    def zoom_fit(self) -> None:
        self._reset_view()
        self._view_changed_by_user()

    def zoom_actual(self, anchor: QPointF | None = None) -> None:
        self.set_zoom(1.0, anchor)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.set_zoom(self.effective_zoom() * factor, anchor)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``zoom`` (image pixels) keeping the point under ``anchor`` fixed.

        ``anchor`` is in pane coordinates; None means the pane's centre.
        """
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        anchor = QPointF(self.rect().center()) if anchor is None else QPointF(anchor)
        if self._image_size().isEmpty():
            return
        point = self.map_to_image(anchor)
        self._zoom = zoom / self._ratio()
        # Where the image point landed with the new zoom, then pan it back under the anchor.
        moved = self._map_from_image(point)
        self._pan += anchor - moved
        self._view_changed_by_user()

    def map_to_image(self, point: QPointF) -> QPointF:
        """The image pixel coordinates under ``point`` (pane coordinates)."""
        rect, zoom = self.image_rect(), self.effective_zoom()
        return QPointF((point.x() - rect.x()) / zoom, (point.y() - rect.y()) / zoom)

    def _map_from_image(self, point: QPointF) -> QPointF:
        rect, zoom = self.image_rect(), self.effective_zoom()
        return QPointF(rect.x() + point.x() * zoom, rect.y() + point.y() * zoom)

    def image_rect(self) -> QRectF:
        """Where the whole image is drawn, in pane coordinates (may reach past the pane)."""
        size, zoom = self._image_size(), self.effective_zoom()
        w, h = size.width() * zoom, size.height() * zoom
        x = (self.width() - w) / 2 + self._pan.x()
        y = (self.height() - h) / 2 + self._pan.y()
        return QRectF(x, y, w, h)

    def smooth_scaling(self) -> bool:
        """Whether the image is drawn smoothly now (False: nearest-neighbour pixels)."""
        return self.effective_zoom() < NEAREST_FROM

    def _image_size(self) -> QSize:
        return self._loaded.size() if self._loaded is not None else QSize()

    def _ratio(self) -> float:
        size = self._image_size()
        if self._reference_width is None or size.isEmpty():
            return 1.0
        return self._reference_width / size.width()

    def _reset_view(self) -> None:
        self._zoom = None
        self._pan = QPointF(0.0, 0.0)

    def _view_changed_by_user(self) -> None:
        self.view_changed.emit(self._zoom, QPointF(self._pan))
        self.zoom_changed.emit(self.effective_zoom())
        self.update()

    # -- painting --------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        background = self.palette().color(QPalette.ColorRole.Window).darker(135)
        painter.fillRect(self.rect(), background)
        if self._loaded is None:
            painter.setPen(QColor(160, 160, 170))
            painter.drawText(
                QRectF(self.rect()).adjusted(24, 24, -24, -24),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self._message,
            )
        else:
            self._draw_image(painter)
            if self._loading:
                self._draw_badge(painter, "Loading…")
        if self.highlighted:
            pen = QPen(self.palette().color(QPalette.ColorRole.Highlight), 2)
            painter.setPen(pen)
            painter.drawRect(QRectF(self.rect()).adjusted(1, 1, -1, -1))

    def _draw_image(self, painter: QPainter) -> None:
        assert self._loaded is not None
        target = self.image_rect()
        visible = target.intersected(QRectF(self.rect()))
        if visible.isEmpty():
            return
        zoom = self.effective_zoom()
        level = self._level_for(zoom * self.devicePixelRatioF())
        # Only the visible part is drawn, rounded out to whole source pixels so that
        # nearest-neighbour squares stay aligned with the image grid.
        sx, sy = level.width() / target.width(), level.height() / target.height()
        left = max(0, math.floor((visible.left() - target.left()) * sx))
        top = max(0, math.floor((visible.top() - target.top()) * sy))
        right = min(level.width(), math.ceil((visible.right() - target.left()) * sx))
        bottom = min(level.height(), math.ceil((visible.bottom() - target.top()) * sy))
        if right <= left or bottom <= top:
            return
        source = QRect(left, top, right - left, bottom - top)
        dest = QRectF(
            target.left() + left / sx,
            target.top() + top / sy,
            source.width() / sx,
            source.height() / sy,
        )
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, zoom < NEAREST_FROM)
        painter.drawImage(dest, level, QRectF(source))

    def _level_for(self, device_zoom: float) -> QImage:
        """The smallest pyramid level still at least as large as it is drawn."""
        assert self._loaded is not None
        levels = self._loaded.levels or (self._loaded.image,)
        needed = self._loaded.image.width() * device_zoom
        chosen = levels[0]
        for level in levels[1:]:
            if level.width() < needed:
                break
            chosen = level
        return chosen

    def _draw_badge(self, painter: QPainter, text: str) -> None:
        metrics = painter.fontMetrics()
        box = QRectF(0, 0, metrics.horizontalAdvance(text) + 24, metrics.height() + 12)
        box.moveCenter(QPointF(self.width() / 2, box.height() / 2 + 12))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 170))
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor(235, 235, 240))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    # -- events ----------------------------------------------------------------------------
    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._zoom is None:
            self.zoom_changed.emit(self.effective_zoom())

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if not steps or self._loaded is None:
            event.ignore()
            return
        note_activity()
        self.zoom_by(ZOOM_STEP**steps, event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.activated.emit()
        if self._loaded is not None and event.button() in (
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.MiddleButton,
        ):
            self._drag_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is None:
            return
        if self._zoom is None:
            self._zoom = self.effective_zoom() / self._ratio()
        note_activity()
        self._pan += event.position() - self._drag_from
        self._drag_from = event.position()
        self._view_changed_by_user()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._loaded is None:
            return
        if self.is_fit():
            self.zoom_actual(event.position())
        else:
            self.zoom_fit()


# -- the viewer ----------------------------------------------------------------------------
class ImageViewer(QWidget):
    """Full-size viewer of one image of a list, or two side by side.

    Keys: Left/Right and PageUp/PageDown step, Home/End jump to the first/last image, Esc
    asks to close, ``+``/``-`` zoom, ``0`` fits, ``1`` shows 100 %, ``I`` toggles the
    settings panel. While comparing, the stepping keys do nothing; the toolbar actions and
    the zoom keys apply to the highlighted pane (click a pane to pick it).

    ``info(path)`` gives the settings text beside the image (default ``infotext``); it is
    called on a worker thread. Call ``shutdown`` before the viewer is destroyed (closing it
    does).

    Signals:
        current_changed(int): the user moved to another index of the list.
        close_requested(): Esc or the Back button.
        action_requested(str, str): (action, path) from the toolbar, one of ``ACTIONS``.
    """

    current_changed = Signal(int)
    close_requested = Signal()
    action_requested = Signal(str, str)

    def __init__(
        self, info: Callable[[Path], str] | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ImageViewer")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.loader = ImageLoader(info if info is not None else infotext, parent=self)
        self.loader.image_loaded.connect(self._image_loaded)
        self._items: list[Path] = []
        self._index = -1
        self._step = 1
        self._keep_view = False
        self._comparing: tuple[Path, Path] | None = None
        self._active = 0
        self._differences: list[str] = []
        self.panes = (ImagePane(), ImagePane())
        self._build()
        for i, pane in enumerate(self.panes):
            pane.view_changed.connect(lambda zoom, pan, i=i: self._sync_view(i, zoom, pan))
            pane.zoom_changed.connect(self._update_zoom_label)
            pane.activated.connect(lambda i=i: self._activate(i))
        self._keys: dict[int, Callable[[], object]] = {
            Qt.Key.Key_Left: lambda: self.step(-1),
            Qt.Key.Key_PageUp: lambda: self.step(-1),
            Qt.Key.Key_Right: lambda: self.step(1),
            Qt.Key.Key_PageDown: lambda: self.step(1),
            Qt.Key.Key_Home: lambda: self.go_to(0),
            Qt.Key.Key_End: lambda: self.go_to(len(self._items) - 1),
            Qt.Key.Key_Escape: self.close_requested.emit,
            Qt.Key.Key_Plus: self.zoom_in,
            Qt.Key.Key_Equal: self.zoom_in,
            Qt.Key.Key_Minus: self.zoom_out,
            Qt.Key.Key_0: self.zoom_to_fit,
            Qt.Key.Key_1: self.zoom_actual,
            Qt.Key.Key_I: lambda: self.set_info_visible(not self.info_visible()),
        }
        self._show_empty()

    def _build(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 4, 6, 4)
        bar.setSpacing(6)
        self.back_button = self._button("Back", "Back to the gallery (Esc)")
        self.back_button.clicked.connect(self.close_requested.emit)
        self.title_label = QLabel()
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.zoom_label = QLabel()
        self.fit_button = self._button("Fit", "Fit the image to the window (0)")
        self.fit_button.clicked.connect(self.zoom_to_fit)
        self.actual_button = self._button("100 %", "Show the image at its actual size (1)")
        self.actual_button.clicked.connect(self.zoom_actual)
        self.info_button = self._button("Info", "Show or hide the settings panel (I)")
        self.info_button.setCheckable(True)
        self.info_button.setChecked(True)
        self.info_button.toggled.connect(self.set_info_visible)
        self.single_button = self._button("Single view", "Back to one image")
        self.single_button.clicked.connect(self.single_view)
        self.single_button.hide()
        for widget in (self.back_button, self.title_label):
            bar.addWidget(widget)
        bar.addStretch(1)
        for widget in (self.zoom_label, self.fit_button, self.actual_button, self.info_button):
            bar.addWidget(widget)
        bar.addWidget(self.single_button)
        bar.addSpacing(12)
        self.action_buttons: dict[str, QToolButton] = {}
        for action, text, tip in ACTIONS:
            button = self._button(text, tip)
            button.clicked.connect(lambda _=False, action=action: self._request(action))
            self.action_buttons[action] = button
            bar.addWidget(button)

        stage = QWidget()
        columns = QHBoxLayout(stage)
        columns.setContentsMargins(0, 0, 0, 0)
        columns.setSpacing(4)
        self.captions = (QLabel(), QLabel())
        self._columns: list[QWidget] = []
        for caption, pane in zip(self.captions, self.panes, strict=True):
            column = QWidget()
            box = QVBoxLayout(column)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(2)
            caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
            caption.hide()
            box.addWidget(caption)
            box.addWidget(pane, 1)
            columns.addWidget(column, 1)
            self._columns.append(column)
        self._columns[1].hide()

        self.info_view = QTextBrowser()
        self.info_view.setObjectName("ImageViewerInfo")
        self.info_view.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.info_view.setMinimumWidth(220)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(stage)
        self.splitter.addWidget(self.info_view)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setSizes([900, 320])

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)

    def _button(self, text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        # Buttons never take the focus: the arrow keys must keep stepping through images.
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        return button

    @property
    def pane(self) -> ImagePane:
        """The single-view pane (the left one while comparing)."""
        return self.panes[0]

    # -- the list --------------------------------------------------------------------------
    def set_items(self, paths: Sequence[Path], index: int) -> None:
        """Show ``paths[index]`` (clamped), fitted; the list is what the arrow keys walk."""
        self._leave_compare()
        self._items = [Path(p) for p in paths]
        self._index = max(0, min(index, len(self._items) - 1)) if self._items else -1
        self._step = 1
        self._keep_view = False
        self._show_current()

    def items(self) -> list[Path]:
        return list(self._items)

    def current_index(self) -> int:
        """The index shown in ``items()`` (-1 when the list is empty)."""
        return self._index

    def current_path(self) -> Path | None:
        """The image shown, or while comparing the highlighted pane's; None when empty."""
        if self._comparing is not None:
            return self._comparing[self._active]
        return self._items[self._index] if self._items else None

    def go_to(self, index: int) -> None:
        """Show ``items()[index]`` (clamped) and emit ``current_changed`` if it moved."""
        if self._comparing is not None or not self._items:
            return
        index = max(0, min(index, len(self._items) - 1))
        if index == self._index:
            return
        self._step = 1 if index > self._index else -1
        self._index = index
        self._keep_view = True
        self._show_current()
        self.current_changed.emit(index)

    def step(self, delta: int) -> None:
        """Move ``delta`` images along the list (stops at either end)."""
        if self._items:
            self.go_to(self._index + delta)

    def refresh(self) -> None:
        """Decode the shown image(s) again (a file changed or came back on disk)."""
        self.loader.clear()
        if self._comparing is not None:
            self.compare(*self._comparing)
        else:
            self._keep_view = True
            self._show_current()

    def _show_empty(self) -> None:
        self.pane.set_message("No images to show.")
        self.title_label.setText("")
        self.info_view.clear()
        self._update_zoom_label()
        self._update_actions()

    def _show_current(self) -> None:
        path = self.current_path()
        if path is None:
            self.loader.want([])
            self._show_empty()
            return
        loaded = self.loader.get(path)
        if loaded is not None:
            self._show_loaded(loaded)
        else:
            self.pane.set_loading(f"Loading {path.name}…")
            self._set_title(path, None)
            self.info_view.setPlainText("Loading…")
        self.loader.want(self._neighbourhood())
        self._update_actions()

    def _neighbourhood(self) -> list[Path]:
        """The shown image, then the next one in the direction of travel, then the other."""
        wanted = [self._items[self._index]]
        for offset in (self._step, -self._step):
            i = self._index + offset
            if 0 <= i < len(self._items):
                wanted.append(self._items[i])
        return wanted

    def _show_loaded(self, loaded: LoadedImage) -> None:
        self.pane.set_loaded(loaded, keep_view=self._keep_view)
        self._set_title(loaded.path, loaded.size() if loaded.ok else None)
        if loaded.ok:
            self.info_view.setHtml(info_html(loaded.info))
        else:
            self.info_view.setPlainText(loaded.error)

    def _set_title(self, path: Path, size: QSize | None) -> None:
        parts = [path.name]
        if size is not None:
            parts.append(f"{size.width()} × {size.height()}")
        parts.append(f"{self._index + 1} / {len(self._items)}")
        self.title_label.setText(" · ".join(parts))
        self.title_label.setToolTip(str(path))

    def _image_loaded(self, loaded: LoadedImage) -> None:
        if self._comparing is not None:
            for i, path in enumerate(self._comparing):
                if path == loaded.path:
                    self._show_compared(i, loaded)
            return
        if loaded.path == self.current_path():
            self._show_loaded(loaded)

    # -- compare ---------------------------------------------------------------------------
    def compare(self, left: Path, right: Path) -> None:
        """Show ``left`` and ``right`` side by side with shared zoom and pan."""
        self._comparing = (Path(left), Path(right))
        self._active = 0
        self._differences = []
        self._columns[1].show()
        self.single_button.show()
        self.title_label.setText(f"Compare: {self._comparing[0].name} ↔ {self._comparing[1].name}")
        self.title_label.setToolTip(f"{self._comparing[0]}\n{self._comparing[1]}")
        self.info_view.setPlainText("Loading…")
        self.panes[1].set_reference_width(None)
        for i, path in enumerate(self._comparing):
            self.captions[i].show()
            self.captions[i].setText(path.name)
            self.panes[i].highlighted = i == self._active
            self.panes[i].set_message("")
            self.panes[i].set_loading(f"Loading {path.name}…")
        for i, path in enumerate(self._comparing):
            loaded = self.loader.get(path)
            if loaded is not None:
                self._show_compared(i, loaded)
        self.loader.want(list(self._comparing))
        self._update_actions()
        self._update_zoom_label()

    def is_comparing(self) -> bool:
        return self._comparing is not None

    def compared(self) -> tuple[Path, Path] | None:
        return self._comparing

    def differences(self) -> list[str]:
        """The settings that differ between the compared images (empty until both load)."""
        return list(self._differences)

    def single_view(self) -> None:
        """Leave compare: show the highlighted image, in the list if it is part of it."""
        if self._comparing is None:
            return
        path = self._comparing[self._active]
        pair = list(self._comparing)
        if path in self._items:
            self._leave_compare()
            self._index = self._items.index(path)
            self._keep_view = False
            self._show_current()
            self.current_changed.emit(self._index)
        else:
            self.set_items(pair, pair.index(path))

    def _leave_compare(self) -> None:
        if self._comparing is None:
            return
        self._comparing = None
        self._active = 0
        self._differences = []
        self._columns[1].hide()
        self.single_button.hide()
        for caption, pane in zip(self.captions, self.panes, strict=True):
            caption.hide()
            pane.highlighted = False
            pane.set_reference_width(None)
        self.panes[1].set_message("")

    def _show_compared(self, i: int, loaded: LoadedImage) -> None:
        pane = self.panes[i]
        pane.set_loaded(loaded)
        size = f" · {loaded.size().width()} × {loaded.size().height()}" if loaded.ok else ""
        self.captions[i].setText(f"{loaded.path.name}{size}")
        self.captions[i].setToolTip(str(loaded.path))
        if i == 0:
            self.panes[1].set_reference_width(loaded.size().width() if loaded.ok else None)
        other = self.panes[1 - i]
        if other.has_image():  # the user may have zoomed the first while this one loaded
            pane.set_view(*other.view())
        self._update_compare_info()

    def _update_compare_info(self) -> None:
        assert self._comparing is not None
        if any(pane.is_loading() for pane in self.panes):
            return  # the table waits for both
        texts = []
        for pane in self.panes:
            loaded = pane.loaded()
            texts.append(loaded.info if loaded is not None else pane.message())
        rows = settings_rows(texts[0], texts[1])
        self._differences = [row.key for row in rows if row.differs]
        highlight = self.palette().color(QPalette.ColorRole.Highlight).darker(250).name()
        names = [path.name for path in self._comparing]
        self.info_view.setHtml(compare_html(rows, names[0], names[1], highlight))

    def _sync_view(self, source: int, zoom: float | None, pan: QPointF) -> None:
        if self._comparing is not None:
            self.panes[1 - source].set_view(zoom, pan)

    def _activate(self, i: int) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if self._comparing is None or i == self._active:
            return
        self._active = i
        for j, pane in enumerate(self.panes):
            pane.highlighted = j == i
            pane.update()
        self._update_zoom_label()
        self._update_actions()

    # -- zoom ------------------------------------------------------------------------------
    def _active_pane(self) -> ImagePane:
        return self.panes[self._active if self._comparing is not None else 0]

    def zoom(self) -> float:
        """The shown (highlighted) image's zoom: screen pixels per image pixel."""
        return self._active_pane().effective_zoom()

    def is_fit(self) -> bool:
        return self._active_pane().is_fit()

    def zoom_to_fit(self) -> None:
        self._active_pane().zoom_fit()

    def zoom_actual(self) -> None:
        self._active_pane().zoom_actual()

    def zoom_in(self) -> None:
        self._active_pane().zoom_by(ZOOM_STEP)

    def zoom_out(self) -> None:
        self._active_pane().zoom_by(1 / ZOOM_STEP)

    def _update_zoom_label(self) -> None:
        pane = self._active_pane()
        if not pane.has_image():
            self.zoom_label.setText("")
            return
        percent = f"{pane.effective_zoom() * 100:.0f} %"
        self.zoom_label.setText(f"Fit · {percent}" if pane.is_fit() else percent)

    # -- side panel, actions -----------------------------------------------------------------
    def info_visible(self) -> bool:
        return not self.info_view.isHidden()

    def set_info_visible(self, visible: bool) -> None:
        """Show or hide the settings panel (key I)."""
        self.info_view.setVisible(visible)
        if self.info_button.isChecked() != visible:
            self.info_button.setChecked(visible)

    def _request(self, action: str) -> None:
        path = self.current_path()
        if path is not None:
            self.action_requested.emit(action, str(path))

    def _update_actions(self) -> None:
        has_path = self.current_path() is not None
        for button in self.action_buttons.values():
            button.setEnabled(has_path)

    # -- events, shutdown --------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        blocked = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
        handler = self._keys.get(event.key())
        if handler is None or event.modifiers() & blocked:
            super().keyPressEvent(event)
            return
        handler()
        event.accept()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        # Shown over the gallery: the arrow keys must work without a click first.
        self.setFocus(Qt.FocusReason.OtherFocusReason)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop decoding and wait up to ``msecs`` for the worker threads; safe to call twice."""
        return self.loader.shutdown(msecs)
