"""The gallery: finished images saved atomically with metadata, and a searchable index.

Images go to ``<root>/YYYY-MM-DD/NNNNN-<seed>.png``. Each is written to a hidden temporary
file in the same folder, flushed to disk and renamed into place, so a crash or a full disk
never leaves half a PNG where the gallery looks. The SQLite index (WAL mode) is a cache of
the files' metadata: ``sync()`` brings it in line with the folder, so images copied in by
hand appear and deleted ones disappear.

**The index's columns follow the request's declarations.** Besides the file columns (path,
root, modification time, size, source, created, favourite, the model's display name, the
case-folded prompt for search and the whole request as JSON) every setting declared with
``index=True`` in ``desktop.engine.request`` gets a column of its kind (int: INTEGER,
float: REAL, text: TEXT). The columns' signature is stored in the ``meta`` table; when the
declarations change, the index is dropped and rebuilt from the files (favourites are
carried over). A ``GalleryItem`` is built in one way only, ``GalleryItem.from_row``, from
the same row that saving and syncing write.

Opening a ``Gallery`` is cheap (it connects to the index and walks nothing), so a caller
may open one per job. Leftover temporary files of an interrupted save are removed by
``sync()``, during the folder walk it does anyway.

One ``Gallery`` may be shared between threads (the window searches from the GUI thread while
a worker saves or syncs): a single connection is used under a lock, the slow part of
``sync()`` (reading new files) runs outside it and its writes are committed in small batches,
so a search never waits long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from desktop.engine import hashing, paths
from desktop.engine.durable import fsync_folder
from desktop.engine.errors import ModelError, RequestError, SandstormError
from desktop.engine.metadata import ImageMetadata, model_display_name, png_info, read_metadata
from desktop.engine.models import ModelInfo
from desktop.engine.request import REQUEST_VERSION, GenerationRequest, request_fields
from desktop.engine.resources import Resources
from desktop.engine.schema import FieldInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".png.part"
#: Temporary files older than this are leftovers of a crash (a live save takes well under it).
STALE_TEMP_SECONDS = 600
INDEX_NAME = "gallery.sqlite3"
#: The gallery's copies of inpainting masks (hidden, so never listed as images), by content.
MASKS_FOLDER = ".masks"
#: The same for control layers' images.
CONTROLS_FOLDER = ".controls"
REFERENCES_FOLDER = ".references"
#: Version of the file columns and their meaning; part of the schema signature.
SCHEMA_VERSION = 2
#: Rows written per lock hold while syncing (the GUI thread's searches slip in between).
SYNC_BATCH = 256
_NAME_RE = re.compile(r"^(\d{5,})-")

#: The file columns: (name, SQL declaration). Setting columns follow them.
FILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "TEXT PRIMARY KEY"),
    ("root", "TEXT NOT NULL"),
    ("mtime_ns", "INTEGER NOT NULL"),
    ("size", "INTEGER NOT NULL"),
    ("source", "TEXT NOT NULL DEFAULT 'none'"),
    ("created", "REAL NOT NULL"),
    ("favourite", "INTEGER NOT NULL DEFAULT 0"),
    ("model", "TEXT NOT NULL DEFAULT ''"),
    ("prompt_fold", "TEXT NOT NULL DEFAULT ''"),
    ("request", "TEXT"),
)
#: SQL column type of each setting kind that can be indexed.
COLUMN_TYPES = {
    "int": "INTEGER",
    "float": "REAL",
    "text": "TEXT",
    "path": "TEXT",
    "bool": "INTEGER",
}


class SaveError(SandstormError):
    """An image could not be written to the gallery; the caller still has it in memory."""


# -- the index's columns, from the declarations ---------------------------------------------


@dataclass(frozen=True)
class SettingColumn:
    """The index column of one ``index=True`` setting."""

    info: FieldInfo
    column: str
    sql_type: str

    @property
    def name(self) -> str:
        return self.info.name

    def from_request(self, request: GenerationRequest | None) -> Any:
        """The value stored for ``request`` (NULL without one)."""
        if request is None:
            return None
        value = getattr(request, self.info.name)
        if value is None:
            return None
        if self.info.kind == "float":
            return float(value)
        if self.info.kind == "bool":
            return int(value)
        return value

    def to_value(self, stored: Any) -> Any:
        """The value an item reports: "" for missing text, None for missing numbers."""
        if stored is None:
            return "" if self.info.kind == "text" else None
        if self.info.kind == "bool":
            return bool(stored)
        return stored


@functools.cache
def setting_columns() -> tuple[SettingColumn, ...]:
    """A column for every setting declared with ``index=True``, in declaration order.

    A setting whose name is a file column gets the column ``setting_<name>``.

    Raises:
        TypeError: an indexed setting is a part (LoRAs, mask, ...), which has no column type.
    """
    taken = {name for name, _decl in FILE_COLUMNS}
    columns = []
    for info in request_fields():
        if not info.spec.index:
            continue
        sql_type = COLUMN_TYPES.get(info.kind)
        if sql_type is None:
            raise TypeError(f"the {info.kind} setting {info.name!r} cannot have an index column")
        column = info.name if info.name not in taken else f"setting_{info.name}"
        columns.append(SettingColumn(info, column, sql_type))
    return tuple(columns)


@functools.cache
def _setting_positions() -> dict[str, int]:
    return {col.name: i for i, col in enumerate(setting_columns())}


def index_columns() -> tuple[tuple[str, str], ...]:
    """Every column of the ``images`` table: (name, SQL declaration)."""
    return FILE_COLUMNS + tuple((col.column, col.sql_type) for col in setting_columns())


def schema_signature() -> str:
    """What an index must have been built with to be used as it is (stored in ``meta``)."""
    return json.dumps(
        {"version": SCHEMA_VERSION, "request": REQUEST_VERSION, "columns": index_columns()},
        separators=(",", ":"),
    )


def _schema_sql() -> str:
    columns = ",\n    ".join(f"{name} {decl}" for name, decl in index_columns())
    return f"""
