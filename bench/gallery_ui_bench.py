"""Gallery panel benchmark: filling the model from a large index, and the first screen of
thumbnails.

``n`` index rows point at hard links to a few real 512×512 PNGs, so every row is a distinct
file that can be thumbnailed, without writing ``n`` images. Timed:

* ``gallery_model_first_page_ms``: a new model reading its first page (what opening the
  panel or changing a filter costs);
* ``gallery_model_populate_ms``: the first page plus fetching every further page;
* ``gallery_first_screen_thumbnails_ms``: from showing the panel to every visible cell
  holding its thumbnail, with a cold disk cache (each PNG decoded once);
* ``gallery_first_screen_cached_ms``: the same with the cache warm (the next start);
* ``gallery_set_root_cold_max_gap_ms``: the worst main-thread gap while
  ``GalleryPanel.set_root`` switches to another ``n``-image folder that is not indexed yet
  (opening and syncing it, reading every file's metadata, then switching the view), and
  ``gallery_set_root_cold_s`` how long until it showed;
* ``gallery_set_root_warm_max_gap_ms``: the same switching back to the indexed folder;
* ``gallery_undo_delete_max_gap_ms``: the worst gap from ``undo_delete`` of one image until
  it is re-indexed and the view reloaded.

The full-window browser (``GalleryBrowser``), on another ``n`` indexed images spread over
``BROWSER_DAYS`` days (so a header per day), in a ``BROWSER_SIZE`` window:

* ``browser_first_screen_cold_ms`` / ``_cached_ms``: from showing the browser (its panel
  already open, as when the user presses Ctrl+G) until every visible cell holds its
  thumbnail, with a cold disk cache and then a warm one (a new panel and browser);
* ``browser_scroll_max_gap_ms``: the worst gap while scrolling from the top to the bottom
  in steps of half a screen every 16 ms (a fast wheel), thumbnails loading meanwhile;
  ``browser_scroll_pages_read`` how many index pages that read;
* ``browser_resize_max_gap_ms``: the same while the thumbnail size goes from 160 to 256,
  down to 64 and back in slider steps, every 16 ms, halfway down the results;
* ``browser_search_max_gap_ms``: the same while a search is typed a key every 300 ms
  (each pause long enough for the debounced query to run) until the last query showed;
* ``browser_open_viewer_ms``: opening the viewer on the image in the middle (it takes a
  window of 2,000 paths around it).

Each gap figure comes with its 99th percentile (``…_p99_ms``) and the share of heartbeat
ticks late by more than 30 ms; ``browser_idle_max_gap_ms`` / ``_p99_ms`` are the same
heartbeat for 5 s with the browser shown and nothing to do: on a shared machine that is the
floor the others stand on.

Both run with garbage collection as the app does it (``desktop.ui.collector``: a full
collection waits until scrolling stops); without it a full collection of the bench's
~100,000 objects took 32 ms and gave a 41 ms gap, and in the folder switch the automatic
collections (20–24 ms each) ran on the syncing thread, holding the GIL.

The gap goal is ≤ 30 ms (a 10 ms heartbeat on the GUI thread, ``desktop.ui.responsiveness``).
The second folder holds hard links to a few tiny PNGs with Sandstorm metadata, so building
it costs well under a second.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")  # as the app runs (application.qt_defaults)

SOURCES = 12
SIDE = 512
VIEW_SIZE = (1000, 700)
BROWSER_SIZE = (1400, 900)
BROWSER_DAYS = 90
SEARCH_TEXT = "benchmark image 77"


def _make_sources(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(SOURCES):
        # Noise over a gradient: compresses like a real picture, unlike a flat colour.
        base = Image.linear_gradient("L").resize((SIDE, SIDE)).rotate(i * 30)
        noise = Image.effect_noise((SIDE, SIDE), 40 + i)
        image = Image.merge("RGB", (base, noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        path = folder / f"source-{i:02d}.png"
        image.save(path)
        files.append(path)
    return files


def _index_rows(gallery, sources: list[Path], n: int, days: float = 0.0) -> None:
    """Index ``n`` images (hard links to ``sources``), newest last; with ``days`` their
    times spread over that many days, else over the last ``n`` seconds."""
    from desktop.engine.gallery import index_row
    from desktop.engine.request import GenerationRequest

    day = gallery.folder_for()
    day.mkdir(parents=True, exist_ok=True)
    rows = []
    now = time.time()
    spacing = days * 86400 / n if days else 1.0
    for i in range(n):
        path = day / f"{i:05d}-{i}.png"
        _link(sources[i % len(sources)], path)
        stat = path.stat()
        request = GenerationRequest(prompt=f"benchmark image {i}", seed=i, width=SIDE, height=SIDE)
        # The file's real mtime and size: the panel's own sync then finds nothing to read.
        rows.append(
            index_row(
                path,
                request,
                model="bench-model",
                created=now - (n - i) * spacing,
                mtime_ns=stat.st_mtime_ns,
                size=stat.st_size,
                source="sandstorm",
            )
        )
    gallery._upsert(rows)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        import shutil

        shutil.copyfile(source, target)


def _tiny_folder(root: Path, n: int) -> Path:
    """``n`` tiny PNGs with Sandstorm metadata (hard links to a few), not indexed."""
    from PIL import Image

    from desktop.engine.gallery import save_png_with_metadata
    from desktop.engine.request import GenerationRequest

    sources = []
    for i in range(SOURCES):
        image = Image.new("RGB", (64, 64), (20 * i, 90, 200 - 10 * i))
        request = GenerationRequest(prompt=f"tiny study {i}", seed=i, width=64, height=64)
        sources.append(
            save_png_with_metadata(image, request, root.parent / "tiny-sources" / f"{i}.png")
        )
    day = root / "2024-05-01"
    day.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _link(sources[i % len(sources)], day / f"{i:05d}-{i}.png")
    return root


def _wait_synced(panel, app, timeout: float = 120.0) -> None:
    done = []
    panel.index_synced.connect(lambda *_: done.append(1))
    deadline = time.perf_counter() + timeout
    while not done:
        if time.perf_counter() > deadline:
            raise RuntimeError("the panel's first sync did not finish")
        app.processEvents()
        time.sleep(0.001)


def _max_gap_ms(panel, action) -> tuple[float, float]:
    """Run ``action`` and measure until the panel's next ``index_synced``: (gap ms, s)."""
    from desktop.ui.responsiveness import measure_max_gap

    done: list[int] = []

    def mark(*_args: int) -> None:
        done.append(1)

    panel.index_synced.connect(mark)
    start = time.perf_counter()
    try:
        gap = measure_max_gap(action, lambda: bool(done), timeout=300.0)
    finally:
        panel.index_synced.disconnect(mark)
    return gap * 1000.0, time.perf_counter() - start


