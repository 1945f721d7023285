"""The main window with ComfyUI servers: the backend picker, routing, several jobs at once,
"on <server>" in the queue, cancel, a server that is down, and the seed note. Against
``FakeComfy`` servers on 127.0.0.1; the local engine is never started for these jobs."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QToolButton

from desktop.engine.metadata import read_metadata
from desktop.engine.remote.comfy_client import ServerConfig, ServerModels
from desktop.engine.remote.comfy_graph import describe_seed_difference
from desktop.engine.settings import (
    ALL_SERVERS,
    LOCAL_BACKEND,
    Settings,
    load_settings,
    save_settings,
    server_entry,
)
from desktop.ui.backends import backend_choices, checkpoint_info, checkpoint_infos
from desktop.ui.jobs import Job
from desktop.ui.main_window import MainWindow
from tests.helpers.fake_comfy import FakeComfy
from tests.ui.conftest import pngs

WAIT = 20_000
SMALL = {"width": 64, "height": 64, "steps": 3, "sampler": "Euler", "batch_size": 1}


# -- plain logic ---------------------------------------------------------------------------
def test_backend_choices_offer_all_servers_from_two_on():
    a = ServerConfig("http://10.0.0.1:8188")
    b = ServerConfig("http://10.0.0.2:8188", name="Studio")
    assert backend_choices([]) == [(LOCAL_BACKEND, "Local")]
    assert backend_choices([a]) == [(LOCAL_BACKEND, "Local"), (a.url, "10.0.0.1:8188")]
    assert backend_choices([a, b])[1:] == [
        (a.url, "10.0.0.1:8188"),
        (b.url, "Studio"),
        (ALL_SERVERS, "All servers"),
    ]
    twin = ServerConfig("http://10.0.0.3:8188", name="Studio")
    labels = [label for _key, label in backend_choices([b, twin])]
    assert labels[1:3] == ["Studio (10.0.0.2:8188)", "Studio (10.0.0.3:8188)"]


@pytest.mark.parametrize(
    "name, stem, family",
    [
        ("sd15.safetensors", "sd15", "sd1"),
        ("sd_xl_base_1.0.safetensors", "sd_xl_base_1.0", "sdxl"),
        ("XL\\juggernautXL_v9.safetensors", "juggernautXL_v9", "sdxl"),
        ("sub/dreamshaperXL10.ckpt", "dreamshaperXL10", "sdxl"),
        ("pixlart.safetensors", "pixlart", "sd1"),
    ],
)
def test_server_checkpoints_become_picker_entries(name, stem, family):
    info = checkpoint_info(name)
    assert (info.name, info.family, str(info.path)) == (stem, family, str(Path(name)))
    assert info.usable and info.extras == {"server": True}
    assert info.native_size == (1024 if family == "sdxl" else 512)
    assert checkpoint_infos(None) == []
    assert [i.name for i in checkpoint_infos(ServerModels(checkpoints=(name,)))] == [stem]


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeComfy]]:
    """Starts fake ComfyUI servers; every one is stopped after the test."""
    started: list[FakeComfy] = []

    def start(**options) -> FakeComfy:
        server = FakeComfy(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def make_window(qtbot, tiny_settings: Settings, fakes) -> Iterator[Callable[..., MainWindow]]:
    """A shown window (local engine not started) with ``servers`` set up, named GPU 1, …"""
    windows: list[MainWindow] = []

    def make(*servers: FakeComfy | str, **changes) -> MainWindow:
        urls = [s if isinstance(s, str) else s.url for s in servers]
        entries = [server_entry(ServerConfig(u, name=f"GPU {i}")) for i, u in enumerate(urls, 1)]
        save_settings(replace(tiny_settings, servers=entries, **changes))
        win = MainWindow()
        win.remote.retry_s = (0.2,)  # a server that comes back is found quickly
        _record_outcomes(win)
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        windows.append(win)
        return win

    yield make
    for win in windows:
        assert win.shutdown(10_000)


def _labels(win: MainWindow) -> list[str]:
    combo = win.prompt_panel.backend_combo
    return [combo.itemText(i) for i in range(combo.count())]


def _names(win: MainWindow) -> list[str]:
    return [info.name for info in win.prompt_panel.listed_models()]


def _choose(qtbot, win: MainWindow, backend: str, models: list[str]) -> None:
    """Pick ``backend`` in the picker and wait until the model picker lists ``models``."""
    assert win.prompt_panel.select_backend(backend)
    qtbot.waitUntil(lambda: _names(win) == models, timeout=WAIT)


def _queue_texts(win: MainWindow) -> list[str]:
    view = win.queue_view
    rows = [view.list.itemWidget(view.list.item(i)) for i in range(view.list.count())]
    return [row.findChild(QLabel).text() for row in rows]


#: window -> {job id: how it ended}, recorded from the window's first moment.
_OUTCOMES: weakref.WeakKeyDictionary[MainWindow, dict[str, str]] = weakref.WeakKeyDictionary()


def _record_outcomes(win: MainWindow) -> None:
    seen = _OUTCOMES.setdefault(win, {})
    r = win.remote
    r.job_finished.connect(lambda j, _saved: seen.setdefault(j, "finished"))
    r.job_failed.connect(lambda j, message: seen.setdefault(j, f"failed: {message}"))
    r.job_cancelled.connect(lambda j: seen.setdefault(j, "cancelled"))


def _outcome(qtbot, win: MainWindow, job: Job, timeout: int = WAIT) -> str:
    """Wait until ``job`` finished, failed or was cancelled; return which."""
    seen = _OUTCOMES[win]
    qtbot.waitUntil(
        lambda: job.job_id in seen and win.jobs.get(job.job_id) is None, timeout=timeout
    )
    return seen[job.job_id]


def _generate(win: MainWindow, model: str = "", prompt: str = "", **values) -> Job:
    if model:
        assert win.prompt_panel.select_model(model)
    if prompt:
        win.prompt_panel.set_prompt(prompt)
    win.sampler_panel.set_values({**SMALL, **values})
    job = win.generate()
    assert job is not None, win.message_bar.text()
    return job


# -- the picker ----------------------------------------------------------------------------
def test_the_picker_appears_only_with_servers(qtbot, make_window):
    win = make_window()
    panel = win.prompt_panel
    assert not panel.backend_combo.isVisibleTo(panel)
    one = replace(win.settings, servers=[server_entry(ServerConfig("http://10.0.0.1:8188"))])
    win.apply_settings(one)
    assert panel.backend_combo.isVisibleTo(panel)
    assert _labels(win) == ["Local", "10.0.0.1:8188"]
    assert panel.current_backend() == LOCAL_BACKEND
    two = replace(one, servers=[*one.servers, server_entry(ServerConfig("http://10.0.0.2:8188"))])
    win.apply_settings(two)
    assert _labels(win) == ["Local", "10.0.0.1:8188", "10.0.0.2:8188", "All servers"]
    win.apply_settings(replace(two, servers=[]))
    assert not panel.backend_combo.isVisibleTo(panel)
    assert win.remote.pool() is None  # a local choice runs no pool


def test_a_server_job_runs_end_to_end_and_lands_in_the_gallery(
    qtbot, make_window, fakes, tiny_sd, tiny_settings
):
    fake = fakes(checkpoints=["sd15.safetensors", "xl/juggernautXL_v9.safetensors"])
    win = make_window(fake)
    local_key = win.prompt_panel.current_key()
    assert local_key == str(tiny_sd)
    _choose(qtbot, win, fake.url, ["sd15", "juggernautXL_v9"])
    assert [i.family for i in win.prompt_panel.listed_models()] == ["sd1", "sdxl"]
    assert load_settings().backend == fake.url

    job = _generate(win, "sd15.safetensors", prompt="a lighthouse on a server")
    assert job.remote and job.request.model == "sd15.safetensors"
    assert _outcome(qtbot, win, job) == "finished"
    # The server ran it with its own checkpoint name; the local engine never started.
    graph = fake.prompts[-1]["graph"]
    assert {"ckpt_name": "sd15.safetensors"} in [n["inputs"] for n in graph.values()]
    assert not win.worker.isRunning()
    # Saved, in the gallery, with the server's name in the metadata (never its token).
    files = pngs(Path(tiny_settings.output_dir))
    assert len(files) == 1
    qtbot.waitUntil(lambda: win.gallery_panel.model.total == 1, timeout=WAIT)
    with Image.open(files[0]) as image:
        parameters = image.text["parameters"]
    assert "Server: GPU 1" in parameters and "a lighthouse on a server" in parameters
    assert win.canvas.has_image() and not win.canvas.is_preview
    assert (
        win.queue_view.job_ids() == []
        and win.state_label.text() == f"Finished {job.job_id} on GPU 1"
    )
    # The servers' job counts changing does not hide the job's news.
    with qtbot.waitSignal(win.remote.servers_changed, timeout=WAIT):
        pass
    assert win.state_label.text() == f"Finished {job.job_id} on GPU 1"

    # Back to Local: the local list and the last local model come back.
    assert win.prompt_panel.select_backend(LOCAL_BACKEND)
    assert win.prompt_panel.listed_models() == win.models
    assert win.prompt_panel.current_key() == local_key
    assert win.remote.pool() is None


def test_two_jobs_on_two_servers_run_at_once_and_cancel_stops_only_one(qtbot, make_window, fakes):
    alpha = fakes(checkpoints=["alpha.safetensors"], step_delay=0.05)
    beta = fakes(checkpoints=["beta.safetensors"], step_delay=0.05)
    win = make_window(alpha, beta)
    assert _labels(win) == ["Local", "GPU 1", "GPU 2", "All servers"]
    _choose(qtbot, win, ALL_SERVERS, ["alpha", "beta"])
    shown: list[str] = []
    win.preview_shown.connect(lambda job_id, _step: shown.append(job_id))

    first = _generate(win, "alpha.safetensors", steps=60)
    second = _generate(win, "beta.safetensors", steps=30)
    qtbot.waitUntil(lambda: bool(first.where and second.where), timeout=WAIT)
    assert (first.where, second.where) == ("GPU 1", "GPU 2")
    assert win.jobs.running_jobs == [first, second]
    texts = _queue_texts(win)
    assert texts[0].startswith("▶ on GPU 1 · ") and texts[1].startswith("▶ on GPU 2 · ")
    assert win.queue_view.count_label.text() == "2 running, 0 waiting"
    qtbot.waitUntil(lambda: alpha.step > 0 and beta.step > 0, timeout=WAIT)  # both at work

    # The canvas follows the job started last; the other's previews are only counted.
    qtbot.waitUntil(lambda: first.dropped_previews > 0 and second.job_id in shown, timeout=WAIT)
    since = shown.index(second.job_id)
    assert set(shown[since:]) == {second.job_id}

    # Cancel the first from its row: only it stops, on its own server.
    button = win.queue_view.findChild(QToolButton, f"cancel-{first.job_id}")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert first.cancelled and not second.cancelled
    assert _outcome(qtbot, win, first) == "cancelled"
    assert alpha.interrupts and not beta.interrupts
    assert _outcome(qtbot, win, second) == "finished"
    assert len(beta.history) == 1 and len(alpha.history) <= 1
    assert win.queue_view.job_ids() == []
    assert not win.worker.isRunning()


def test_a_server_that_goes_down_makes_the_job_wait_and_the_app_runs_on(qtbot, make_window, fakes):
    fake = fakes(checkpoints=["sd15.safetensors"])
    win = make_window(fake)
    _choose(qtbot, win, fake.url, ["sd15"])
    fake.fail("refuse")
    job = _generate(win)

    def says_why() -> bool:
        text = _queue_texts(win)[0]
        return "waiting for a server: " in text and "refused the connection" in text

    # "GPU 1 failed (… refused the connection …)" or "none is reachable … refused …":
    # which of the two the pool says last depends on its threads.
    qtbot.waitUntil(says_why, timeout=WAIT)
    assert _queue_texts(win)[0].startswith("⏳ waiting for a server: ")
    assert "refused the connection" in win.state_label.text()
    assert not job.where and not job.cancelled
    # The window keeps working meanwhile: another job queues behind it.
    later = _generate(win)
    assert win.jobs.get(later.job_id) is later
    fake.recover()
    assert _outcome(qtbot, win, job) == "finished"
    assert _outcome(qtbot, win, later) == "finished"
    assert win.message_bar.text() == ""  # waiting is no error


def test_a_server_that_is_down_from_the_start_says_why(qtbot, make_window, fakes):
    fake = fakes(checkpoints=["sd15.safetensors"])
    fake.fail("refuse")
    win = make_window(fake)
    assert win.prompt_panel.select_backend(fake.url)
    assert win.prompt_panel.model_combo.currentText() == "Connecting…"
    assert not win.prompt_panel.model_combo.model().item(0).isEnabled()
    qtbot.waitUntil(lambda: "refused the connection" in win.state_label.text(), timeout=WAIT)
    assert "refused" in win.prompt_panel.model_combo.toolTip()
    assert win.generate() is None
    assert "No server has listed its models yet" in win.message_bar.text()
    assert "refused the connection" in win.message_bar.text()
    fake.recover()
    qtbot.waitUntil(lambda: _names(win) == ["sd15"], timeout=WAIT)
    job = _generate(win)
    assert _outcome(qtbot, win, job) == "finished"


def test_the_seed_note_is_shown_once_and_the_backend_survives_a_restart(qtbot, make_window, fakes):
    fake = fakes(checkpoints=["a.safetensors", "b.safetensors"])
    win = make_window(fake)
    assert not win.settings.seen_server_seed_note
    _choose(qtbot, win, fake.url, ["a", "b"])
    assert win.message_bar.text() == describe_seed_difference()
    assert load_settings().seen_server_seed_note
    win.message_bar.dismiss()
    win.prompt_panel.select_model("b.safetensors")
    win.prompt_panel.select_backend(LOCAL_BACKEND)
    _choose(qtbot, win, fake.url, ["a", "b"])
    assert win.message_bar.text() != describe_seed_difference()
    assert win.prompt_panel.current_key() == "b.safetensors"  # the last server model
    win.close()

    again = MainWindow()
    qtbot.addWidget(again)
    try:
        assert again.prompt_panel.current_backend() == fake.url
        assert again.prompt_panel.model_combo.currentText() == "Connecting…"
        again.show()
        again.start_engine()  # as the application does once the window is shown
        qtbot.waitUntil(lambda: _names(again) == ["a", "b"], timeout=WAIT)
        assert again.prompt_panel.current_key() == "b.safetensors"
        assert not again.worker.isRunning()
        assert again.message_bar.text() != describe_seed_difference()
    finally:
        again.shutdown()


def test_removing_the_chosen_server_falls_back_to_local(qtbot, make_window, fakes, tiny_sd):
    fake = fakes(checkpoints=["a.safetensors"], step_delay=0.05)
    win = make_window(fake)
    _choose(qtbot, win, fake.url, ["a"])
    job = _generate(win, steps=400)  # long enough to be running when the server goes
    qtbot.waitUntil(lambda: bool(job.where), timeout=WAIT)
    win.apply_settings(replace(win.settings, servers=[]))
    assert win.settings.backend == LOCAL_BACKEND and win.remote.pool() is None
    assert win.prompt_panel.current_key() == str(tiny_sd)
    assert _outcome(qtbot, win, job) == "cancelled"
    assert win.message_bar.text() == "1 job on the servers was cancelled: the servers changed."


def test_reuse_and_to_img2img_work_on_a_server_image(qtbot, make_window, fakes, tiny_settings):
    fake = fakes(checkpoints=["sd15.safetensors", "other.safetensors"])
    win = make_window(fake)
    _choose(qtbot, win, fake.url, ["sd15", "other"])
    job = _generate(win, "sd15.safetensors", prompt="a server picture", seed=77)
    assert _outcome(qtbot, win, job) == "finished"
    (path,) = pngs(Path(tiny_settings.output_dir))
    saved = read_metadata(path)
    assert saved.request is not None and saved.request.seed == 77

    # Reuse: the panels take the image's settings, the server's checkpoint included.
    win.prompt_panel.select_model("other.safetensors")
    win.prompt_panel.set_prompt("something else")
    win.apply_request(saved.request)
    assert win.prompt_panel.current_key() == "sd15.safetensors"
    assert win.prompt_panel.prompt() == "a server picture"
    again = win.generate()
    assert again is not None and again.request.seed == 77
    assert _outcome(qtbot, win, again) == "finished"
    graph = fake.prompts[-1]["graph"]
    assert {"ckpt_name": "sd15.safetensors"} in [n["inputs"] for n in graph.values()]

    # To img2img: the server image is uploaded as the init image of the next job.
    win.set_init_image(path)
    third = win.generate()
    assert third is not None and third.request.init_image == str(path)
    assert _outcome(qtbot, win, third) == "finished"
    assert fake.uploads, "the init image was not uploaded"
    classes = [n["class_type"] for n in fake.prompts[-1]["graph"].values()]
    assert "LoadImage" in classes and "VAEEncode" in classes
