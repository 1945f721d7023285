"""A small list of the running and pending jobs, each pending one with a remove button."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.ui.icons import icon
from desktop.ui.jobs import JobQueue


class QueueView(QWidget):
    """Shows a ``JobQueue``; call ``refresh`` after changing it.

    Signals:
        remove_requested(job_id)
        cancel_all_requested()
    """

    remove_requested = Signal(str)
    cancel_all_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("QueueView")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        self.list = QListWidget()
        self.list.setObjectName("QueueList")
        self.list.setToolTip("Jobs run top to bottom; ✕ removes a waiting job.")
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.count_label = QLabel("Queue is empty")
        self.cancel_all_button = QPushButton("Cancel all")
        self.cancel_all_button.setObjectName("CancelAllButton")
        self.cancel_all_button.setToolTip("Stop the running job and empty the queue")
        self.cancel_all_button.clicked.connect(self.cancel_all_requested)
        row.addWidget(self.count_label, 1)
        row.addWidget(self.cancel_all_button)
        layout.addLayout(row)
        self.refresh(JobQueue())

    def refresh(self, jobs: JobQueue) -> None:
        self.list.clear()
        running = jobs.running
        if running is not None:
            mark = "⏹ cancelling · " if running.cancelled else "▶ "
            self._add_row(running.job_id, mark + running.summary(), removable=False)
        for job in jobs.pending:
            self._add_row(job.job_id, job.summary(), removable=True)
        waiting = len(jobs.pending)
        if running is None and not waiting:
            self.count_label.setText("Queue is empty")
        else:
            self.count_label.setText(f"{'1 running, ' if running else ''}{waiting} waiting")
        self.cancel_all_button.setEnabled(len(jobs) > 0)

    def _add_row(self, job_id: str, text: str, removable: bool) -> None:
        item = QListWidgetItem()
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(4, 1, 4, 1)
        label = QLabel(text)
        label.setToolTip(text)
        layout.addWidget(label, 1)
        if removable:
            button = QToolButton()
            button.setIcon(icon("close"))
            button.setObjectName(f"remove-{job_id}")
            button.setToolTip("Remove this job from the queue")
            button.clicked.connect(lambda _=False, j=job_id: self.remove_requested.emit(j))
            layout.addWidget(button)
        item.setSizeHint(row.sizeHint())
        item.setData(256, job_id)
        self.list.addItem(item)
        self.list.setItemWidget(item, row)

    def job_ids(self) -> list[str]:
        return [self.list.item(i).data(256) for i in range(self.list.count())]
