"""A small list of the queue: the running job, the waiting ones (each with a remove button)
and the jobs interrupted by a crash (with "Run again" and "Dismiss"); a banner with "Resume"
while the queue is paused."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.ui.icons import icon
from desktop.ui.jobs import JobQueue

#: Item data role holding a row's job id.
JOB_ID_ROLE = 256
#: Item data role holding a row's kind: "running", "waiting" or "interrupted".
KIND_ROLE = 257


class QueueView(QWidget):
    """Shows a ``JobQueue``; call ``refresh`` after changing it.

    Signals:
        remove_requested(job_id): remove a waiting job.
        cancel_all_requested()
        requeue_requested(job_id): run an interrupted job again.
        dismiss_requested(job_id): forget an interrupted job.
        resume_requested(): start the paused queue.
    """

    remove_requested = Signal(str)
    cancel_all_requested = Signal()
    requeue_requested = Signal(str)
    dismiss_requested = Signal(str)
    resume_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("QueueView")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        self.paused_bar = QFrame()
        self.paused_bar.setObjectName("QueuePausedBar")
        bar = QHBoxLayout(self.paused_bar)
        bar.setContentsMargins(4, 2, 4, 2)
        self.paused_label = QLabel("Queue paused — waiting jobs will not start.")
        self.paused_label.setWordWrap(True)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setObjectName("ResumeButton")
        self.resume_button.setToolTip("Start running the waiting jobs")
        self.resume_button.clicked.connect(self.resume_requested)
        bar.addWidget(self.paused_label, 1)
        bar.addWidget(self.resume_button)
        self.paused_bar.hide()
        layout.addWidget(self.paused_bar)
        self.list = QListWidget()
        self.list.setObjectName("QueueList")
        self.list.setToolTip("Jobs run top to bottom; ✕ removes a waiting job.")
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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
            self._add_row(running.job_id, "running", mark + running.summary())
        for job in jobs.pending:
            self._add_row(job.job_id, "waiting", job.summary())
        interrupted = jobs.interrupted
        for job in interrupted:
            self._add_row(job.job_id, "interrupted", f"Interrupted — not rerun: {job.summary()}")
        waiting = len(jobs.pending)
        self.paused_bar.setVisible(jobs.paused)
        parts = []
        if running is not None:
            parts.append("1 running")
        if waiting or running is not None or jobs.paused:
            parts.append(f"{waiting} waiting")
        if interrupted:
            parts.append(f"{len(interrupted)} interrupted")
        text = ", ".join(parts) if parts else "Queue is empty"
        self.count_label.setText(f"Paused · {text}" if jobs.paused else text)
        self.cancel_all_button.setEnabled(len(jobs) > 0)

    def _add_row(self, job_id: str, kind: str, text: str) -> None:
        item = QListWidgetItem()
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(4, 1, 4, 1)
        label = QLabel(text)
        label.setToolTip(text)
        label.setTextFormat(Qt.TextFormat.PlainText)
        # A long summary is clipped (full text in the tooltip) so the buttons stay in view.
        label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.addWidget(label, 1)
        if kind == "waiting":
            button = QToolButton()
            button.setIcon(icon("close"))
            button.setObjectName(f"remove-{job_id}")
            button.setToolTip("Remove this job from the queue")
            button.clicked.connect(lambda _=False, j=job_id: self.remove_requested.emit(j))
            layout.addWidget(button)
        elif kind == "interrupted":
            label.setToolTip(
                "This job was running when Sandstorm stopped unexpectedly, so it is not run "
                f"again automatically.\n{text}"
            )
            again = QToolButton()
            again.setText("Run again")
            again.setObjectName(f"requeue-{job_id}")
            again.setToolTip("Put this job back at the end of the queue")
            again.clicked.connect(lambda _=False, j=job_id: self.requeue_requested.emit(j))
            dismiss = QToolButton()
            dismiss.setText("Dismiss")
            dismiss.setObjectName(f"dismiss-{job_id}")
            dismiss.setToolTip("Forget this job")
            dismiss.clicked.connect(lambda _=False, j=job_id: self.dismiss_requested.emit(j))
            layout.addWidget(again)
            layout.addWidget(dismiss)
        item.setSizeHint(QSize(0, row.sizeHint().height()))
        item.setData(JOB_ID_ROLE, job_id)
        item.setData(KIND_ROLE, kind)
        self.list.addItem(item)
        self.list.setItemWidget(item, row)

    def job_ids(self) -> list[str]:
        """Ids of the running and waiting jobs, in order (interrupted ones not included)."""
        return [
            self.list.item(i).data(JOB_ID_ROLE)
            for i in range(self.list.count())
            if self.list.item(i).data(KIND_ROLE) != "interrupted"
        ]

    def interrupted_ids(self) -> list[str]:
        """Ids of the interrupted jobs shown, in order."""
        return [
            self.list.item(i).data(JOB_ID_ROLE)
            for i in range(self.list.count())
            if self.list.item(i).data(KIND_ROLE) == "interrupted"
        ]
