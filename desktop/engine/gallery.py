"""The gallery: finished images saved atomically with metadata, and a searchable index.

Images go to ``<root>/YYYY-MM-DD/NNNNN-<seed>.png``. Each is written to a hidden temporary
file in the same folder, flushed to disk and renamed into place, so a crash or a full disk
never leaves half a PNG where the gallery looks. The SQLite index (WAL mode) is a cache of
the files' metadata: ``sync()`` brings it in line with the folder, so images copied in by
hand appear and deleted ones disappear.

One ``Gallery`` may be shared between threads (the window searches from the GUI thread while
the worker saves): a single connection is used under a lock, and the slow part of ``sync()``
(reading new files) runs outside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from desktop.engine import hashing, paths
from desktop.engine.errors import ModelError, RequestError, SandstormError
from desktop.engine.metadata import ImageMetadata, model_display_name, png_info, read_metadata
from desktop.engine.models import ModelInfo
from desktop.engine.request import GenerationRequest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".png.part"
#: Temporary files older than this are leftovers of a crash (a live save takes well under it).
STALE_TEMP_SECONDS = 600
INDEX_NAME = "gallery.sqlite3"
SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^(\d{5,})-")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT 'none',
    prompt TEXT NOT NULL DEFAULT '',
    prompt_fold TEXT NOT NULL DEFAULT '',
    negative TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    sampler TEXT NOT NULL DEFAULT '',
    schedule TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    steps INTEGER,
    cfg_scale REAL,
    width INTEGER,
    height INTEGER,
    created REAL NOT NULL,
    favourite INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_root_created ON images (root, created DESC, path DESC);
CREATE INDEX IF NOT EXISTS images_root_model ON images (root, model, created DESC, path DESC);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = (
    "path, source, prompt, negative, model, sampler, schedule, seed, steps, cfg_scale, "
    "width, height, created, favourite"
)


class SaveError(SandstormError):
    """An image could not be written to the gallery; the caller still has it in memory."""


@dataclass(frozen=True)
class GalleryItem:
    """One indexed image. Settings are those found in its metadata ("" / None if none)."""

    path: Path
    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""
    sampler: str = ""
    schedule: str = ""
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    created: float = 0.0
    favourite: bool = False
    source: str = "none"

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.created)


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (the folder is read-only)"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return exc.strerror or str(exc) or type(exc).__name__


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; Windows cannot open a directory for this.
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def save_png_with_metadata(
    image: Image.Image,
    request: GenerationRequest,
    path: Path | str,
    model: ModelInfo | None = None,
    model_hash: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``image`` as a PNG with both metadata chunks, atomically.

    The PNG is written to a hidden temporary file next to ``path``, fsynced and renamed, so
    ``path`` is either the complete new image or untouched. ``model_hash`` defaults to the
    cached hash of ``model`` (computed once per model file).

    Raises:
        SaveError: the folder is read-only, the disk is full, ... (no partial file remains).
    """
    target = Path(path)
    folder = target.parent
    if model_hash is None and model is not None:
        model_hash = safe_model_hash(model)
    info = png_info(request, model.name if model else None, model_hash)
    tmp = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            _prepare(image).save(handle, format="PNG", pnginfo=info)
            handle.flush()
            os.fsync(handle.fileno())
        if not overwrite and target.exists():
            raise FileExistsError(errno.EEXIST, "a file with that name already exists")
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SaveError(
            f"Could not save the image to {folder}: {_describe_os_error(exc)}."
        ) from exc
    except BaseException:
        # Any other failure (a bug, KeyboardInterrupt) must not leave the temporary file either.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)
    return target


def safe_model_hash(model: ModelInfo) -> str | None:
    """The model's short hash, or None when it cannot be read (saving must not fail on it)."""
    try:
        return hashing.model_hash(model.path)
    except (ModelError, OSError):
        return None


