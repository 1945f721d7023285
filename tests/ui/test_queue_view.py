"""The queue view: waiting and running rows, interrupted jobs, the paused banner."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QToolButton

from desktop.engine.queue_store import RestoredQueue, StoredJob
from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue
from desktop.ui.queue_view import QueueView


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="m", width=64, height=64)


def _view(qtbot) -> QueueView:
    view = QueueView()
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    return view


def _texts(view: QueueView) -> list[str]:
    texts = []
    for i in range(view.list.count()):
        row = view.list.itemWidget(view.list.item(i))
        texts.append(row.findChild(QLabel).text())
    return texts


def _crashed_queue() -> JobQueue:
    jobs = JobQueue()
    restored = RestoredQueue(
        waiting=[StoredJob("job-2", _request("later"), 0.0)],
        interrupted=[StoredJob("job-1", _request("crashy <b>bold</b>"), 0.0, "interrupted")],
    )
    jobs.restore(restored, paused=True)
    return jobs


def test_empty_queue(qtbot):
    view = _view(qtbot)
    assert view.job_ids() == [] and view.count_label.text() == "Queue is empty"
    assert not view.cancel_all_button.isEnabled() and view.paused_bar.isHidden()


def test_waiting_and_running_rows_keep_their_signals(qtbot):
    view = _view(qtbot)
    jobs = JobQueue()
    a, b = jobs.add(_request("a")), jobs.add(_request("b"))
    jobs.mark_started(a.job_id)
    view.refresh(jobs)
    assert view.job_ids() == [a.job_id, b.job_id]
    assert _texts(view)[0].startswith("▶ ") and view.count_label.text() == "1 running, 1 waiting"
    assert view.findChild(QToolButton, f"remove-{a.job_id}") is None
    with qtbot.waitSignal(view.remove_requested) as removed:
        qtbot.mouseClick(
            view.findChild(QToolButton, f"remove-{b.job_id}"), Qt.MouseButton.LeftButton
        )
    assert removed.args == [b.job_id]
    with qtbot.waitSignal(view.cancel_all_requested):
        qtbot.mouseClick(view.cancel_all_button, Qt.MouseButton.LeftButton)


def test_interrupted_jobs_offer_run_again_and_dismiss(qtbot):
    view = _view(qtbot)
    jobs = _crashed_queue()
    view.refresh(jobs)
    assert view.interrupted_ids() == ["job-1"]
    assert view.job_ids() == [jobs.pending[0].job_id]
    assert _texts(view)[-1].startswith("Interrupted — not rerun: crashy <b>bold</b>")
    assert "1 interrupted" in view.count_label.text()
    with qtbot.waitSignal(view.requeue_requested) as requeue:
        qtbot.mouseClick(view.findChild(QToolButton, "requeue-job-1"), Qt.MouseButton.LeftButton)
    assert requeue.args == ["job-1"]
    with qtbot.waitSignal(view.dismiss_requested) as dismiss:
        qtbot.mouseClick(view.findChild(QToolButton, "dismiss-job-1"), Qt.MouseButton.LeftButton)
    assert dismiss.args == ["job-1"]
    jobs.dismiss_interrupted("job-1")
    view.refresh(jobs)
    assert view.interrupted_ids() == []
    # The old row's widgets are deleted later, from the event loop.
    qtbot.waitUntil(lambda: view.findChild(QToolButton, "dismiss-job-1") is None)


def test_paused_queue_shows_resume(qtbot):
    view = _view(qtbot)
    jobs = _crashed_queue()
    view.refresh(jobs)
    assert view.paused_bar.isVisible() and view.count_label.text().startswith("Paused · ")
    button = view.findChild(QPushButton, "ResumeButton")
    with qtbot.waitSignal(view.resume_requested):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    jobs.resume()
    view.refresh(jobs)
    assert not view.paused_bar.isVisible() and not view.count_label.text().startswith("Paused")


def test_remote_jobs_show_where_they_run_and_why_they_wait(qtbot):
    from desktop.ui.queue_view import waiting_reason

    view = _view(qtbot)
    jobs = JobQueue()
    a, b, c, d = (jobs.add(_request(x)) for x in "abcd")
    for job in (a, b, c, d):
        job.remote = True
    jobs.mark_started(a.job_id)
    jobs.mark_started(b.job_id)
    a.where = "Studio GPU"
    b.status = "Studio GPU failed (it refused the connection); the job waits for a server."
    c.status = "Waiting for a free server…"
    d.status = (
        "Waiting for a server (none is reachable; retrying) — Box: Box refused the connection"
    )
    view.refresh(jobs)
    texts = _texts(view)
    assert texts[0].startswith("▶ on Studio GPU · a")
    assert texts[1].startswith("⏳ waiting for a server: Studio GPU failed (it refused")
    assert texts[2] == c.summary()  # merely waiting its turn: nothing to explain
    assert texts[3] == (
        f"{d.summary()} · waiting for a server: none is reachable; retrying — "
        "Box: Box refused the connection"
    )
    assert view.count_label.text() == "2 running, 2 waiting"
    with qtbot.waitSignal(view.cancel_requested) as cancel:
        qtbot.mouseClick(
            view.findChild(QToolButton, f"cancel-{b.job_id}"), Qt.MouseButton.LeftButton
        )
    assert cancel.args == [b.job_id]
    jobs.cancel(b.job_id)
    view.refresh(jobs)
    assert _texts(view)[1].startswith("⏹ cancelling · ")
    qtbot.waitUntil(lambda: view.findChild(QToolButton, f"cancel-{b.job_id}") is None)
    assert waiting_reason("") == "" and waiting_reason("Waiting for a server…") == ""
    assert waiting_reason("Waiting for a server: odd") == "waiting for a server: odd"
