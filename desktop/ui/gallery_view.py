"""The gallery's thumbnail grid: a ``QListView`` in icon mode and a delegate drawing stars."""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from desktop.ui.gallery_model import FavouriteRole

#: Rows laid out per slice: large result sets never block the window for long.
LAYOUT_BATCH = 200


class GalleryDelegate(QStyledItemDelegate):
    """Draws the thumbnail as usual plus a star on favourites."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        super().paint(painter, option, index)
        if not index.data(FavouriteRole):
            return
        painter.save()
        font = QFont(painter.font())
        font.setPixelSize(20)
        painter.setFont(font)
        rect = option.rect.adjusted(4, 2, -6, -4)  # type: ignore[attr-defined]
        corner = Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight
        painter.setPen(QColor(0, 0, 0, 160))
        painter.drawText(rect.translated(1, 1), corner, "★")
        painter.setPen(QColor(255, 200, 40))
        painter.drawText(rect, corner, "★")
        painter.restore()


class GalleryGrid(QListView):
    """Thumbnails in a wrapping grid; drag copies the files, right-click asks for a menu."""

    def __init__(self, model: QAbstractItemModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("GalleryView")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(LAYOUT_BATCH)
        self.setIconSize(QSize(128, 128))
        self.setGridSize(QSize(140, 140))
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.setItemDelegate(GalleryDelegate(self))
        self.setModel(model)
