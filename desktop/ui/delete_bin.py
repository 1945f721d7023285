"""Deleting gallery images with undo: ``DeleteBin`` moves files away, ``restore`` brings
them back.

Files go to the system trash (``QFile.moveToTrash``) or, where there is none, to a holding
folder private to this run under the cache, which ``purge`` empties when the application
quits. Holding folders left by a crashed run are removed after a day.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from desktop.engine import paths
from desktop.engine.gallery import GalleryItem

#: Holding folders of runs that ended without cleaning up (a crash) go after this long.
STALE_HOLDING_SECONDS = 24 * 3600


@dataclass(frozen=True)
class DeletedFile:
    """A deleted image and where it went: the system trash or this run's holding folder."""

    original: Path
    held_at: Path
    item: GalleryItem
    in_trash: bool


class DeleteBin:
    """Moves files out of the gallery so they can be restored during this run.

    Args:
        use_trash: try the system trash first; with False, or where the platform has no
            trash, files go to the holding folder.
    """

    def __init__(self, use_trash: bool = True) -> None:
        self.use_trash = use_trash
        base = paths.cache_dir() / "deleted"
        self.folder = base / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _remove_stale_holding(base)

    def delete(self, item: GalleryItem) -> DeletedFile:
        """Move ``item``'s file away; raises ``OSError`` when it cannot be moved."""
        source = Path(item.path)
        if self.use_trash:
            from PySide6.QtCore import QFile

            ok, trashed = QFile.moveToTrash(str(source))
            if ok and trashed:
                return DeletedFile(source, Path(trashed), item, in_trash=True)
            if ok:
                # Trashed, but the platform did not say where: it can only be restored by hand.
                return DeletedFile(source, Path(), item, in_trash=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{uuid.uuid4().hex[:8]}-{source.name}"
        shutil.move(str(source), str(target))
        return DeletedFile(source, target, item, in_trash=False)

    def restore(self, entry: DeletedFile) -> None:
        """Put a deleted file back where it was.

        Raises:
            FileExistsError: another file took its name meanwhile.
            FileNotFoundError: the trash was emptied (or the holding copy is gone).
        """
        if not entry.held_at.name or not entry.held_at.exists():
            raise FileNotFoundError(f"{entry.original.name} is no longer in the trash.")
        if entry.original.exists():
            raise FileExistsError(f"another file named {entry.original.name} exists now")
        entry.original.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(entry.held_at), str(entry.original))
        if entry.in_trash:
            # freedesktop trashes keep a matching info file; without it the trash lists a
            # ghost entry for the restored image.
            info = entry.held_at.parent.parent / "info" / f"{entry.held_at.name}.trashinfo"
            with contextlib.suppress(OSError):
                info.unlink()

    def purge(self) -> None:
        """Delete the holding folder for good (the application is quitting)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_stale_holding(base: Path) -> None:
    cutoff = time.time() - STALE_HOLDING_SECONDS
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