def _panel_work(root: Path, other: Path, app) -> dict:
    """set_root to ``other`` (cold) and back (warm), then delete one image and undo, with
    garbage collection as the app runs it (``desktop.ui.collector``)."""
    from desktop.ui.collector import IdleCollector

    collector = IdleCollector()
    collector.start()
    try:
        return _panel_figures(root, other, app)
    finally:
        collector.stop()


def _panel_figures(root: Path, other: Path, app) -> dict:
    from desktop.ui.delete_bin import DeleteBin
    from desktop.ui.gallery_panel import GalleryPanel

    panel = GalleryPanel(root, delete_bin=DeleteBin(use_trash=False))
    panel.resize(*VIEW_SIZE)
    panel.show()
    try:
        _wait_synced(panel, app)
        cold_gap, cold_s = _max_gap_ms(panel, lambda: panel.set_root(other))
        assert panel.model.total > 0 and panel.root == other.resolve()
        warm_gap, warm_s = _max_gap_ms(panel, lambda: panel.set_root(root))
        assert panel.root == root.resolve()
        panel.select_row(5)
        deleted = panel.delete_selected()
        assert len(deleted) == 1
        undo_gap, undo_s = _max_gap_ms(panel, panel.undo_delete)
    finally:
        panel.shutdown()
        panel.deleteLater()
        app.processEvents()
    return {
        "gallery_set_root_cold_max_gap_ms": round(cold_gap, 1),
        "gallery_set_root_cold_s": round(cold_s, 2),
        "gallery_set_root_warm_max_gap_ms": round(warm_gap, 1),
        "gallery_set_root_warm_s": round(warm_s, 2),
        "gallery_undo_delete_max_gap_ms": round(undo_gap, 1),
        "gallery_undo_delete_s": round(undo_s, 3),
    }


