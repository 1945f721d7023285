"""Saving a generation's results: the one function the window and the command line share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine.errors import SandstormError

if TYPE_CHECKING:
    from desktop.engine.gallery import GalleryItem


def save_results(images: list[Any], model: Any, root: Path | None = None) -> list[GalleryItem]:
    """Save each ``GeneratedImage`` into the gallery under ``root`` (default: the user's
    output folder); returns the indexed ``GalleryItem``s.

    Writes are atomic and each image is indexed as it is written. Raises ``SaveError`` (a
    ``SandstormError``) naming the problem; any other ``OSError`` becomes one too, so a front
    end can always offer to save the images elsewhere.
    """
    from desktop.engine.gallery import Gallery, SaveError
    from desktop.engine.settings import load_settings

    if root is None:
        root = load_settings().output_path
    try:
        with Gallery(root=root) as gallery:
            return [
                gallery.save(item.image, item.request, model, None, item.resources)
                for item in images
            ]
    except SandstormError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SaveError(f"Could not save the images to {root}: {reason}.") from exc