CREATE TABLE IF NOT EXISTS images (
    {columns}
);
CREATE INDEX IF NOT EXISTS images_root_created ON images (root, created DESC, path DESC);
CREATE INDEX IF NOT EXISTS images_root_model ON images (root, model, created DESC, path DESC);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS carried_favourites (path TEXT PRIMARY KEY);
"""


def _item_columns() -> tuple[str, ...]:
    """Columns an item is built from, in ``SELECT`` order."""
    settings = (col.column for col in setting_columns())
    return ("path", "source", "created", "favourite", "model", "request", *settings)


def index_row(
    path: Path | str,
    request: GenerationRequest | None,
    *,
    model: str = "",
    created: float,
    mtime_ns: int = 0,
    size: int = 0,
    source: str = "none",
    favourite: bool = False,
    root: str = "",
) -> dict[str, Any]:
    """The index row of one image, by column name (what ``_upsert`` writes and
    ``GalleryItem.from_row`` reads)."""
    row: dict[str, Any] = {
        "path": str(path),
        "root": root,
        "mtime_ns": mtime_ns,
        "size": size,
        "source": source,
        "created": created,
        "favourite": int(favourite),
        "model": model,
        "prompt_fold": request.prompt.casefold() if request is not None else "",
        "request": request.to_json() if request is not None else None,
    }
    for col in setting_columns():
        row[col.column] = col.from_request(request)
    return row


_UNPARSED: Any = object()


@dataclass(frozen=True, slots=True)
class GalleryItem:
    """One indexed image; build it with ``GalleryItem.from_row``.

    Attributes:
        path: the image file.
        model: the model's display name ("" when unknown).
        created: POSIX time (the file's modification time).
        favourite: marked as a favourite in the index.
        source: where its metadata came from ("sandstorm", "a1111", ..., "none").
        request: the stored ``GenerationRequest`` (parsed on first use), or None.

    Every ``index=True`` setting reads as an attribute (``item.prompt``, ``item.seed``, ...;
    see ``value``): "" for text and None for numbers when the image has no request.
    """

    path: Path
    model: str = ""
    created: float = 0.0
    favourite: bool = False
    source: str = "none"
    request_json: str | None = field(default=None, repr=False)
    #: Stored values of ``setting_columns()``, in their order.
    indexed: tuple[Any, ...] = field(default=(), repr=False)
    _parsed: Any = field(default=_UNPARSED, init=False, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Any) -> GalleryItem:
        """An item from an index row (a ``sqlite3.Row`` or an ``index_row`` dict)."""
        return cls(
            path=Path(row["path"]),
            model=row["model"] or "",
            created=float(row["created"]),
            favourite=bool(row["favourite"]),
            source=row["source"] or "none",
            request_json=row["request"],
            indexed=tuple(row[col.column] for col in setting_columns()),
        )

    @property
    def request(self) -> GenerationRequest | None:
        """The request stored with the image (None without one, or when it no longer reads)."""
        parsed = self._parsed
        if parsed is _UNPARSED:
            parsed = None
            if self.request_json:
                with contextlib.suppress(RequestError):
                    parsed = GenerationRequest.from_json(self.request_json)
            object.__setattr__(self, "_parsed", parsed)
        return parsed

    def value(self, name: str) -> Any:
        """A declared setting's value: indexed ones come from the index row, others from
        the request; "" (text) or None (others) when the image has no request.

        Raises ``KeyError`` for a name that is not a declared setting.
        """
        position = _setting_positions().get(name)
        if position is not None:
            col = setting_columns()[position]
            stored = self.indexed[position] if position < len(self.indexed) else None
            return col.to_value(stored)
        info = next((f for f in request_fields() if f.name == name), None)
        if info is None:
            raise KeyError(name)
        request = self.request
        if request is None:
            return "" if info.kind == "text" else None
        return getattr(request, name)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields: the declared settings.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.value(name)
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            ) from None

    def with_favourite(self, flag: bool) -> GalleryItem:
        return dataclasses.replace(self, favourite=flag)

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
    resources: Resources | None = None,
) -> Path:
    """Write ``image`` as a PNG with both metadata chunks, atomically.

    The PNG is written to a hidden temporary file next to ``path``, fsynced and renamed, so
    ``path`` is either the complete new image or untouched. ``model_hash`` defaults to the
    cached hash of ``model`` (computed once per model file); ``resources`` are the hashes
    of the LoRAs and embeddings the image was made with (``GeneratedImage.resources``).

    Raises:
        SaveError: the folder is read-only, the disk is full, ... (no partial file remains).
    """
    target = Path(path)
    folder = target.parent
    if model_hash is None and model is not None:
        model_hash = safe_model_hash(model)
    info = png_info(request, model.name if model else None, model_hash, resources)
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
    fsync_folder(folder)
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

    Opening is cheap: it connects to the index (rebuilding its table when the declared
    columns changed) and reads no files. The index is not synced on construction (that may
    take seconds on a large folder): call ``sync()`` from a worker thread.
    """

    def __init__(self, root: Path | str | None = None, index_path: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.pictures_dir()
        self.root = self.root.expanduser().resolve()
        self.index_path = Path(index_path) if index_path else paths.data_dir() / INDEX_NAME
        self._root_key = str(self.root)
        self._lock = threading.RLock()
        self._name_lock = threading.Lock()
        self._counters: dict[Path, int] = {}
        self._select = ", ".join(_item_columns())
        self._conn: sqlite3.Connection | None = self._open_index()

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
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            schema = _schema_sql()
            conn.executescript(schema)
            signature = schema_signature()
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != signature:
                _rebuild_table(conn, schema, carry=row is not None)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (signature,)
                )
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (use it under ``_lock``); raises ``SandstormError`` when closed."""
        conn = self._conn
        if conn is None:
            raise SandstormError(f"The gallery of {self.root} is closed.")
        return conn

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
        resources: Resources | None = None,
    ) -> GalleryItem:
        """Save one finished image with its metadata and index it.

        ``request`` is the single-image request with a concrete seed; ``resources`` the
        hashes of the LoRAs and embeddings it was made with.

        Raises:
            RequestError: the request's seed is still -1 (random).
            SaveError: the image could not be written; nothing is left on disk or indexed.
        """
        if request.seed == -1:
            raise RequestError("Resolve the seed before saving: the saved settings must match.")
        request = self.keep_part_images(request)
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
                save_png_with_metadata(image, request, target, model, model_hash, False, resources)
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
        row = self._row(
            target,
            request,
            model_display_name(request, model.name if model else None),
            stat.st_mtime_ns,
            stat.st_size,
            "sandstorm",
        )
        # A failure here only delays indexing: the file is safe and sync() adds it.
        with contextlib.suppress(sqlite3.Error, SandstormError):
            self._upsert([row])
        return GalleryItem.from_row(row)

    def keep_part_images(self, request: GenerationRequest) -> GenerationRequest:
        """The request with its inpainting mask, control images and reference images copied
        into the gallery (``.masks/``, ``.controls/``, ``.references/``, named by content, so
        a batch shares one copy):
        "Reuse" then restores them even after the files they were painted to, drawn in or
        loaded from are gone. A file that cannot be copied leaves its path as it was; the
        image is saved all the same."""
        if request.mask is not None:
            kept = self._keep_file(Path(request.mask.image), MASKS_FOLDER)
            if kept is not None:
                mask = dataclasses.replace(request.mask, image=str(kept))
                request = dataclasses.replace(request, mask=mask)
        if request.controls:
            units = []
            for unit in request.controls:
                kept = self._keep_file(Path(unit.image), CONTROLS_FOLDER)
                units.append(unit if kept is None else dataclasses.replace(unit, image=str(kept)))
            request = dataclasses.replace(request, controls=tuple(units))
        if request.references:
            refs = []
            for ref in request.references:
                kept = self._keep_file(Path(ref.image), REFERENCES_FOLDER)
                refs.append(ref if kept is None else dataclasses.replace(ref, image=str(kept)))
            request = dataclasses.replace(request, references=tuple(refs))
        return request

    def _keep_file(self, source: Path, folder_name: str) -> Path | None:
        """A copy of ``source`` in the gallery's hidden ``folder_name``, by content."""
        folder = self.root / folder_name
        try:
            data = source.read_bytes()
            suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_SUFFIXES else ".png"
            target = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
                try:
                    with open(tmp, "xb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp, target)
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
        except OSError:
            return None
        return target

    def _row(
        self,
        path: Path | str,
        request: GenerationRequest | None,
        model: str,
        mtime_ns: int,
        size: int,
        source: str,
    ) -> dict[str, Any]:
        return index_row(
            path,
            request,
            model=model,
            created=mtime_ns / 1e9,
            mtime_ns=mtime_ns,
            size=size,
            source=source,
            root=self._root_key,
        )

    def _row_from_metadata(self, path: str, meta: ImageMetadata, stat: tuple[int, int]) -> dict:
        request = meta.request
        model = (meta.model_name or model_display_name(request)) if request is not None else ""
        return self._row(path, request, model, stat[0], stat[1], meta.source)

    # -- index maintenance ---------------------------------------------------------------
    def _upsert(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or refresh ``index_row`` rows; the favourite flag of a known path is kept.

        A row without a root is stored under this gallery's root.
        """
        names = [name for name, _decl in index_columns()]
        updated = [n for n in names if n not in ("path", "favourite")]
        sql = (
            f"INSERT INTO images ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT(path) DO UPDATE SET {', '.join(f'{n}=excluded.{n}' for n in updated)}"
        )

        def values(row: dict[str, Any]) -> tuple:
            if not row.get("root"):
                row = {**row, "root": self._root_key}
            return tuple(row[n] for n in names)

        data = [values(row) for row in rows]
        with self._lock:
            self.db.executemany(sql, data)
            self.db.commit()

    def clean_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Delete temporary files left by an interrupted save; returns how many.

        ``sync()`` does this as part of its walk; this walks the folder on its own.
        """
        removed = 0
        cutoff = time.time() - max_age
        for folder, _dirs, files in self._walk():
            for name in files:
                if _is_temp(name) and _remove_if_stale(os.path.join(folder, name), cutoff):
                    removed += 1
        return removed

    def _walk(self) -> Iterable[tuple[str, list[str], list[str]]]:
        if not self.root.is_dir():
            return []
        return os.walk(self.root, onerror=None)

    def _scan_files(self, should_stop: Callable[[], bool] | None = None) -> dict[str, tuple]:
        """The gallery's image files with (mtime_ns, size); removes stale temporary files."""
        found: dict[str, tuple[int, int]] = {}
        cutoff = time.time() - STALE_TEMP_SECONDS
        for folder, dirs, files in self._walk():
            if should_stop is not None and should_stop():
                raise _Stopped
            # Hidden folders (.thumbnails, .trash) are never part of the gallery.
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for count, name in enumerate(files):
                _yield_now_and_then(count)
                if name.startswith("."):
                    if _is_temp(name):
                        _remove_if_stale(os.path.join(folder, name), cutoff)
                    continue
                if not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def sync(self, should_stop: Callable[[], bool] | None = None) -> tuple[int, int]:
        """Bring the index in line with the folder; returns (added or changed, removed).

        Files are compared by path, modification time and size; metadata is read only for
        new or changed files, so a sync of an unchanged gallery is a directory walk. Stale
        temporary files of interrupted saves are deleted on the way.

        ``should_stop`` is asked between files; when it returns True the sync ends early,
        keeping what it has indexed so far (the next sync continues).
        """
        # The index is read before the folder: an image saved while the folder is walked is
        # then at worst read twice, never dropped as "deleted".
        with self._lock:
            known: dict[str, tuple[int, int]] = {}
            rows = self.db.execute(
                "SELECT path, mtime_ns, size FROM images WHERE root = ?", (self._root_key,)
            )
            for count, (path, mtime, size) in enumerate(rows):
                known[path] = (mtime, size)
                _yield_now_and_then(count)
        try:
            on_disk = self._scan_files(should_stop)
        except _Stopped:
            return 0, 0
        gone = [path for path in known if path not in on_disk]
        fresh = [path for path, key in on_disk.items() if known.get(path) != key]
        if gone:
            with self._lock:
                self.db.executemany("DELETE FROM images WHERE path = ?", ((p,) for p in gone))
                self.db.commit()
        added = 0
        batch: list[dict[str, Any]] = []
        for path in fresh:
            if should_stop is not None and should_stop():
                break
            batch.append(self._row_from_metadata(path, read_metadata(path), on_disk[path]))
            if len(batch) >= SYNC_BATCH:
                self._upsert(batch)
                added += len(batch)
                batch = []
        if batch:
            self._upsert(batch)
            added += len(batch)
        if added:
            self._restore_carried_favourites()
        return added, len(gone)

    def index_files(self, files: Sequence[Path | str]) -> list[GalleryItem]:
        """Read and index these files now (e.g. restored from the trash); returns their items.

        Files that are gone are skipped (and dropped from the index).
        """
        rows = []
        for entry in files:
            path = self._key(entry)
            try:
                stat = os.stat(path)
            except OSError:
                self.forget(path)
                continue
            key = (stat.st_mtime_ns, stat.st_size)
            rows.append(self._row_from_metadata(path, read_metadata(path), key))
        if rows:
            self._upsert(rows)
            self._restore_carried_favourites()
        return [item for item in (self.get(row["path"]) for row in rows) if item is not None]

    def _restore_carried_favourites(self) -> None:
        """Favourites carried over a rebuild of the table come back as their files are read."""
        with self._lock:
            db = self.db
            if db.execute("SELECT 1 FROM carried_favourites LIMIT 1").fetchone() is None:
                return
            db.execute(
                "UPDATE images SET favourite = 1 "
                "WHERE path IN (SELECT path FROM carried_favourites)"
            )
            db.execute("DELETE FROM carried_favourites WHERE path IN (SELECT path FROM images)")
            db.commit()

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
            rows = self.db.execute(
                f"SELECT {self._select} FROM images WHERE {where} "
                "ORDER BY created DESC, path DESC LIMIT ? OFFSET ?",
                [*args, max(0, int(limit)), max(0, int(offset))],
            ).fetchall()
        return [GalleryItem.from_row(row) for row in rows]

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
            (total,) = self.db.execute(
                f"SELECT COUNT(*) FROM images WHERE {where}", args
            ).fetchone()
        return int(total)

    def day_counts(
        self,
        text: str = "",
        model: str | None = None,
        favourites: bool = False,
        since: dt.datetime | dt.date | float | None = None,
        until: dt.datetime | dt.date | float | None = None,
    ) -> list[tuple[dt.date, int]]:
        """How many images ``search`` finds on each local day, newest day first.

        The days follow ``search``'s order, so the first ``n`` results of ``search`` are the
        images of the first days whose counts add up to ``n``: a view can lay out headers
        per day for the whole result without reading a single row.
        """
        where, args = self._where(text, model, favourites, since, until)
        with self._lock:
            rows = self.db.execute(
                "SELECT date(created, 'unixepoch', 'localtime') AS day, COUNT(*) "
                f"FROM images WHERE {where} GROUP BY day ORDER BY day DESC",
                args,
            ).fetchall()
        return [(dt.date.fromisoformat(day), int(count)) for day, count in rows if day]

    def paths(
        self,
        text: str = "",
        model: str | None = None,
        favourites: bool = False,
        since: dt.datetime | dt.date | float | None = None,
        until: dt.datetime | dt.date | float | None = None,
        limit: int = -1,
        offset: int = 0,
    ) -> list[str]:
        """The files ``search`` would return, as paths only (much cheaper than items: a
        viewer stepping through 10,000 images needs their names, not their settings).
        ``limit`` -1 means all."""
        where, args = self._where(text, model, favourites, since, until)
        with self._lock:
            rows = self.db.execute(
                f"SELECT path FROM images WHERE {where} "
                "ORDER BY created DESC, path DESC LIMIT ? OFFSET ?",
                [*args, int(limit), max(0, int(offset))],
            ).fetchall()
        return [row[0] for row in rows]

    def position(
        self,
        path: Path | str,
        text: str = "",
        model: str | None = None,
        favourites: bool = False,
        since: dt.datetime | dt.date | float | None = None,
        until: dt.datetime | dt.date | float | None = None,
    ) -> int | None:
        """Where ``path`` stands in ``search``'s order with these filters (0 is the newest);
        None when it is not indexed or the filters leave it out."""
        key = self._key(path)
        where, args = self._where(text, model, favourites, since, until)
        with self._lock:
            row = self.db.execute(
                f"SELECT created FROM images WHERE path = ? AND {where}", [key, *args]
            ).fetchone()
            if row is None:
                return None
            created = row[0]
            (before,) = self.db.execute(
                f"SELECT COUNT(*) FROM images WHERE {where} "
                "AND (created > ? OR (created = ? AND path > ?))",
                [*args, created, created, key],
            ).fetchone()
        return int(before)

    def get(self, path: Path | str) -> GalleryItem | None:
        """The indexed item for a file, or None."""
        with self._lock:
            row = self.db.execute(
                f"SELECT {self._select} FROM images WHERE path = ?", (self._key(path),)
            ).fetchone()
        return GalleryItem.from_row(row) if row else None

    def models(self) -> list[str]:
        """Model names used by indexed images, for the model filter."""
        with self._lock:
            rows = self.db.execute(
                "SELECT DISTINCT model FROM images WHERE root = ? AND model != '' "
                "ORDER BY model COLLATE NOCASE",
                (self._root_key,),
            ).fetchall()
        return [row[0] for row in rows]

    def set_favourite(self, path: Path | str, flag: bool = True) -> bool:
        """Mark or unmark an image as a favourite; False when it is not in the index."""
        with self._lock:
            cursor = self.db.execute(
                "UPDATE images SET favourite = ? WHERE path = ?", (int(flag), self._key(path))
            )
            self.db.commit()
        return cursor.rowcount > 0

    def forget(self, path: Path | str) -> bool:
        """Remove an image from the index (the caller deletes or trashes the file)."""
        with self._lock:
            cursor = self.db.execute("DELETE FROM images WHERE path = ?", (self._key(path),))
            self.db.commit()
        return cursor.rowcount > 0

    def contains(self, path: Path | str) -> bool:
        """Whether ``path`` lies inside this gallery's folder."""
        return Path(self._key(path)).is_relative_to(self.root)

    @staticmethod
    def _key(path: Path | str) -> str:
        return str(Path(path).expanduser().resolve())


class _Stopped(Exception):
    """``sync``'s walk was asked to stop."""


def _rebuild_table(conn: sqlite3.Connection, schema: str, carry: bool) -> None:
    """Drop the ``images`` table built with other columns and create it anew (it is only a
    cache: ``sync`` refills it from the files). Favourites are kept aside for the refill."""
    if carry:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(
                "INSERT OR IGNORE INTO carried_favourites (path) "
                "SELECT path FROM images WHERE favourite = 1"
            )
    conn.execute("DROP TABLE IF EXISTS images")
    conn.executescript(schema)


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _remove_if_stale(path: str, cutoff: float) -> bool:
    try:
        if os.stat(path).st_mtime <= cutoff:
            os.unlink(path)
            return True
    except OSError:
        pass
    return False


def _yield_now_and_then(count: int, every: int = 128) -> None:
    """Let other threads run now and then during a long Python loop.

    A sync runs on a worker thread of the window; its loops hold the GIL between the short
    moments SQLite and ``os.stat`` release it, and the GUI thread, waiting for it, missed
    its frames by 20-40 ms in a 10,000-image sync. A real sleep hands the GIL over.
    """
    if count % every == every - 1:
        time.sleep(0.0002)


def _is_date(value: object) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
