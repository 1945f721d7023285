"""Gallery thumbnails: made off the GUI thread, cached on disk, newest request first.

A thumbnail is at most ``THUMB_SIZE`` pixels on its long side. JPEGs are decoded at a
reduced scale (``Image.draft``), other formats are decoded once and shrunk with
``reduce`` before the final resample; the result is written to
``cache_dir()/thumbnails/<sha1 of path and mtime>.webp`` so each image is decoded at most once
(an edited file gets a new key). Loading runs in a private ``QThreadPool``; the finished
``QImage`` crosses to the GUI thread in a signal and only there becomes a ``QPixmap``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageOps, features
from PySide6.QtCore import QObject, QThreadPool, Signal
from PySide6.QtGui import QImage

from desktop.engine import paths
from desktop.ui.qimage import pil_to_qimage
from desktop.ui.threads import lower_priority

THUMB_SIZE = 256
#: The ``thumbnail_failed`` reason of a file that no longer exists (deleted or moved away
#: while still in the index); the views draw a "missing" placeholder for it.
MISSING_REASON = "The file is missing."
#: Requests kept waiting at most; older ones (scrolled past) are dropped first.
MAX_PENDING = 512
_SUFFIX = ".webp" if features.check("webp") else ".png"
_FORMAT = "WEBP" if _SUFFIX == ".webp" else "PNG"


def thumbnail_dir() -> Path:
    """Where thumbnails are cached (a disposable cache: deleting it only costs time)."""
    return paths.cache_dir() / "thumbnails"


def cache_key(path: Path | str, mtime_ns: int) -> str:
    """The cache name of a file's thumbnail: a new modification time gives a new name."""
    text = f"{Path(path)}\0{mtime_ns}"
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_path(path: Path | str) -> Path:
    """The cache file for ``path`` as it is now on disk; raises ``OSError`` if it is gone."""
    mtime_ns = os.stat(path).st_mtime_ns
    return thumbnail_dir() / f"{cache_key(path, mtime_ns)}{_SUFFIX}"


def make_thumbnail(path: Path | str, size: int = THUMB_SIZE) -> Image.Image:
    """Decode ``path`` small: JPEG at a reduced scale, others reduced before resampling.

    Raises:
        OSError, ValueError, Image.DecompressionBombError: unreadable or damaged file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if image.format == "JPEG":
                # The decoder skips most of the work at 1/2, 1/4 or 1/8 scale.
                image.draft("RGB", (size, size))
            image.load()
            # Orientation comes from EXIF; without the transpose phone photos lie sideways.
            oriented = ImageOps.exif_transpose(image)
            # An integer box reduction first (cheap), then one good resample from about 2x.
            factor = max(1, max(oriented.width, oriented.height) // (size * 2))
            if factor > 1:
                oriented = oriented.reduce(factor)
            if oriented.mode not in ("RGB", "RGBA"):
                oriented = oriented.convert("RGBA" if "A" in oriented.getbands() else "RGB")
            thumb = oriented.copy() if oriented is image else oriented
            thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
            return thumb


def load_thumbnail(path: Path | str, size: int = THUMB_SIZE) -> tuple[QImage, bool]:
    """The thumbnail of ``path`` as a QImage, from the cache when possible.

    Returns:
        (image, made): ``made`` is True when the image was decoded (the cache was cold).

    Raises:
        OSError, ValueError: the file is gone or cannot be decoded.
    """
    target = cache_path(path)
    if target.is_file():
        cached = QImage(str(target))
        if not cached.isNull():
            return cached, False
    thumb = make_thumbnail(path, size)
    _write_cache(thumb, target)
    return pil_to_qimage(thumb), True


def _write_cache(thumb: Image.Image, target: Path) -> None:
    # Written under a unique name and renamed, so a reader never sees half a file; a full
    # or read-only cache only means the next start decodes again.
    tmp = target.with_name(f".{uuid.uuid4().hex}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        options = {"quality": 85, "method": 4} if _FORMAT == "WEBP" else {}
        thumb.save(tmp, format=_FORMAT, **options)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


class ThumbnailLoader(QObject):
    """Makes thumbnails on a private thread pool and reports them on the GUI thread.

    Requests are served newest first: while the user scrolls, what is on screen now is
    made before what scrolled past. Call ``shutdown`` before the loader is destroyed.

    Signals:
        thumbnail_ready(str, QImage): the path and its thumbnail.
        thumbnail_failed(str, str): the path and why it has no thumbnail.
    """

    thumbnail_ready = Signal(str, QImage)
    thumbnail_failed = Signal(str, str)

    def __init__(self, size: int = THUMB_SIZE, threads: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.size = size
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(1, threads))
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        self._closed = False
        #: How many thumbnails were decoded and how many came from the disk cache.
        self.made = 0
        self.cache_hits = 0
        #: Thread idents that made thumbnails (the GUI thread must never be among them).
        self.worker_threads: set[int] = set()

    def request(self, path: str) -> None:
        """Queue ``path``; a path already waiting moves to the front."""
        with self._lock:
            if self._closed or path in self._in_flight:
                return
            waiting = path in self._pending
            self._pending[path] = None
            self._pending.move_to_end(path)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        # The view asks again on every paint while a thumbnail is made: a path already
        # waiting has its pool task, and starting more would only queue empty work.
        if not waiting:
            self.pool.start(self._work)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._in_flight)

    def clear(self) -> None:
        """Forget waiting requests (a new search replaced the rows that asked)."""
        with self._lock:
            self._pending.clear()

    def cancel(self, paths: Iterable[str]) -> None:
        """Forget these waiting requests only: a view sharing the loader keeps its own."""
        with self._lock:
            for path in paths:
                self._pending.pop(path, None)

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until running work is done; True when the pool is idle."""
        return self.pool.waitForDone(msecs)

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Drop waiting requests and wait for the running ones; safe to call twice."""
        with self._lock:
            self._closed = True
            self._pending.clear()
        self.pool.clear()
        return self.pool.waitForDone(msecs)

    def _take(self) -> str | None:
        with self._lock:
            if self._closed or not self._pending:
                return None
            path, _ = self._pending.popitem(last=True)
            self._in_flight.add(path)
            return path

    def _work(self) -> None:
        # One pool task per request, but each takes the newest waiting path, not its own.
        path = self._take()
        if path is None:
            return
        lower_priority()
        try:
            self.worker_threads.add(threading.get_ident())
            image, made = load_thumbnail(path, self.size)
        except FileNotFoundError:
            self.thumbnail_failed.emit(path, MISSING_REASON)
        except Exception as exc:  # a damaged or vanished file must not kill the pool thread
            self.thumbnail_failed.emit(path, str(exc) or type(exc).__name__)
        else:
            with self._lock:
                if made:
                    self.made += 1
                else:
                    self.cache_hits += 1
            self.thumbnail_ready.emit(path, image)
        finally:
            with self._lock:
                self._in_flight.discard(path)