def _first_screen_ms(gallery, app) -> float:
    from desktop.ui.gallery_panel import GalleryPanel

    start = time.perf_counter()
    panel = GalleryPanel(gallery.root)
    panel.resize(*VIEW_SIZE)
    panel.show()
    view, model = panel.view, panel.model
    deadline = start + 120.0
    try:
        while time.perf_counter() < deadline:
            app.processEvents()
            visible = [
                model.item(row)
                for row in range(model.rowCount())
                if view.visualRect(model.index(row)).intersects(view.viewport().rect())
            ]
            if visible and all(model.pixmap(item.path) is not None for item in visible):
                return (time.perf_counter() - start) * 1000.0
            time.sleep(0.001)
        raise RuntimeError("the first screen of thumbnails did not finish in 120 s")
    finally:
        panel.shutdown()
        panel.deleteLater()
        app.processEvents()


def _browser(root: Path, app):
    """A synced panel of ``root`` and its browser, not shown yet."""
    from desktop.ui.delete_bin import DeleteBin
    from desktop.ui.gallery_browser import GalleryBrowser
    from desktop.ui.gallery_panel import GalleryPanel

    panel = GalleryPanel(root, delete_bin=DeleteBin(use_trash=False))
    _wait_synced(panel, app)
    browser = GalleryBrowser(panel)
    browser.resize(*BROWSER_SIZE)
    return panel, browser


def _close(panel, browser, app) -> None:
    browser.shutdown()
    panel.shutdown()
    browser.deleteLater()
    panel.deleteLater()
    app.processEvents()


def _browser_first_screen_ms(browser, app) -> float:
    """Show ``browser`` and wait until every visible cell holds its thumbnail."""
    grid, pages = browser.grid, browser.pages
    start = time.perf_counter()
    browser.show()
    deadline = start + 120.0
    while time.perf_counter() < deadline:
        app.processEvents()
        visible = [pages.peek(p) for p in grid.visible_positions()]
        if visible and all(item is not None and pages.has_thumbnail(item.path) for item in visible):
            return (time.perf_counter() - start) * 1000.0
        time.sleep(0.001)
    raise RuntimeError("the browser's first screen of thumbnails did not finish in 120 s")


class _Gaps:
    """The gaps between a 10 ms heartbeat's ticks on the GUI thread while work runs."""

    def __init__(self, gaps_s: list[float]) -> None:
        self.ms = sorted(g * 1000.0 for g in gaps_s) or [0.0]

    @property
    def worst(self) -> float:
        return self.ms[-1]

    @property
    def p99(self) -> float:
        return self.ms[min(len(self.ms) - 1, int(len(self.ms) * 0.99))]

    @property
    def late_percent(self) -> float:
        return 100.0 * sum(g > 30.0 for g in self.ms) / len(self.ms)

    def figures(self, name: str) -> dict:
        return {
            f"{name}_max_gap_ms": round(self.worst, 1),
            f"{name}_p99_ms": round(self.p99, 1),
            f"{name}_late_percent": round(self.late_percent, 2),
        }


