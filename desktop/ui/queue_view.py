"""A small list of the queue: the running jobs (each with a cancel button, and "on <server>"
for one running on a ComfyUI server), the waiting ones (each with a remove button; a job
waiting for a server says why when none can take it) and the jobs interrupted by a crash
(with "Run again" and "Dismiss"); a banner with "Resume" while the queue is paused."""

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
from desktop.ui.jobs import Job, JobQueue

#: Item data role holding a row's job id.
JOB_ID_ROLE = 256
#: Item data role holding a row's kind: "running", "waiting" or "interrupted".
KIND_ROLE = 257
#: The server pool's statuses for a job that merely waits its turn (nothing to explain).
_ORDINARY_WAITS = ("Waiting for a server…", "Waiting for a free server…")


def waiting_reason(status: str) -> str:
    """Why a job waits for a server, from its last status ("" when it merely waits its turn).

    The pool says e.g. "Waiting for a server (none is reachable; retrying) — GPU: refused";
    the queue shows "waiting for a server: none is reachable; retrying — GPU: refused".
    """
    text = " ".join(status.split())
    if not text or text in _ORDINARY_WAITS:
        return ""
    prefix = "waiting for a server"
    if text.casefold().startswith(prefix):
        text = text[len(prefix) :].strip(" .:…")
        if text.startswith("(") and ")" in text:
            inner, _, rest = text[1:].partition(")")
            text = " — ".join(part for part in (inner.strip(), rest.strip(" —-")) if part)
    return f"waiting for a server: {text}" if text else ""


def job_text(job: Job, kind: str) -> str:
    """A running or waiting job's row text."""
    if kind == "waiting":
        reason = waiting_reason(job.status) if job.remote else ""
        return f"{job.summary()} · {reason}" if reason else job.summary()
    if job.cancelled:
        mark = "⏹ cancelling · "
    elif job.where:
        mark = f"▶ on {job.where} · "
    elif job.remote:  # its server failed: it waits for another
        reason = waiting_reason(job.status) or "waiting for a server"
        mark = f"⏳ {reason} · "
    else:
        mark = "▶ "
    return mark + job.summary()


class QueueView(QWidget):
    """Shows a ``JobQueue``; call ``refresh`` after changing it.

    Signals:
        remove_requested(job_id): remove a waiting job.
        cancel_requested(job_id): stop one running job.
        cancel_all_requested()
        requeue_requested(job_id): run an interrupted job again.
        dismiss_requested(job_id): forget an interrupted job.
        resume_requested(): start the paused queue.
    """

    remove_requested = Signal(str)
    cancel_requested = Signal(str)
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
        self.cancel_all_button.setToolTip("Stop the running jobs and empty the queue")
        self.cancel_all_button.clicked.connect(self.cancel_all_requested)
        row.addWidget(self.count_label, 1)
        row.addWidget(self.cancel_all_button)
        layout.addLayout(row)
        self.refresh(JobQueue())

    def refresh(self, jobs: JobQueue) -> None:
        self.list.clear()
        running = jobs.running_jobs
        for job in running:
            self._add_row(job.job_id, "running", job_text(job, "running"), job.cancelled)
        for job in jobs.pending:
            self._add_row(job.job_id, "waiting", job_text(job, "waiting"))
        interrupted = jobs.interrupted
        for job in interrupted:
            self._add_row(job.job_id, "interrupted", f"Interrupted — not rerun: {job.summary()}")
        waiting = len(jobs.pending)
        self.paused_bar.setVisible(jobs.paused)
        parts = []
        if running:
            parts.append(f"{len(running)} running")
        if waiting or running or jobs.paused:
            parts.append(f"{waiting} waiting")
        if interrupted:
            parts.append(f"{len(interrupted)} interrupted")
        text = ", ".join(parts) if parts else "Queue is empty"
        self.count_label.setText(f"Paused · {text}" if jobs.paused else text)
        self.cancel_all_button.setEnabled(len(jobs) > 0)

    def _add_row(self, job_id: str, kind: str, text: str, cancelled: bool = False) -> None:
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
        if kind == "running" and not cancelled:
            button = QToolButton()
            button.setIcon(icon("cancel"))
            button.setObjectName(f"cancel-{job_id}")
            button.setToolTip("Stop this job (the others go on)")
            button.clicked.connect(lambda _=False, j=job_id: self.cancel_requested.emit(j))
            layout.addWidget(button)
        elif kind == "waiting":
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
