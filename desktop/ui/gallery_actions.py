"""The gallery's actions on the selected images, as ``QAction``s, and what they do.

``GalleryActions`` builds the actions (toolbar, context menu and grid shortcuts) and calls
an ``ActionTarget`` (the strip's panel or the full-window browser) when one is triggered.
The helpers below do the part that needs no panel: clipboard, file manager, the request to
reuse, and exporting files to a folder without overwriting anything there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, QUrl
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

from desktop.engine.gallery import GalleryItem
from desktop.engine.request import GenerationRequest
from desktop.ui.gallery_info import infotext, stored_request
from desktop.ui.gallery_model import read_image


class ActionTarget(Protocol):
    """What the actions call (``GalleryPanel`` implements it)."""

    def open_current(self) -> None: ...
    def reuse_current(self, keep_seed: bool) -> None: ...
    def send_to_img2img(self) -> None: ...
    def copy_image(self) -> None: ...
    def copy_parameters(self) -> None: ...
    def reveal(self) -> None: ...
    def toggle_favourite(self) -> None: ...
    def delete_selected(self) -> Any: ...
    def undo_delete(self) -> Any: ...
    def upscale_current(self) -> None: ...
    def export_selected(self) -> Any: ...


class GalleryActions(QObject):
    """The actions, with shortcuts active only while ``view`` (the grid) has focus.

    Attributes: ``open``, ``reuse``, ``reuse_seed``, ``img2img``, ``upscale``,
    ``copy_image``, ``copy_params``, ``reveal``, ``export``, ``favourite``, ``delete``,
    ``undo``.
    """

    def __init__(self, target: ActionTarget, view: QWidget, parent: QObject | None = None):
        super().__init__(parent)
        self._view = view
        self.open = self._action(
            "Open",
            "Show the image large in the canvas with its settings",
            target.open_current,
            Qt.Key.Key_Return,
        )
        self.reuse = self._action(
            "Reuse",
            "Put this image's settings in the panels (with a random seed)",
            lambda: target.reuse_current(keep_seed=False),
        )
        self.reuse_seed = self._action(
            "Reuse with seed",
            "Put this image's settings in the panels, seed included",
            lambda: target.reuse_current(keep_seed=True),
        )
        self.img2img = self._action(
            "To img2img", "Use this image as the image-to-image input", target.send_to_img2img
        )
        self.upscale = self._action(
            "Upscale…",
            "Make a larger copy of this image with an upscaler model",
            target.upscale_current,
        )
        self.copy_image = self._action(
            "Copy image",
            "Copy the image to the clipboard",
            target.copy_image,
            QKeySequence.StandardKey.Copy,
        )
        self.copy_params = self._action(
            "Copy settings",
            "Copy the image's settings as text (AUTOMATIC1111 format)",
            target.copy_parameters,
            "Ctrl+Shift+C",
        )
        self.reveal = self._action(
            "Show in folder",
            "Open the folder holding this image in the file manager",
            target.reveal,
        )
        self.export = self._action(
            "Export…",
            "Copy the selected images, with the settings stored in them, to a folder",
            target.export_selected,
        )
        self.favourite = self._action(
            "★ Favourite",
            "Mark or unmark the selected images as favourites",
            target.toggle_favourite,
            "F",
        )
        self.delete = self._action(
            "Delete",
            "Move the selected images to the trash (Undo brings them back)",
            target.delete_selected,
            QKeySequence.StandardKey.Delete,
        )
        self.undo = self._action(
            "Undo delete",
            "Bring back the images deleted last",
            target.undo_delete,
            QKeySequence.StandardKey.Undo,
        )

    def _action(self, text: str, tip: str, slot: Callable[[], Any], keys: Any = None) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
            # Only while the grid has focus: Delete, F or Ctrl+C typed in the search box (or
            # the prompt box) must edit text, not act on images.
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self._view.addAction(action)
        return action

    def on_selection(self) -> list[QAction]:
        """The actions that need a selected image."""
        return [
            self.open,
            self.reuse,
            self.reuse_seed,
            self.img2img,
            self.upscale,
            self.copy_image,
            self.copy_params,
            self.reveal,
            self.export,
            self.favourite,
            self.delete,
        ]

    def toolbar(self) -> list[QAction]:
        return [a for a in self.on_selection() if a is not self.open] + [self.undo]

    def update(self, has_selection: bool, can_undo: bool) -> None:
        for action in self.on_selection():
            action.setEnabled(has_selection)
        self.undo.setEnabled(can_undo)

    def menu(self, parent: QWidget) -> QMenu:
        """The actions as a context menu."""
        menu = QMenu(parent)
        groups = [
            [self.open, self.reuse, self.reuse_seed, self.img2img, self.upscale],
            [self.copy_image, self.copy_params, self.reveal, self.export],
            [self.favourite, self.delete, self.undo],
        ]
        for number, group in enumerate(groups):
            if number:
                menu.addSeparator()
            for action in group:
                menu.addAction(action)
        return menu


# -- what the actions do ----------------------------------------------------------------------
def reusable_request(item: GalleryItem, keep_seed: bool) -> GenerationRequest | None:
    """The request to put in the panels: the index's copy, else the file's; seed -1 unless
    ``keep_seed``. None when the image carries no settings."""
    request = item.request or stored_request(item.path)
    if request is None:
        return None
    return request if keep_seed else dataclasses.replace(request, seed=-1)


def copy_image_to_clipboard(path: Path | str) -> bool:
    """Put the image on the clipboard; False when it cannot be read."""
    image = read_image(path)
    if image.isNull():
        return False
    QGuiApplication.clipboard().setImage(image)
    return True


def copy_parameters_to_clipboard(path: Path | str) -> str:
    """Put the image's settings text on the clipboard; returns the text."""
    text = infotext(path)
    QGuiApplication.clipboard().setText(text)
    return text