def _measure_gaps(start, finished, timeout: float = 600.0) -> _Gaps:
    """Like ``responsiveness.measure_max_gap``, keeping every gap, not only the worst."""
    from PySide6.QtCore import QEventLoop, QTimer

    from desktop.ui.responsiveness import Heartbeat

    gaps: list[float] = []
    beat = Heartbeat(10)
    original = beat._tick

    def tick() -> None:
        before = beat.max_gap
        beat.max_gap = 0.0
        original()
        gaps.append(beat.max_gap)
        beat.max_gap = max(before, beat.max_gap)

    beat._timer.timeout.disconnect()
    beat._timer.timeout.connect(tick)
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(5)
    poll.timeout.connect(lambda: loop.quit() if finished() else None)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    beat.start()
    start()
    try:
        if not finished():
            poll.start()
            deadline.start(int(timeout * 1000))
            loop.exec()
        if not finished():
            raise TimeoutError(f"the work did not finish within {timeout:g} s")
    finally:
        poll.stop()
        deadline.stop()
        beat._timer.stop()
        beat.deleteLater()
    return _Gaps(gaps)


def _stepping_gaps(step, finished, interval_ms: int = 16) -> _Gaps:
    """Call ``step()`` every ``interval_ms`` until ``finished()``; the GUI thread's gaps."""
    from PySide6.QtCore import QTimer

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(step)
    try:
        return _measure_gaps(timer.start, finished)
    finally:
        timer.stop()


def _idle_gaps(seconds: float = 5.0) -> _Gaps:
    """The heartbeat's gaps while nothing at all is asked of the GUI thread."""
    until = time.perf_counter() + seconds
    return _measure_gaps(lambda: None, lambda: time.perf_counter() >= until)


