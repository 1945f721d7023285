"""Gallery panel benchmark: filling the model from a large index, and the first screen of
thumbnails.

``n`` index rows point at hard links to a few real 512×512 PNGs, so every row is a distinct
file that can be thumbnailed, without writing ``n`` images. Timed:

* ``gallery_model_first_page_ms``: a new model reading its first page (what opening the
  panel or changing a filter costs);
* ``gallery_model_populate_ms``: the first page plus fetching every further page;
* ``gallery_first_screen_thumbnails_ms``: from showing the panel to every visible cell
  holding its thumbnail, with a cold disk cache (each PNG decoded once);
* ``gallery_first_screen_cached_ms``: the same with the cache warm (the next start).
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
    from desktop.engine.gallery import GalleryItem

    day = gallery.folder_for()
    day.mkdir(parents=True, exist_ok=True)
    rows = []
    now = time.time()
    for i in range(n):
        path = day / f"{i:05d}-{i}.png"
        os.link(sources[i % len(sources)], path)
        item = GalleryItem(
            path=path,
            prompt=f"benchmark image {i}",
            model="bench-model",
            seed=i,
            width=SIDE,
            height=SIDE,
            created=now - (n - i),
        )
        rows.append((item, 0, 0))
    gallery._upsert(rows)


def _first_screen_ms(gallery, app) -> float:
    from desktop.ui.gallery_panel import GalleryPanel

    start = time.perf_counter()
    panel = GalleryPanel(gallery)
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
    }


if __name__ == "__main__":
    import json

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps(run(count), indent=2))