def folder_url(path: Path | str) -> QUrl:
    """The URL that opens the folder holding ``path`` in the file manager."""
    return QUrl.fromLocalFile(str(Path(path).parent))


@dataclasses.dataclass
class ExportResult:
    """What ``export_files`` did: the copies made, and the files it could not copy (why)."""

    folder: Path
    copied: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def describe_os_error(exc: OSError) -> str:
    """An ``OSError`` in words for a message ("permission denied", "the disk is full")."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "the file is missing"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "it is not a folder"
    return exc.strerror or str(exc) or type(exc).__name__


def export_files(paths: Iterable[Path | str], folder: Path | str) -> ExportResult:
    """Copy images into ``folder`` byte for byte, so the settings stored in them travel too.

    A name already taken in ``folder`` is never overwritten: the copy is named
    ``name (2).png``, ``name (3).png``, ... The files keep their modification time.

    Raises:
        OSError: ``folder`` cannot be created or written to (nothing was copied). A file
            that cannot be read is listed in ``failed`` and the others are copied.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    if not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
    result = ExportResult(target)
    for entry in paths:
        source = Path(entry)
        try:
            result.copied.append(copy_without_overwriting(source, target))
        except FileNotFoundError:
            result.failed.append((source, "the file is missing"))
        except OSError as exc:
            if not result.copied and exc.filename != str(source):
                raise  # the folder itself refuses: say so once, not for every image
            result.failed.append((source, describe_os_error(exc)))
    return result


def copy_without_overwriting(source: Path, folder: Path) -> Path:
    """Copy ``source`` into ``folder`` under a name that was free; returns the copy.

    The name is claimed with an exclusive create, so a file that appears meanwhile (another
    export) is not overwritten either.
    """
    with open(source, "rb") as reader:
        for number in range(1, 10_000):
            name = source.name if number == 1 else f"{source.stem} ({number}){source.suffix}"
            candidate = folder / name
            try:
                writer = open(candidate, "xb")  # noqa: SIM115 (closed below, removed on failure)
            except FileExistsError:
                continue
            try:
                with writer:
                    shutil.copyfileobj(reader, writer)
                shutil.copystat(source, candidate)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(candidate)
                raise
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name for the copy", str(folder / source.name))
