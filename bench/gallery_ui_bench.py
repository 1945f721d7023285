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

SOURCES = 12
SIDE = 512
VIEW_SIZE = (1000, 700)


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


def _index_rows(gallery, sources: list[Path], n: int) -> None:
    from desktop.engine.gallery import index_row
    from desktop.engine.request import GenerationRequest

    day = gallery.folder_for()
    day.mkdir(parents=True, exist_ok=True)
    rows = []
    now = time.time()
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
                created=now - (n - i),
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
    """set_root to ``other`` (cold) and back (warm), then delete one image and undo."""
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
    }


if __name__ == "__main__":
    import json

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps(run(count), indent=2))
