"""Turn whatever the user drops or pastes into an init-image path the request can carry.

A file URL is checked and used as is; image data (from a browser or the clipboard) is
written once to ``cache_dir()/inputs/<sha256>.png``; anything else raises ``ImageError``
with a sentence the window shows.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, QUrl
from PySide6.QtGui import QImage

from desktop.engine import paths
from desktop.engine.errors import ImageError

_IMG_SRC = re.compile(r"<img[^>]+src\s*=\s*['\"]([^'\"]+)['\"]", re.IGNORECASE)


def check_image(path: Path) -> tuple[int, int]:
    """Return the image's (width, height); raise ``ImageError`` if it cannot be read."""
    if not path.is_file():
        raise ImageError(f"{path.name} does not exist or is not a file.")
    try:
        from desktop.engine.images import load_image
    except ImportError:
        load_image = None
    if load_image is not None:
        return load_image(path).size
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path.name} is not an image Sandstorm can read.") from exc


def store_qimage(image: QImage) -> Path:
    """Write image data to the input cache as PNG (named by content) and return the path."""
    if image.isNull():
        raise ImageError("The pasted or dropped data is not an image.")
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise ImageError("The image data could not be converted to PNG.")
    buffer.close()
    raw = bytes(data.data())
    folder = paths.cache_dir() / "inputs"
    target = folder / f"{hashlib.sha256(raw).hexdigest()[:32]}.png"
    if not target.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(raw)
            tmp.replace(target)
        except OSError as exc:
            raise ImageError(f"Could not store the image in {folder}: {exc.strerror}.") from exc
    return target


def _local_path(url: QUrl | str) -> Path | None:
    if isinstance(url, QUrl):
        return Path(url.toLocalFile()) if url.isLocalFile() else None
    text = url.strip()
    if text.startswith("file:"):
        return Path(unquote(urlparse(text).path))
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text):
        return Path(text)
    return None


def can_accept(mime: QMimeData) -> bool:
    """Whether a drag is worth accepting (the drop itself still validates the content)."""
    return mime.hasUrls() or mime.hasImage() or mime.hasHtml() or mime.hasText()


def image_from_mime(mime: QMimeData) -> Path:
    """The init-image path for dropped or pasted data; raises ``ImageError`` otherwise."""
    problem: ImageError | None = None
    for url in mime.urls() if mime.hasUrls() else []:
        path = _local_path(url)
        if path is None:
            continue
        try:
            check_image(path)
            return path
        except ImageError as exc:
            problem = exc
    if mime.hasImage():
        image = mime.imageData()
        if isinstance(image, QImage) and not image.isNull():
            return store_qimage(image)
    # Browsers drop HTML with <img src="file://…"> for images of local pages.
    candidates = []
    if mime.hasHtml():
        candidates += _IMG_SRC.findall(mime.html())
    if mime.hasText():
        candidates += mime.text().splitlines()[:1]
    for text in candidates:
        path = _local_path(text)
        if path is None:
            continue
        try:
            check_image(path)
            return path
        except ImageError as exc:
            problem = exc
    if problem is not None:
        raise problem
    if mime.hasUrls() and any(not u.isLocalFile() for u in mime.urls()):
        raise ImageError("Only local images can be used; save the image first, then drop the file.")
    raise ImageError("That is not an image; drop or paste a PNG, JPEG or WebP picture.")
