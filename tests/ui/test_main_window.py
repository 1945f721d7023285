"""End-to-end tests of the main window with the tiny model on the CPU."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, Qt
from PySide6.QtTest import QTest

from desktop.engine.settings import load_settings
from desktop.ui.main_window import MainWindow
from desktop.ui.responsiveness import measure_max_gap
from tests.ui.conftest import pngs

LONG = 60_000


def _collect(win: MainWindow) -> dict[str, list]:
    seen: dict[str, list] = {"steps": [], "shown": [], "started": [], "cancelled": []}
    win.worker.step_previewed.connect(lambda j, s, t, e, img: seen["steps"].append((j, s, t)))
    win.preview_shown.connect(lambda j, s: seen["shown"].append((j, s)))
    win.worker.job_started.connect(lambda j: seen["started"].append(j))
    win.worker.job_cancelled.connect(lambda j: seen["cancelled"].append(j))
    return seen


def test_ctrl_enter_generates_with_previews_and_saves(qtbot, window: MainWindow, tiny_settings):
    seen = _collect(window)
    window.prompt_panel.prompt_edit.setFocus()
    window.prompt_panel.prompt_edit.selectAll()
    QTest.keyClicks(window.prompt_panel.prompt_edit, "a red fox in the snow")
    frames_before = window.canvas.frames_shown
    with qtbot.waitSignal(window.worker.job_finished, timeout=LONG) as finished:
        QTest.keyClick(
            window.prompt_panel.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier
        )
    job_id, saved = finished.args
    steps = [s for j, s, t in seen["steps"] if j == job_id]
    assert steps == [1, 2, 3]
    assert [s for j, s in seen["shown"] if j == job_id] == [1, 2, 3]
    # Three previews, then the final image, all drawn on the canvas.
    assert window.canvas.frames_shown - frames_before == 4
    assert not window.canvas.is_preview
    assert window.canvas.image().size().width() == 64
    files = pngs(Path(tiny_settings.output_dir))
    assert len(files) == 1 and len(saved) == 1
    assert Path(saved[0].path) == files[0]
    assert saved[0].prompt == "a red fox in the snow"
    assert window.progress.value() == window.progress.maximum()


def _wait_job(qtbot, win: MainWindow, job_id: str, timeout: int = LONG) -> str:
    """Wait until ``job_id`` finished, failed or was cancelled; return which."""
    outcome: list[str] = []
    win.worker.job_finished.connect(
        lambda j, _s: outcome.append("finished") if j == job_id else None
    )
    win.worker.job_failed.connect(lambda j, _m: outcome.append("failed") if j == job_id else None)
    win.worker.job_cancelled.connect(lambda j: outcome.append("cancelled") if j == job_id else None)
    qtbot.waitUntil(lambda: bool(outcome), timeout=timeout)
    return outcome[0]


def test_queue_runs_in_order_and_cancel_during_job_2_leaves_job_3(qtbot, window, tiny_settings):
    seen = _collect(window)
    panel = window.sampler_panel
    job1 = window.generate()
    panel.set_values({"steps": 150})  # long enough to be cancelled from the GUI thread mid-run
    job2 = window.generate()
    panel.set_values({"steps": 3})
    job3 = window.generate()
    assert [j.job_id for j in window.jobs.pending] in (
        [job1.job_id, job2.job_id, job3.job_id],
        [job2.job_id, job3.job_id],
    )

    def cancel_job2(job_id: str, step: int) -> None:
        if job_id == job2.job_id:
            window.cancel_current()

    window.preview_shown.connect(cancel_job2)
    assert _wait_job(qtbot, window, job3.job_id) == "finished"
    assert seen["started"] == [job1.job_id, job2.job_id, job3.job_id]
    assert seen["cancelled"] == [job2.job_id]
    job2_steps = [s for j, s, _t in seen["steps"] if j == job2.job_id]
    assert 1 <= len(job2_steps) < 150
    # Previews the worker sent before it noticed the cancel are dropped, not drawn.
    assert [s for j, s in seen["shown"] if j == job2.job_id] == [1]
    assert window.dropped_previews == len(job2_steps) - 1
    assert [s for j, s, _t in seen["steps"] if j == job3.job_id] == [1, 2, 3]
    assert len(pngs(Path(tiny_settings.output_dir))) == 2
    assert len(window.jobs) == 0 and window.queue_view.job_ids() == []


def test_remove_and_cancel_all_empty_the_queue(qtbot, window):
    seen = _collect(window)
    window.sampler_panel.set_values({"steps": 150})
    jobs = [window.generate() for _ in range(3)]
    window.remove_job(jobs[2].job_id)
    assert jobs[2].job_id not in window.queue_view.job_ids()
    qtbot.waitUntil(lambda: window.jobs.running is not None, timeout=LONG)
    window.cancel_all()
    # The running job stays listed (as cancelling) until the worker confirms.
    assert window.queue_view.job_ids() == [jobs[0].job_id]
    qtbot.waitUntil(lambda: len(seen["cancelled"]) == 3, timeout=LONG)
    assert sorted(seen["cancelled"]) == sorted(j.job_id for j in jobs)
    assert seen["started"] == [jobs[0].job_id]
    assert window.queue_view.job_ids() == [] and len(window.jobs) == 0


def test_close_during_a_job_exits_quickly_and_cleanly(qtbot, window, tiny_settings):
    window.sampler_panel.set_values({"steps": 150})
    window.generate()
    with qtbot.waitSignal(window.preview_shown, timeout=LONG):
        pass
    started = time.perf_counter()
    window.close()
    took = time.perf_counter() - started
    print(f"close during a job took {took * 1000:.0f} ms")
    assert not window.worker.isRunning()
    # The contract is ≤ 1 s (one tiny-model step plus the thread exit); the loose bound only
    # catches a hang, since a machine shared with other jobs can stretch one step.
    assert took < 5.0
    out = Path(tiny_settings.output_dir)
    leftovers = (
        [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"] if out.exists() else []
    )
    assert not [p for p in leftovers if "tmp" in p.name or p.name.startswith(".")]


def test_gui_thread_stays_responsive_while_generating(qtbot, window):
    window.sampler_panel.set_values({"steps": 10})
    finished: list[str] = []
    window.worker.job_finished.connect(lambda j, _s: finished.append(j))
    gap = measure_max_gap(lambda: window.generate(), lambda: bool(finished), timeout=120)
    print(f"heartbeat max gap during generation: {gap * 1000:.1f} ms")
    assert gap < 2.0


def test_user_errors_show_a_message_and_the_next_job_works(qtbot, window, tiny_sd, tmp_path):
    # An invalid size never reaches the worker.
    window.sampler_panel.set_values({"width": 66})
    assert window.generate() is None
    assert "multiple of 8" in window.message_bar.text()
    window.sampler_panel.set_values({"width": 64})

    # A broken model file fails its job with a clear message; the worker keeps running.
    bad = Path(window.settings.extra_model_folders[0]) / "broken.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    try:
        window.refresh_models(select=str(bad))
        assert window.prompt_panel.current_key() == str(bad)
        job = window.generate()
        assert _wait_job(qtbot, window, job.job_id) == "failed"
        assert window.message_bar.text()
    finally:
        bad.unlink()

    # An init image that vanished before the job ran.
    window.refresh_models(select=str(tiny_sd))
    gone = tmp_path / "gone.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(gone)
    assert window.img2img_panel.set_image(gone)
    gone.unlink()
    job = window.generate()
    assert _wait_job(qtbot, window, job.job_id) == "failed"
    assert "gone.png" in window.message_bar.text()
    window.img2img_panel.clear()

    job = window.generate()
    assert _wait_job(qtbot, window, job.job_id) == "finished"


def test_unwritable_output_keeps_images_and_offers_save_as(qtbot, window, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    window.worker.set_output_dir(blocker / "out")
    failures: list[str] = []
    window.worker.save_failed.connect(lambda _j, message: failures.append(message))
    job = window.generate()
    assert _wait_job(qtbot, window, job.job_id) == "finished"
    assert failures and "not-a-folder" in failures[0]
    assert "Save as" in window.message_bar.text()
    assert window.message_bar.action_button.isVisibleTo(window)
    assert window.message_bar.action_button.text() == "Save as…"
    assert window.last_images is not None and window.last_images.images
    with qtbot.waitSignal(window.results_saved) as saved:
        window.save_last_images_as(str(tmp_path / "elsewhere"))
    assert len(saved.args[0]) == 1
    assert pngs(tmp_path / "elsewhere")


def test_img2img_job_uses_strength(qtbot, window, tmp_path):
    from PIL import Image

    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(init)
    assert window.img2img_panel.set_image(init)
    window.img2img_panel.set_strength(0.5)
    window.sampler_panel.set_values({"steps": 4})
    request = window.build_request()
    assert request.init_image == str(init) and request.strength == 0.5
    seen = _collect(window)
    job = window.generate()
    assert _wait_job(qtbot, window, job.job_id) == "finished"
    assert [s for j, s, _t in seen["steps"] if j == job.job_id] == [1, 2]


def test_settings_round_trip_through_a_restart(qtbot, tiny_settings, tiny_sd):
    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.prompt_panel.set_prompt("a lighthouse at dusk", "blurry")
    first.sampler_panel.set_sampler("DPM++ 2M", "Karras")
    first.sampler_panel.set_values({"steps": 7})
    first.sampler_panel.set_values({"cfg_scale": 4.5})
    first.sampler_panel.set_size(64, 96)
    first.sampler_panel.set_values({"batch_size": 2})
    first.img2img_panel.set_strength(0.4)
    first.queue_dock.hide()
    first.resize(1111, 777)
    first.close()
    assert load_settings().last_request["prompt"] == "a lighthouse at dusk"

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    state = second.request_values()
    assert state["prompt"] == "a lighthouse at dusk" and state["negative_prompt"] == "blurry"
    assert (state["sampler"], state["schedule"]) == ("DPM++ 2M", "Karras")
    assert (state["steps"], state["cfg_scale"], state["batch_size"]) == (7, 4.5, 2)
    assert (state["width"], state["height"]) == (64, 96)
    assert state["strength"] == pytest.approx(0.4)
    assert state["model"] == str(tiny_sd)
    assert second.queue_dock.isHidden()
    assert not second.prompt_dock.isHidden()
    # The offscreen screen is smaller than the window, so Qt clamps the size; check that
    # the saved geometry is a valid one instead of comparing pixels.
    saved = load_settings().window_geometry
    assert saved and second.restoreGeometry(QByteArray.fromBase64(saved.encode()))
    second.close()


def test_settings_dialog_edits_paths(qtbot, window, tmp_path):
    dialog = window.open_settings()
    dialog.output_edit.setText(str(tmp_path / "renders"))
    dialog.add_folder(str(tmp_path / "more-models"))
    dialog.device_combo.setCurrentText("cpu")
    assert dialog.queue_combo.currentData() == "run"
    dialog.queue_combo.setCurrentIndex(dialog.queue_combo.findData("paused"))
    assert dialog.precision_combo.currentText() == "auto"
    dialog.precision_combo.setCurrentText("fp32")
    dialog.memory_combo.setCurrentText("tiling")
    assert not dialog.compile_check.isChecked()
    dialog.accept()
    assert window.settings.output_dir == str(tmp_path / "renders")
    saved = load_settings()
    assert str(tmp_path / "more-models") in saved.extra_model_folders
    assert saved.queue_on_start == "paused"
    assert (saved.precision, saved.vae_precision, saved.memory_mode) == ("fp32", "auto", "tiling")
    job = window.generate()
    assert _wait_job(qtbot, window, job.job_id) == "finished"
    assert pngs(tmp_path / "renders")
    # The job ran on a backend built from the new performance settings.
    engine = window.worker.backend.engine
    assert engine.options == saved.compute_options()
    assert engine.plan.dtype == "fp32"


def test_builtin_model_is_default_and_shows_examples(qtbot, sandstorm_home, monkeypatch, tiny_sd):
    from dataclasses import replace

    from desktop.engine.models import inspect_folder

    builtin = replace(
        inspect_folder(tiny_sd),
        name="builtin",
        family="builtin",
        extras={"example_prompts": ["a desert at noon", "a dune at night"]},
    )
    plain = replace(inspect_folder(tiny_sd), name="other", path=tiny_sd.parent / "other")
    broken = replace(plain, name="broken", usable=False, reason="unreadable: the file is truncated")
    monkeypatch.setattr("desktop.ui.main_window.scan", lambda folders: [builtin, plain, broken])
    win = MainWindow()
    qtbot.addWidget(win)
    assert win.prompt_panel.current_model() is builtin
    assert "a desert at noon" in win.prompt_panel.prompt_edit.placeholderText()
    assert "a dune at night" in win.prompt_panel.prompt_edit.toolTip()
    assert "[Built-in]" in win.prompt_panel.model_combo.currentText()
    win.prompt_panel.example_button.click()
    assert win.prompt_panel.prompt() == "a desert at noon"
    item = win.prompt_panel.model_combo.model().item(2)
    assert not item.isEnabled()
    assert "the file is truncated" in item.toolTip()
    # Another model: no examples, the ordinary placeholder.
    win.prompt_panel.model_combo.setCurrentIndex(1)
    assert "desert" not in win.prompt_panel.prompt_edit.placeholderText()
    assert not win.prompt_panel.example_button.isVisibleTo(win.prompt_panel)
    win.close()


@pytest.mark.parametrize(
    "key, modifiers",
    [
        (Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier),
        (
            Qt.Key.Key_Enter,
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.KeypadModifier,
        ),
    ],
)
def test_keyboard_generate_and_escape_cancel(qtbot, window, key, modifiers):
    window.sampler_panel.set_values({"steps": 150})
    window.prompt_panel.negative_edit.setFocus()
    QTest.keyClick(window.prompt_panel.negative_edit, key, modifiers)
    assert len(window.jobs) == 1
    job = (window.jobs.pending or [window.jobs.running])[0]
    with qtbot.waitSignal(window.preview_shown, timeout=LONG):
        pass
    QTest.keyClick(window.prompt_panel.negative_edit, Qt.Key.Key_Escape)
    assert job.cancelled
    assert _wait_job(qtbot, window, job.job_id) == "cancelled"
    assert window.prompt_panel.negative_prompt() == ""  # the keys did not type into the box


def test_apply_request_fills_the_panels(qtbot, window, tiny_sd):
    from desktop.engine.request import GenerationRequest

    request = GenerationRequest(
        prompt="reused",
        model=str(tiny_sd),
        sampler="DDIM",
        steps=11,
        cfg_scale=3.0,
        seed=42,
        width=96,
        height=64,
    )
    window.apply_request(request)
    assert window.build_request() == request
    window.apply_request(request, keep_seed=False)
    assert window.build_request() == request.replace(seed=-1)


def test_changing_model_family_offers_its_sizes(qtbot, sandstorm_home, monkeypatch, tiny_sd):
    from dataclasses import replace

    from desktop.engine.models import inspect_folder

    sd1 = inspect_folder(tiny_sd)
    sdxl = replace(sd1, name="xl", family="sdxl", native_size=1024, extras={}, path=tiny_sd / "x")
    monkeypatch.setattr("desktop.ui.main_window.scan", lambda folders: [sd1, sdxl])
    win = MainWindow()
    qtbot.addWidget(win)
    panel = win.sampler_panel
    assert (panel.values()["width"], panel.values()["height"]) == (64, 64)  # native size
    win.prompt_panel.model_combo.setCurrentIndex(1)
    assert (panel.values()["width"], panel.values()["height"]) == (1024, 1024)
    assert panel.preset_combo.currentText() == "1024 × 1024"
    panel.preset_combo.setCurrentIndex(3)
    panel.preset_combo.activated.emit(3)
    assert (panel.values()["width"], panel.values()["height"]) == (832, 1216)
    panel.swap_button.click()
    assert (panel.values()["width"], panel.values()["height"]) == (1216, 832)
    assert "[SDXL]" in win.prompt_panel.model_combo.currentText()
    win.close()


def test_dropping_an_image_with_settings_on_the_window_offers_them(qtbot, tiny_settings, tmp_path):
    """A drop anywhere sets the img2img image and offers the image's stored parameters."""
    from PIL import Image
    from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    from desktop.engine.gallery import save_png_with_metadata
    from desktop.engine.request import GenerationRequest
    from desktop.ui.main_window import MainWindow

    stored = GenerationRequest(prompt="a stored prompt", seed=4242, steps=7, width=64, height=64)
    path = save_png_with_metadata(Image.new("RGB", (64, 64), "red"), stored, tmp_path / "a.png")
    window = MainWindow(settings=tiny_settings)
    qtbot.addWidget(window)
    try:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        event = QDropEvent(
            QPoint(10, 10),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        window.dropEvent(event)
        assert window.img2img_panel.init_image is not None
        bar = window.message_bar
        assert "generation settings" in bar.text()
        bar._run_action()
        state = window.request_values()
        assert state["prompt"] == "a stored prompt" and state["seed"] == 4242
        assert state["steps"] == 7
    finally:
        window.shutdown()


def test_typing_after_launch_lands_in_the_prompt_and_space_never_generates(qtbot, window):
    """A new user launches, types a sentence and presses Ctrl+Enter: one job, that prompt."""
    queued: list[str] = []
    add = window.jobs.add
    window.jobs.add = lambda request: queued.append(request.prompt) or add(request)  # type: ignore[method-assign]
    focused = window.focusWidget()
    assert focused is window.prompt_panel.prompt_edit
    window.prompt_panel.set_prompt("")
    QTest.keyClicks(focused, "a red fox jumps over seven lazy dogs")
    assert queued == []
    QTest.keyClick(focused, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert queued == ["a red fox jumps over seven lazy dogs"]

    # A click on Generate does not leave the button focused, so the next spaces type text.
    window.generate_button.click()
    assert len(queued) == 2
    assert window.generate_button.focusPolicy() == Qt.FocusPolicy.TabFocus
    assert window.focusWidget() is not window.generate_button

    # Reached with Tab, the button takes Space and Enter like any button.
    window.generate_button.setFocus(Qt.FocusReason.TabFocusReason)
    QTest.keyClick(window.generate_button, Qt.Key.Key_Space)
    QTest.keyClick(window.generate_button, Qt.Key.Key_Return)
    assert len(queued) == 4
    window.cancel_all()


# -- layout and the full-window gallery (no engine started) ----------------------------------


@pytest.fixture
def idle_window(qtbot, tiny_settings):
    """A shown window whose worker is never started (nothing loads a model)."""
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.shutdown()


def _strip_rows(win: MainWindow) -> float:
    view = win.gallery_panel.view
    return view.viewport().height() / view.gridSize().height()


def test_default_layout_gives_the_gallery_strip_two_rows(qtbot, idle_window):
    assert not idle_window.gallery_dock.isHidden()
    qtbot.waitUntil(lambda: _strip_rows(idle_window) >= 2, timeout=5_000)
    # The canvas keeps the rest.
    assert idle_window.canvas.height() > 100


def test_queue_dock_shows_only_while_there_are_jobs(qtbot, idle_window):
    win = idle_window
    assert win.queue_dock.isHidden()  # empty queue: no room taken
    win.jobs.pause()  # nothing is handed to the (never started) worker
    job = win.generate()
    assert job is not None and win.queue_dock.isVisible()
    assert win.queue_view.job_ids() == [job.job_id]
    win.remove_job(job.job_id)
    assert win.queue_dock.isHidden()
    # Opened from the View menu while empty, it stays open.
    win.queue_dock.toggleViewAction().trigger()
    assert win.queue_dock.isVisible()
    win.cancel_all()  # the queue refreshes, still empty
    assert win.queue_dock.isVisible()
    assert not win.worker.isRunning()


def test_ctrl_g_shows_the_full_window_gallery_and_esc_returns(qtbot, idle_window):
    win = idle_window
    visible = [d.objectName() for d in win.findChildren(type(win.gallery_dock)) if d.isVisible()]
    assert "GalleryDock" in visible and "PromptDock" in visible
    QTest.keyClick(win.prompt_panel.prompt_edit, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    assert win.is_browsing() and win.gallery_browser.isVisible()
    assert win.browse_action.isChecked()
    assert not any(d.isVisible() for d in win.findChildren(type(win.gallery_dock)))
    QTest.keyClick(win.gallery_browser.grid, Qt.Key.Key_Escape)
    assert not win.is_browsing() and win.canvas.isVisible()
    assert [
        d.objectName() for d in win.findChildren(type(win.gallery_dock)) if d.isVisible()
    ] == visible
    # The View menu and the strip's Browse button do the same; Ctrl+G toggles back.
    assert win.browse_action in win.view_menu.actions()
    win.browse_action.trigger()
    assert win.is_browsing()
    QTest.keyClick(win.gallery_browser.grid, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    assert not win.is_browsing()
    win.gallery_panel.browse_action.trigger()
    assert win.is_browsing()
    win.show_canvas()


def test_viewer_in_the_window_esc_goes_back_step_by_step(qtbot, idle_window, tiny_settings):
    from PIL import Image

    from desktop.engine.request import GenerationRequest

    win = idle_window
    gallery = win.gallery_panel.gallery
    saved = [
        gallery.save(
            Image.new("RGB", (32, 32), (40 * i, 80, 120)),
            GenerationRequest(prompt=f"p{i}", seed=i + 1),
        )
        for i in range(3)
    ]
    win.results_saved.emit(saved)
    win.show_browser()
    browser = win.gallery_browser
    assert browser.pages.total == 3
    browser.grid.set_current(0)
    QTest.keyClick(browser.grid, Qt.Key.Key_Return)
    assert browser.is_viewing()
    QTest.keyClick(browser.viewer, Qt.Key.Key_Escape)  # the viewer first
    assert win.is_browsing() and not browser.is_viewing()
    QTest.keyClick(browser.grid, Qt.Key.Key_Escape)  # then the canvas
    assert not win.is_browsing()
    # "To img2img" from the browser comes back to the panels with the image loaded.
    win.show_browser()
    browser.grid.set_current(1)
    browser.gallery_actions.img2img.trigger()
    assert not win.is_browsing() and win.img2img_dock.isVisible()
    assert win.img2img_panel.init_image() == str(saved[1].path)


def test_layout_and_thumbnail_size_survive_a_restart_while_browsing(qtbot, tiny_settings):
    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.show_browser()
    first.gallery_browser.set_thumbnail_size(96)
    first.close()  # closed while browsing: the docks are saved as they were
    saved = load_settings()
    assert saved.gallery_thumbnail_size == 96

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    assert not second.is_browsing()
    assert second.gallery_browser.thumbnail_size == 96
    assert not second.gallery_dock.isHidden() and not second.prompt_dock.isHidden()
    second.close()


def test_an_older_saved_layout_is_kept_and_the_strip_gets_its_rows(qtbot, tiny_settings):
    from desktop.engine.settings import save_settings

    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.resizeDocks([first.gallery_dock], [120], Qt.Orientation.Vertical)
    qtbot.waitUntil(lambda: _strip_rows(first) < 1, timeout=5_000)
    first.queue_dock.show()
    # A layout saved by an earlier version (saveState without a version number).
    settings = first.settings
    settings.window_state = bytes(first.saveState().toBase64().data()).decode()
    first.shutdown()
    save_settings(settings)

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    qtbot.waitUntil(lambda: _strip_rows(second) >= 2, timeout=5_000)
    assert second.queue_dock.isHidden()  # empty queue
    assert not second.prompt_dock.isHidden()
    second.shutdown()
