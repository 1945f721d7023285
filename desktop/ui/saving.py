"""Save finished images through the engine's gallery (called on the worker thread).

The gallery writes atomically (a crash or a closing window never leaves a half-written
file) and indexes each image; its connection belongs to the calling thread, so each call
opens and closes its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desktop.engine.errors import SandstormError


def save_images(images: list[Any], model: Any, root: Path) -> list[Any]:
    """Save each ``GeneratedImage`` under ``root``; returns the ``GalleryItem``s.

    Raises ``SaveError`` (a ``SandstormError``) with a message naming the problem; any
    other ``OSError`` is turned into one too, so the window can always offer "Save as…".
    """
    from desktop.engine.gallery import Gallery, SaveError

    try:
        with Gallery(root=root) as gallery:
            return [gallery.save(item.image, item.request, model) for item in images]
    except SandstormError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SaveError(f"Could not save the images to {root}: {reason}.") from exc
