"""Gallery benchmark: index search, the model filter and sync on a large gallery.

The gallery panel searches as the user types and pages lazily, so a search over ``n`` indexed
images must return its first page in a few milliseconds. Rows are inserted straight into the
index (writing ``n`` real PNGs would time the disk, not the index); ``sync`` is then timed on
a smaller folder of real files, both unchanged (the cost of opening the gallery) and from an
empty index (the cost per image of reading metadata).
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from desktop.engine.gallery import Gallery, index_row
from desktop.engine.request import GenerationRequest

WORDS = [
    "castle",
    "fox",
    "forest",
    "portrait",
    "city",
    "night",
    "rain",
    "neon",
    "mountain",
    "lake",
    "dragon",
    "robot",
    "cat",
    "flower",
    "desert",
    "ocean",
    "ship",
    "knight",
    "witch",
    "garden",
    "snow",
    "sunset",
    "galaxy",
    "temple",
    "bridge",
    "market",
]
MODELS = [f"model-{i:02d}" for i in range(24)]
REPEATS = 15


def _median_ms(action: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _fill(gallery: Gallery, n: int, rng: random.Random) -> float:
    """Insert ``n`` synthetic rows; returns the seconds it took."""
    now = time.time()
    rows = []
    for i in range(n):
        prompt = ", ".join(rng.sample(WORDS, 6)) + f", detailed {i}"
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt="blurry, lowres",
            sampler="DPM++ 2M",
            schedule="Karras",
            seed=rng.randrange(2**32),
            steps=20,
            cfg_scale=7.0,
            width=512,
            height=512,
        )
        row = index_row(
            gallery.root / "bench" / f"{i:06d}.png",
            request,
            model=rng.choice(MODELS),
            created=now - (n - i) * 60,
            favourite=rng.random() < 0.05,
            source="sandstorm",
        )
        rows.append(row)
    start = time.perf_counter()
    gallery._upsert(rows)  # the bulk path sync() uses, without files behind the rows
    return time.perf_counter() - start


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def run(n: int = 10_000, sync_files: int = 300) -> dict:
    """Time gallery queries on ``n`` indexed images and ``sync`` on ``sync_files`` real ones."""
    rng = random.Random(1234)
    label = _label(n)
    results: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory(prefix="sandstorm-gallery-bench-") as tmp:
        root = Path(tmp) / "pictures"
        with Gallery(root, Path(tmp) / "gallery.sqlite3") as gallery:
            results[f"gallery_index_fill_{label}_s"] = _fill(gallery, n, rng)
            results[f"gallery_search_{label}_ms"] = _median_ms(
                lambda: gallery.search("fox castle", limit=200)
            )
            results[f"gallery_search_all_{label}_ms"] = _median_ms(
                lambda: gallery.search(limit=200)
            )
            results[f"gallery_search_last_page_{label}_ms"] = _median_ms(
                lambda: gallery.search(limit=200, offset=max(0, n - 200))
            )
            results[f"gallery_search_model_{label}_ms"] = _median_ms(
                lambda: gallery.search("night", model=MODELS[3], favourites=False)
            )
            results[f"gallery_count_{label}_ms"] = _median_ms(lambda: gallery.count("fox"))
            results[f"gallery_models_{label}_ms"] = _median_ms(gallery.models)
            results["gallery_models_found"] = len(gallery.models())

        files_root = Path(tmp) / "files"
        with Gallery(files_root, Path(tmp) / "files.sqlite3") as gallery:
            image = Image.new("RGB", (64, 64), (90, 120, 200))
            for seed in range(sync_files):
                request = GenerationRequest(prompt=f"{rng.choice(WORDS)} study {seed}", seed=seed)
                gallery.save(image, request)
            results["gallery_sync_files"] = sync_files
            results["gallery_sync_unchanged_ms"] = _median_ms(gallery.sync, repeats=5)
            with gallery._lock:
                gallery._conn.execute("DELETE FROM images")
                gallery._conn.commit()
            start = time.perf_counter()
            added, _removed = gallery.sync()
            elapsed = time.perf_counter() - start
            results["gallery_sync_rebuild_ms_per_image"] = elapsed * 1000 / max(1, added)
    return results


if __name__ == "__main__":
    for key, value in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
