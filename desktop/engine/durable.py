"""Helpers for writes that survive a crash: the one place that fsyncs a folder."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """Make a rename into ``folder`` durable.

    POSIX only: Windows cannot open a directory for this and does not need it. Errors are
    ignored (some file systems refuse a directory fsync); the file itself was synced.
    """
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