def _scroll_gap(browser) -> tuple[_Gaps, float, int, int]:
    """Scroll from top to bottom in half screens: (gaps, seconds, steps, pages read)."""
    bar = browser.grid.verticalScrollBar()
    bar.setValue(0)
    pages_before = browser.pages.pages_read
    steps = [0]

    def step() -> None:
        steps[0] += 1
        bar.setValue(min(bar.maximum(), bar.value() + bar.pageStep() // 2))

    start = time.perf_counter()
    gaps = _stepping_gaps(step, lambda: bar.value() >= bar.maximum())
    took = time.perf_counter() - start
    return gaps, took, steps[0], browser.pages.pages_read - pages_before


def _resize_gap(browser) -> _Gaps:
    """Change the thumbnail size slider step by step, halfway down the results."""
    from desktop.ui.gallery_view import MAX_THUMBNAIL, MIN_THUMBNAIL, THUMBNAIL_STEP

    bar = browser.grid.verticalScrollBar()
    bar.setValue(bar.maximum() // 2)
    size = browser.thumbnail_size
    sizes = list(range(size, MAX_THUMBNAIL + 1, THUMBNAIL_STEP))
    sizes += list(range(MAX_THUMBNAIL, MIN_THUMBNAIL - 1, -THUMBNAIL_STEP))
    sizes += list(range(MIN_THUMBNAIL, size + 1, THUMBNAIL_STEP))
    todo = list(sizes)

    def step() -> None:
        if todo:
            browser.size_slider.setValue(todo.pop(0))

    return _stepping_gaps(step, lambda: not todo)


def _search_gap(browser) -> _Gaps:
    """Type ``SEARCH_TEXT`` a key every 300 ms, until its results show."""
    typed = [""]

    def step() -> None:
        if len(typed[0]) < len(SEARCH_TEXT):
            typed[0] = SEARCH_TEXT[: len(typed[0]) + 1]
            browser.search_edit.setText(typed[0])

    def shown() -> bool:
        return browser.pages.filter.text == SEARCH_TEXT and not browser.pages.loading

    gaps = _stepping_gaps(step, shown, interval_ms=300)
    assert browser.pages.total > 0
    return gaps


def _browser_work(root: Path, app) -> dict:
    """The full-window browser on ``root``: first screens, scrolling, sizes, search, with
    garbage collection run as the app runs it (``desktop.ui.collector``)."""
    from desktop.ui.collector import IdleCollector

    collector = IdleCollector()
    collector.start()
    try:
        return _browser_figures(root, app)
    finally:
        collector.stop()


def _browser_figures(root: Path, app) -> dict:
    panel, browser = _browser(root, app)
    try:
        cold = _browser_first_screen_ms(browser, app)
    finally:
        _close(panel, browser, app)
    panel, browser = _browser(root, app)
    try:
        cached = _browser_first_screen_ms(browser, app)
        idle = _idle_gaps()
        scroll, scroll_s, steps, pages_read = _scroll_gap(browser)
        resize = _resize_gap(browser)
        start = time.perf_counter()
        browser.open_position(browser.pages.total // 2)
        open_viewer = (time.perf_counter() - start) * 1000.0
        browser.back()
        search = _search_gap(browser)
    finally:
        _close(panel, browser, app)
    return {
        "browser_first_screen_cold_ms": round(cold, 1),
        "browser_first_screen_cached_ms": round(cached, 1),
        **idle.figures("browser_idle"),
        **scroll.figures("browser_scroll"),
        "browser_scroll_s": round(scroll_s, 2),
        "browser_scroll_steps": steps,
        "browser_scroll_pages_read": pages_read,
        **resize.figures("browser_resize"),
        **search.figures("browser_search"),
        "browser_open_viewer_ms": round(open_viewer, 1),
    }


def run_browser(n: int = 10_000) -> dict:
    """Only the full-window browser's figures, on ``n`` images over ``BROWSER_DAYS`` days."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    previous = os.environ.get("SANDSTORM_HOME")
    with tempfile.TemporaryDirectory(prefix="sandstorm-gallery-browser-") as tmp:
        os.environ["SANDSTORM_HOME"] = tmp
        try:
            from desktop.engine.gallery import Gallery

            sources = _make_sources(Path(tmp) / "sources")
            with Gallery(root=Path(tmp) / "browse") as gallery:
                _index_rows(gallery, sources, n, days=BROWSER_DAYS)
                days = len(gallery.day_counts())
            result = {"browser_images": n, "browser_days": days}
            result.update(_browser_work(Path(tmp) / "browse", app))
        finally:
            if previous is None:
                os.environ.pop("SANDSTORM_HOME", None)
            else:
                os.environ["SANDSTORM_HOME"] = previous
    return result


def run(n: int = 10_000) -> dict:
    """Build an ``n``-image gallery in a temporary home and time the panel on it."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    previous = os.environ.get("SANDSTORM_HOME")
    with tempfile.TemporaryDirectory(prefix="sandstorm-gallery-ui-") as tmp:
        os.environ["SANDSTORM_HOME"] = tmp
        try:
            from desktop.engine.gallery import Gallery
            from desktop.ui.gallery_model import GalleryModel

            sources = _make_sources(Path(tmp) / "sources")
            with Gallery(root=Path(tmp) / "pictures") as gallery:
                _index_rows(gallery, sources, n)

                start = time.perf_counter()
                model = GalleryModel(gallery, None)
                first_page = (time.perf_counter() - start) * 1000.0
                model.fetch_all()
                populate = (time.perf_counter() - start) * 1000.0
                assert model.rowCount() == n, (model.rowCount(), n)

                cold = _first_screen_ms(gallery, app)
                warm = _first_screen_ms(gallery, app)
            other = _tiny_folder(Path(tmp) / "other-pictures", n)
            panel_work = _panel_work(Path(tmp) / "pictures", other, app)
        finally:
            if previous is None:
                os.environ.pop("SANDSTORM_HOME", None)
            else:
                os.environ["SANDSTORM_HOME"] = previous
    return {
        "gallery_images": n,
        "gallery_model_first_page_ms": round(first_page, 2),
        "gallery_model_populate_ms": round(populate, 1),
        "gallery_first_screen_thumbnails_ms": round(cold, 1),
        "gallery_first_screen_cached_ms": round(warm, 1),
        **panel_work,
        **run_browser(n),
    }


if __name__ == "__main__":
    import json

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 10_000
    only_browser = "--browser" in sys.argv
    print(json.dumps(run_browser(count) if only_browser else run(count), indent=2))