def _timestamp(value: dt.datetime | dt.date | float | int | None, end: bool) -> float | None:
    """A search bound as a POSIX time. A date ``until`` includes that whole day."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # datetimes keep microseconds only: an item's own created_at as an "until" bound
        # must still include the item, whose float time may lie just past the truncation.
        return value.timestamp() + (1e-6 if end else 0.0)
    if isinstance(value, dt.date):
        day = value + dt.timedelta(days=1) if end else value
        return dt.datetime.combine(day, dt.time()).timestamp()
    return float(value)


class Gallery:
    """Saves images into the output folder and keeps the searchable index.

    Args:
        root: output folder; defaults to ``paths.pictures_dir()``.
        index_path: SQLite file; defaults to ``paths.data_dir()/gallery.sqlite3``. One index
            may hold several roots; every query is limited to this gallery's root.

    The index is not synced on construction (it may take seconds on a large folder): call
    ``sync()`` from a worker thread when the gallery opens.
    """

    def __init__(self, root: Path | str | None = None, index_path: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.pictures_dir()
        self.root = self.root.expanduser().resolve()
        self.index_path = Path(index_path) if index_path else paths.data_dir() / INDEX_NAME
        self._root_key = str(self.root)
        self._lock = threading.RLock()
        self._name_lock = threading.Lock()
        self._counters: dict[Path, int] = {}
        self._conn = self._open_index()
        self.clean_temp_files()

    # -- index connection ----------------------------------------------------------------
    def _open_index(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            # The index is only a cache of the files' metadata: set a broken one aside and
            # rebuild it, rather than leaving the gallery unusable.
            broken = self.index_path.with_name(self.index_path.name + f".broken-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.index_path, broken)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.index_path, check_same_thread=False, timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is not None and row[0] != str(SCHEMA_VERSION):
                # Another version's index: it is only a cache, so rebuild it from the files.
                conn.executescript("DROP TABLE images;")
                conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- saving ----------------------------------------------------------------------------
    def folder_for(self, when: dt.date | None = None) -> Path:
        """The dated sub-folder new images go to."""
        return self.root / (when or dt.date.today()).isoformat()

    def _next_number(self, folder: Path) -> int:
        if folder not in self._counters:
            highest = 0
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    match = _NAME_RE.match(entry.name)
                    if match:
                        highest = max(highest, int(match.group(1)))
            self._counters[folder] = highest
        self._counters[folder] += 1
        return self._counters[folder]

    def save(
        self,
        image: Image.Image,
        request: GenerationRequest,
        model: ModelInfo | None = None,
        model_hash: str | None = None,
    ) -> GalleryItem:
        """Save one finished image with its metadata and index it.

        ``request`` is the single-image request with a concrete seed.

        Raises:
            RequestError: the request's seed is still -1 (random).
            SaveError: the image could not be written; nothing is left on disk or indexed.
        """
        if request.seed == -1:
            raise RequestError("Resolve the seed before saving: the saved settings must match.")
        if model_hash is None and model is not None:
            # The first hash of a large model takes seconds; later ones come from the cache.
            model_hash = safe_model_hash(model)
        folder = self.folder_for()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SaveError(
                f"Could not save the image to {folder}: {_describe_os_error(exc)}."
            ) from exc
        # Encoding and fsync run outside the index lock, so the GUI thread's searches never
        # wait on the disk; only the choice of a free name is serialised.
        for _attempt in range(100):
            with self._name_lock:
                while True:
                    target = folder / f"{self._next_number(folder):05d}-{request.seed}.png"
                    if not target.exists():
                        break
            try:
                save_png_with_metadata(image, request, target, model, model_hash, overwrite=False)
                break
            except SaveError as exc:
                # Another Sandstorm window took the same name a moment earlier: take the next.
                if not isinstance(exc.__cause__, FileExistsError):
                    raise
        else:
            raise SaveError(f"Could not save the image to {folder}: no free file name.")
        try:
            stat = target.stat()
        except OSError as exc:
            raise SaveError(f"The image saved to {target} vanished: {exc}.") from exc
        item = GalleryItem(
            path=target,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            model=model_display_name(request, model.name if model else None),
            sampler=request.sampler,
            schedule=request.schedule,
            seed=request.seed,
            steps=request.steps,
            cfg_scale=float(request.cfg_scale),
            width=image.width,
            height=image.height,
            created=stat.st_mtime,
            source="sandstorm",
        )
        # A failure here only delays indexing: the file is safe and sync() adds it.
        with contextlib.suppress(sqlite3.Error):
            self._upsert([(item, stat.st_mtime_ns, stat.st_size)])
        return item

    # -- index maintenance ---------------------------------------------------------------
    def _upsert(self, rows: Iterable[tuple[GalleryItem, int, int]]) -> None:
        """Insert or refresh rows; the favourite flag of a known path is kept."""
        with self._lock:
            self._conn.executemany(
                """
                INSERT INTO images (path, root, mtime_ns, size, source, prompt, prompt_fold,
                    negative, model, sampler, schedule, seed, steps, cfg_scale, width, height,
                    created, favourite)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(path) DO UPDATE SET
                    root=excluded.root, mtime_ns=excluded.mtime_ns, size=excluded.size,
                    source=excluded.source, prompt=excluded.prompt,
                    prompt_fold=excluded.prompt_fold, negative=excluded.negative,
                    model=excluded.model, sampler=excluded.sampler,
                    schedule=excluded.schedule, seed=excluded.seed, steps=excluded.steps,
                    cfg_scale=excluded.cfg_scale, width=excluded.width,
                    height=excluded.height, created=excluded.created
                """,
                (
                    (
                        str(item.path),
                        self._root_key,
                        mtime_ns,
                        size,
                        item.source,
                        item.prompt,
                        item.prompt.casefold(),
                        item.negative_prompt,
                        item.model,
                        item.sampler,
                        item.schedule,
                        item.seed,
                        item.steps,
                        item.cfg_scale,
                        item.width,
                        item.height,
                        item.created,
                        int(item.favourite),
                    )
                    for item, mtime_ns, size in rows
                ),
            )
            self._conn.commit()

    def clean_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Delete temporary files left by an interrupted save; returns how many."""
        removed = 0
        cutoff = time.time() - max_age
        for folder, _dirs, files in self._walk():
            for name in files:
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    path = Path(folder) / name
                    try:
                        if path.stat().st_mtime <= cutoff:
                            path.unlink()
                            removed += 1
                    except OSError:
                        continue
        return removed

    def _walk(self) -> Iterable[tuple[str, list[str], list[str]]]:
        if not self.root.is_dir():
            return []
        return os.walk(self.root, onerror=None)

    def _scan_files(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for folder, dirs, files in self._walk():
            # Hidden folders (.thumbnails, .trash) are never part of the gallery.
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def sync(self) -> tuple[int, int]:
        """Bring the index in line with the folder; returns (added or changed, removed).

        Files are compared by path, modification time and size; metadata is read only for
        new or changed files, so a sync of an unchanged gallery is a directory walk.
        """
        self.clean_temp_files()
        # The index is read before the folder: an image saved while the folder is walked is
        # then at worst read twice, never dropped as "deleted".
        with self._lock:
            known = {
                path: (mtime, size)
                for path, mtime, size in self._conn.execute(
                    "SELECT path, mtime_ns, size FROM images WHERE root = ?", (self._root_key,)
                )
            }
        on_disk = self._scan_files()
        gone = [path for path in known if path not in on_disk]
        fresh = [path for path, key in on_disk.items() if known.get(path) != key]
        rows = []
        for path in fresh:
            mtime_ns, size = on_disk[path]
            rows.append(
                (_item_from_metadata(Path(path), read_metadata(path), mtime_ns), mtime_ns, size)
            )
        with self._lock:
            if gone:
                self._conn.executemany("DELETE FROM images WHERE path = ?", ((p,) for p in gone))
                self._conn.commit()
            if rows:
                self._upsert(rows)
        return len(rows), len(gone)

    # -- queries ---------------------------------------------------------------------------
    def _where(
        self,
        text: str,
        model: str | None,
        favourites: bool,
        since: dt.datetime | dt.date | float | None,
        until: dt.datetime | dt.date | float | None,
    ) -> tuple[str, list]:
        clauses = ["root = ?"]
        args: list = [self._root_key]
        for word in text.casefold().split():
            clauses.append("instr(prompt_fold, ?) > 0")
            args.append(word)
        if model:
            clauses.append("model = ?")
            args.append(model)
        if favourites:
            clauses.append("favourite = 1")
        start, stop = _timestamp(since, end=False), _timestamp(until, end=True)
        if start is not None:
            clauses.append("created >= ?")
            args.append(start)
        if stop is not None:
            # A date bound already points at the next midnight; a time bound is inclusive.
            clauses.append("created < ?" if _is_date(until) else "created <= ?")
            args.append(stop)
        return " AND ".join(clauses), args

    def search(
        self,
        text: str = "",
        model: str | None = None,
        favourites: bool = False,
        since: dt.datetime | dt.date | float | None = None,
        until: dt.datetime | dt.date | float | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[GalleryItem]:
        """Indexed images, newest first.

        Args:
            text: words that must all appear in the prompt (case-insensitive, any order).
            model: exact model name.
            favourites: only favourites.
            since: created at or after this time (a date means its midnight).
            until: created at or before this time (a date includes that whole day).
            limit, offset: the page to return, for lazy loading.
        """
        where, args = self._where(text, model, favourites, since, until)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM images WHERE {where} "
                "ORDER BY created DESC, path DESC LIMIT ? OFFSET ?",
                [*args, max(0, int(limit)), max(0, int(offset))],
            ).fetchall()
        return [_item_from_row(row) for row in rows]

    def count(
        self,
        text: str = "",
        model: str | None = None,
        favourites: bool = False,
        since: dt.datetime | dt.date | float | None = None,
        until: dt.datetime | dt.date | float | None = None,
    ) -> int:
        """How many images ``search`` with the same filters would find in total."""
        where, args = self._where(text, model, favourites, since, until)
        with self._lock:
            (total,) = self._conn.execute(
                f"SELECT COUNT(*) FROM images WHERE {where}", args
            ).fetchone()
        return int(total)

    def get(self, path: Path | str) -> GalleryItem | None:
        """The indexed item for a file, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM images WHERE path = ?", (self._key(path),)
            ).fetchone()
        return _item_from_row(row) if row else None

    def models(self) -> list[str]:
        """Model names used by indexed images, for the model filter."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT model FROM images WHERE root = ? AND model != '' "
                "ORDER BY model COLLATE NOCASE",
                (self._root_key,),
            ).fetchall()
        return [row[0] for row in rows]

    def set_favourite(self, path: Path | str, flag: bool = True) -> bool:
        """Mark or unmark an image as a favourite; False when it is not in the index."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE images SET favourite = ? WHERE path = ?", (int(flag), self._key(path))
            )
            self._conn.commit()
        return cursor.rowcount > 0

    def forget(self, path: Path | str) -> bool:
        """Remove an image from the index (the caller deletes or trashes the file)."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM images WHERE path = ?", (self._key(path),))
            self._conn.commit()
        return cursor.rowcount > 0

    @staticmethod
    def _key(path: Path | str) -> str:
        return str(Path(path).expanduser().resolve())


def _is_date(value: object) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _item_from_metadata(path: Path, meta: ImageMetadata, mtime_ns: int) -> GalleryItem:
    request = meta.request
    if request is None:
        return GalleryItem(path=path, created=mtime_ns / 1e9, source=meta.source)
    return GalleryItem(
        path=path,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        model=meta.model_name or model_display_name(request),
        sampler=request.sampler,
        schedule=request.schedule,
        seed=request.seed if request.seed != -1 else None,
        steps=request.steps,
        cfg_scale=float(request.cfg_scale),
        width=request.width,
        height=request.height,
        created=mtime_ns / 1e9,
        source=meta.source,
    )


def _item_from_row(row: tuple) -> GalleryItem:
    (path, source, prompt, negative, model, sampler, schedule, seed, steps, cfg, w, h) = row[:12]
    created, favourite = row[12], row[13]
    return GalleryItem(
        path=Path(path),
        prompt=prompt,
        negative_prompt=negative,
        model=model,
        sampler=sampler,
        schedule=schedule,
        seed=seed,
        steps=steps,
        cfg_scale=cfg,
        width=w,
        height=h,
        created=created,
        favourite=bool(favourite),
        source=source,
    )
