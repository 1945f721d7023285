"""Sandstorm's main window: dockable panels around the canvas, a job queue, the workers.

The window builds all of itself here: docks (gallery included), menus and shortcuts. It is
thin: each panel reports and shows its settings by name (``values()`` / ``set_values()``),
``desktop.ui.form`` turns them into the frozen request, ``JobQueue`` keeps the queue, and
``GenerationWorker`` runs jobs on the local engine. The GUI thread never imports torch; the
worker is started by ``start_engine`` once the window is on screen.

The gallery shows as a strip under the canvas and, on Ctrl+G (View ▸ Gallery, the strip's
Browse button), in the whole window instead of the canvas (``GalleryBrowser``): the docks
step aside while it shows and come back as they were. The queue dock shows itself while
there are jobs and steps aside when the queue is empty.

With ComfyUI servers set up (File ▸ Settings), a picker next to the model chooses where jobs
run: "Local", one server, or "All servers". Jobs for the servers go to ``RemoteWorker``
(same signals, same handlers), several of them at once; the model picker lists the servers'
checkpoints then, and the local worker is not started for them.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QImageReader,
    QKeySequence,
    QShortcut,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.defaults import defaults_for
from desktop.engine.errors import RequestError, SandstormError
from desktop.engine.metadata import read_metadata
from desktop.engine.model_folders import checkpoint_search_folders
from desktop.engine.models import ModelInfo, match_model, scan
from desktop.engine.queue_store import QueueStore
from desktop.engine.remote.comfy_graph import describe_seed_difference
from desktop.engine.request import GenerationRequest, snap_size
from desktop.engine.results import save_results
from desktop.engine.settings import LOCAL_BACKEND, Settings, load_settings, save_settings
from desktop.ui.backends import (
    backend_choices,
    checkpoint_infos,
    connecting_reason,
    is_server_backend,
    servers_summary,
)
from desktop.ui.canvas import ImageCanvas
from desktop.ui.control_panel import ControlPanel
from desktop.ui.download_dialog import DownloadDialog, open_download_dialog
from desktop.ui.fields import SettingsPanel
from desktop.ui.form import build_request, remember_values, restored_values
from desktop.ui.gallery_browser import GalleryBrowser
from desktop.ui.gallery_info import describe_source
from desktop.ui.gallery_panel import GalleryPanel
from desktop.ui.icons import icon
from desktop.ui.img2img_panel import Img2ImgPanel
from desktop.ui.jobs import Job, JobQueue
from desktop.ui.lora_panel import LoraPanel
from desktop.ui.message_bar import MessageBar
from desktop.ui.prompt_panel import PromptPanel, model_key
from desktop.ui.queue_view import QueueView
from desktop.ui.reference_panel import ReferencePanel
from desktop.ui.remote_worker import RemoteWorker
from desktop.ui.sampler_panel import SamplerPanel
from desktop.ui.settings_dialog import SettingsDialog
from desktop.ui.tasks import Task, TaskRunner
from desktop.ui.upscale_dialog import ImageUpscaler, UpscaleDialog
from desktop.ui.worker import BackendFactory, GenerationWorker, JobImages

#: Version of the docks' saved layout (``saveState``). 1: the gallery strip shows two rows
#: and the queue dock steps aside while empty; an older layout is restored and then adjusted.
LAYOUT_VERSION = 1
#: Rows of thumbnails the gallery strip has room for in a new (or adjusted) layout.
GALLERY_STRIP_ROWS = 2


class MainWindow(QMainWindow):
    """The studio window.

    Signals:
        results_saved(list): saved gallery items (or paths) of each finished job, for the
            gallery panel.
        preview_shown(str, int): job id and step of each preview drawn on the canvas.
        output_dir_changed(str): the user chose another output folder.
    """

    results_saved = Signal(list)
    preview_shown = Signal(str, int)
    output_dir_changed = Signal(str)

    def __init__(
        self,
        settings: Settings | None = None,
        backend_factory: BackendFactory | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else load_settings()
        self.setWindowTitle("Sandstorm")
        self.setObjectName("MainWindow")
        self.setDockNestingEnabled(True)
        self.setAcceptDrops(True)
        # Waiting jobs are written to disk on every change and come back on the next launch.
        self.jobs = JobQueue(store=QueueStore())
        self.tasks = TaskRunner(self)
        self.worker = GenerationWorker(
            device=self.settings.device,
            output_dir=self.settings.output_path,
            backend_factory=backend_factory,
            options=self.settings.compute_options(),
        )
        self.remote = RemoteWorker(output_dir=self.settings.output_path, parent=self)
        self.models: list[ModelInfo] = []
        #: Where jobs go now (``Settings.backend`` once ``_init_backend`` checked it).
        self._backend = LOCAL_BACKEND
        #: The servers' checkpoints as last listed (kept while the servers are away).
        self._remote_models: list[ModelInfo] = []
        #: The model last chosen locally (False) and on the servers (True).
        self._last_model: dict[bool, str] = {False: "", True: ""}
        self._restore_remote_model = False
        #: What the window last said about the servers (said again only when it changes).
        self._servers_state = ""
        self.last_images: JobImages | None = None
        self._token_counters: dict[Path | None, Any] = {}
        self._family = ""
        self._restoring = True
        self._fresh_settings = False
        self._shut_down = False
        self._shown_once = False
        self._queue_error: str | None = None
        #: The docks as they were before the full-window gallery hid them (None: not shown).
        self._layout_before_browse: QByteArray | None = None
        #: The queue dock: opened by the user while empty (stays), closed by the user while
        #: jobs wait (stays closed until the queue empties), or shown and hidden by the queue.
        self._queue_pinned = False
        self._queue_dismissed = False
        self._arranging_docks = False
        #: An older saved layout was restored: the strip may need its rows once shown.
        self._grow_strip_when_shown = False
        #: Previews not drawn on the canvas (of a cancelled job, or of a job other than the
        #: most recently started one); each job counts its own too.
        self.dropped_previews = 0

        self._build_central()
        self._build_docks()
        self._build_actions()
        self._connect_worker()
        self._connect_remote()
        self.statusBar().showMessage("Starting…")
        self._restore(self.settings)
        self._init_backend(str(restored_values(self.settings).get("model", "")))
        self._restoring = False
        self._restore_queue()

    # -- construction ----------------------------------------------------------------------
    def _build_central(self) -> None:
        central = QWidget()
        central.setObjectName("Central")
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(8)
        self.message_bar = MessageBar()
        layout.addWidget(self.message_bar)
        self.canvas = ImageCanvas()
        # The canvas, or the full-window gallery in its place (added with the docks).
        self.central_stack = QStackedWidget()
        self.central_stack.setObjectName("CentralStack")
        self.central_stack.addWidget(self.canvas)
        layout.addWidget(self.central_stack, 1)

        bar = QHBoxLayout()
        bar.setSpacing(8)
        self.progress = QProgressBar()
        self.progress.setObjectName("StepProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        self.progress.setToolTip("Step, elapsed time and speed of the running job")
        self.progress.setMinimumWidth(200)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("GenerateButton")
        self.generate_button.setIcon(icon("generate"))
        self.generate_button.setToolTip("Queue a job with the current settings (Ctrl+Enter)")
        self.generate_button.setMinimumWidth(140)
        # Reached with Tab only: a click must not leave it focused, or the next Space typed
        # (meant for the prompt) would queue another job. Enter works while it has focus.
        self.generate_button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.generate_button.setAutoDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("CancelButton")
        self.cancel_button.setIcon(icon("cancel"))
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.setEnabled(False)
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.generate_button)
        layout.addLayout(bar)
        self.setCentralWidget(central)

        self.state_label = QLabel()
        self.state_label.setObjectName("StateLabel")
        self.statusBar().addPermanentWidget(self.state_label)
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button.clicked.connect(self.cancel_current)

    def _build_docks(self) -> None:
        self.prompt_panel = PromptPanel()
        self.sampler_panel = SamplerPanel()
        self.img2img_panel = Img2ImgPanel()
        self.queue_view = QueueView()
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        right = Qt.DockWidgetArea.RightDockWidgetArea
        # Side panels run the full height; a bottom dock (the gallery) sits under the canvas.
        self.setCorner(Qt.Corner.BottomLeftCorner, left)
        self.setCorner(Qt.Corner.BottomRightCorner, right)
        self.prompt_dock = self.add_dock(self.prompt_panel, "Prompt", left, "PromptDock")
        self.sampler_dock = self.add_dock(self.sampler_panel, "Sampler", left, "SamplerDock")
        self.img2img_dock = self.add_dock(
            self.img2img_panel, "Image to image", right, "Img2ImgDock"
        )
        self.queue_dock = self.add_dock(self.queue_view, "Queue", right, "QueueDock")
        self.gallery_panel = GalleryPanel(self.settings.output_path)
        self.gallery_dock = self.add_dock(
            self.gallery_panel, "Gallery", Qt.DockWidgetArea.BottomDockWidgetArea, "GalleryDock"
        )
        self._fit_gallery_strip()
        self.gallery_browser = GalleryBrowser(
            self.gallery_panel, self.settings.gallery_thumbnail_size
        )
        self.central_stack.addWidget(self.gallery_browser)
        # The LoRA library shares the gallery's thumbnail loader (the gallery shuts it down)
        # and sits behind the img2img panel, which stays the tab shown at first.
        self.lora_panel = LoraPanel(
            self.settings.extra_model_folders,
            prompt_edit=self.prompt_panel.prompt_edit,
            loader=self.gallery_panel.loader,
        )
        self.lora_dock = self.add_dock(self.lora_panel, "LoRAs", right, "LoraDock")
        self.tabifyDockWidget(self.img2img_dock, self.lora_dock)
        # Control layers (ControlNet) sit behind the img2img panel too.
        self.control_panel = ControlPanel(self.settings.extra_model_folders)
        self.control_dock = self.add_dock(self.control_panel, "Control", right, "ControlDock")
        self.tabifyDockWidget(self.lora_dock, self.control_dock)
        # Reference images (IP-Adapter) too.
        self.reference_panel = ReferencePanel(self.settings.extra_model_folders)
        self.reference_dock = self.add_dock(
            self.reference_panel, "Reference", right, "ReferenceDock"
        )
        self.tabifyDockWidget(self.control_dock, self.reference_dock)
        self.img2img_dock.raise_()
        self.resizeDocks(
            [self.prompt_dock, self.img2img_dock], [360, 300], Qt.Orientation.Horizontal
        )

        self.prompt_panel.refresh_requested.connect(self.refresh_models)
        self.prompt_panel.model_changed.connect(self._on_model_changed)
        self.prompt_panel.backend_changed.connect(self.choose_backend)
        self.img2img_panel.message.connect(lambda text: self.show_message(text, "warning"))
        self.control_panel.message.connect(lambda text: self.show_message(text, "warning"))
        self.reference_panel.message.connect(lambda text: self.show_message(text, "warning"))
        self.img2img_panel.image_changed.connect(self._on_init_image)
        self.img2img_panel.values_changed.connect(self._update_generate_label)
        self.img2img_panel.use_size_requested.connect(self._use_image_size)
        self.queue_view.remove_requested.connect(self.remove_job)
        self.queue_view.cancel_requested.connect(self.cancel_job)
        self.queue_view.cancel_all_requested.connect(self.cancel_all)
        self.queue_view.resume_requested.connect(self.resume_queue)
        self.queue_view.requeue_requested.connect(self.requeue_interrupted)
        self.queue_view.dismiss_requested.connect(self.dismiss_interrupted)
        self.queue_dock.visibilityChanged.connect(self._on_queue_dock_visibility)
        self.queue_dock.toggleViewAction().triggered.connect(self._on_queue_dock_toggled)
        g = self.gallery_panel
        self.results_saved.connect(g.add_results)
        self.results_saved.connect(self.gallery_browser.add_results)
        self.output_dir_changed.connect(lambda folder: g.set_root(Path(folder)))
        # Reusing an image, or sending it to img2img, from the full-window gallery goes back
        # to the panels first (the docks come back), then fills them.
        g.reuse_requested.connect(lambda *_args: self.show_canvas())
        g.send_to_img2img_requested.connect(lambda _path: self.show_canvas())
        g.reuse_requested.connect(lambda request, keep: self.apply_request(request, keep))
        g.send_to_img2img_requested.connect(self.set_init_image)
        g.browse_requested.connect(self.show_browser)
        self.gallery_browser.close_requested.connect(self.show_canvas)
        self.gallery_browser.thumbnail_size_changed.connect(self._remember_thumbnail_size)
        g.open_requested.connect(self.show_image)
        g.message.connect(lambda text, level: self.show_message(text, level))
        # "Upscale" on a gallery image (strip, full-window gallery or viewer).
        self.image_upscaler = ImageUpscaler(
            device=lambda: self.settings.device,
            extra_sources=lambda: self.settings.extra_model_folders,
            parent=self,
        )
        #: The upscaler and scale chosen last, offered first next time.
        self._upscale_choice: tuple[str, float] = ("", 2.0)
        self._upscale_text = ""
        self.upscale_dialog: UpscaleDialog | None = None
        g.upscale_requested.connect(self.ask_upscale)
        u = self.image_upscaler
        u.started.connect(self._on_upscale_started)
        u.progress.connect(self._on_upscale_progress)
        u.finished.connect(self._on_upscaled)
        u.failed.connect(lambda _source, text: self.show_message(text, "error"))
        u.cancelled.connect(self._on_upscale_cancelled)

    @property
    def panels(self) -> tuple[SettingsPanel, ...]:
        """The panels that edit a request's settings."""
        return (
            self.prompt_panel,
            self.sampler_panel,
            self.img2img_panel,
            self.control_panel,
            self.reference_panel,
        )

    def add_dock(
        self,
        widget: QWidget,
        title: str,
        area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea,
        name: str = "",
    ) -> QDockWidget:
        """Add ``widget`` as a dockable panel; ``name`` keys its place in the saved layout."""
        dock = QDockWidget(title, self)
        dock.setObjectName(name or f"{type(widget).__name__}Dock")
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(area, dock)
        if area in (Qt.DockWidgetArea.BottomDockWidgetArea, Qt.DockWidgetArea.TopDockWidgetArea):
            # A strip under the canvas: keep most of the height for the image.
            self.resizeDocks([dock], [230], Qt.Orientation.Vertical)
        return dock

    def _fit_gallery_strip(self) -> None:
        """Give the gallery strip the height of ``GALLERY_STRIP_ROWS`` rows of thumbnails."""
        dock = self.gallery_dock
        style = dock.style()
        title = dock.fontMetrics().height() + 2 * (
            style.pixelMetric(QStyle.PixelMetric.PM_DockWidgetTitleMargin) + 2
        )
        height = self.gallery_panel.height_for_rows(GALLERY_STRIP_ROWS) + title
        self.resizeDocks([dock], [height], Qt.Orientation.Vertical)

    def _docks(self) -> list[QDockWidget]:
        return self.findChildren(QDockWidget)

    # -- the full-window gallery -------------------------------------------------------------
    def is_browsing(self) -> bool:
        """True while the full-window gallery shows instead of the canvas."""
        return self.central_stack.currentWidget() is self.gallery_browser

    def show_browser(self) -> None:
        """Show the whole gallery in place of the canvas; the docks step aside."""
        if self.is_browsing():
            return
        self._layout_before_browse = self.saveState(LAYOUT_VERSION)
        self._arranging_docks = True
        try:
            for dock in self._docks():
                dock.hide()
        finally:
            self._arranging_docks = False
        self.central_stack.setCurrentWidget(self.gallery_browser)
        self.browse_action.setChecked(True)
        self.gallery_browser.grid.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def show_canvas(self) -> None:
        """Back from the full-window gallery: the canvas and the docks as they were."""
        if not self.is_browsing():
            return
        self.central_stack.setCurrentWidget(self.canvas)
        state, self._layout_before_browse = self._layout_before_browse, None
        if state is not None:
            self._arranging_docks = True
            try:
                self.restoreState(state, LAYOUT_VERSION)
            finally:
                self._arranging_docks = False
        self.browse_action.setChecked(False)
        self._update_queue_dock()
        self.canvas.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def toggle_browser(self) -> None:
        if self.is_browsing():
            self.show_canvas()
        else:
            self.show_browser()

    def _on_escape(self) -> None:
        """Esc: in the full-window gallery it goes back (viewer, then canvas); on the canvas
        it cancels the running job."""
        if self.is_browsing():
            self.gallery_browser.back()
        else:
            self.cancel_current()

    def _remember_thumbnail_size(self, size: int) -> None:
        self.settings.gallery_thumbnail_size = size

    # -- the queue dock ----------------------------------------------------------------------
    def _queue_busy(self) -> bool:
        jobs = self.jobs
        return bool(jobs.running_jobs or jobs.pending or jobs.interrupted)

    def _update_queue_dock(self) -> None:
        """Show the queue dock while there are jobs, hide it when the queue is empty, unless
        the user opened it (it stays) or closed it while jobs waited (it stays closed)."""
        if self.is_browsing():
            return
        dock = self.queue_dock
        busy = self._queue_busy()
        if not busy:
            self._queue_dismissed = False
        if busy and dock.isHidden() and not self._queue_dismissed:
            self._set_queue_dock_visible(True)
        elif not busy and not dock.isHidden() and not self._queue_pinned:
            self._set_queue_dock_visible(False)

    def _set_queue_dock_visible(self, visible: bool) -> None:
        self._arranging_docks = True
        try:
            self.queue_dock.setVisible(visible)
        finally:
            self._arranging_docks = False

    def _on_queue_dock_toggled(self, checked: bool) -> None:
        # From the View menu: the user's choice holds until the queue changes its state.
        self._queue_pinned = checked and not self._queue_busy()
        self._queue_dismissed = not checked and self._queue_busy()

    def _on_queue_dock_visibility(self, _visible: bool) -> None:
        if self._arranging_docks or self.is_browsing():
            return
        if self.queue_dock.isHidden():  # closed by its title bar's button (not tabbed away)
            self._queue_pinned = False
            self._queue_dismissed = self._queue_busy()

    def _build_actions(self) -> None:
        menu = self.menuBar()
        self.file_menu = file_menu = menu.addMenu("&File")
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.settings_action.setToolTip("Output folder, model folders and device")
        self.settings_action.triggered.connect(self.open_settings)
        self.save_as_action = QAction("Save image &as…", self)
        self.save_as_action.setShortcut(QKeySequence.StandardKey.SaveAs)
        self.save_as_action.triggered.connect(self.save_canvas_as)
        self.download_action = QAction("&Download starter models…", self)
        self.download_action.setObjectName("DownloadStarterModelsAction")
        self.download_action.setToolTip("Optionally download well-known models from Hugging Face")
        self.download_action.setStatusTip(self.download_action.toolTip())
        self.download_action.triggered.connect(lambda: self.open_downloads())
        self.quit_action = quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(self.save_as_action)
        file_menu.addAction(self.settings_action)
        file_menu.addAction(self.download_action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        gen_menu = menu.addMenu("&Generate")
        self.generate_action = QAction("&Generate", self)
        self.generate_action.setToolTip("Queue a job (Ctrl+Enter)")
        self.generate_action.triggered.connect(self.generate)
        self.cancel_action = QAction("&Cancel", self)
        self.cancel_action.triggered.connect(self.cancel_current)
        self.cancel_all_action = QAction("Cancel &all", self)
        self.cancel_all_action.triggered.connect(self.cancel_all)
        self.refresh_action = QAction("&Refresh models", self)
        self.refresh_action.setShortcut(QKeySequence.StandardKey.Refresh)
        self.refresh_action.triggered.connect(self.refresh_models)
        for action in (
            self.generate_action,
            self.cancel_action,
            self.cancel_all_action,
            self.refresh_action,
        ):
            gen_menu.addAction(action)

        self.view_menu = menu.addMenu("&View")
        fit = QAction("Zoom to &fit", self)
        fit.setShortcut("Ctrl+0")
        fit.triggered.connect(self.canvas.zoom_fit)
        actual = QAction("Actual size (&100 %)", self)
        actual.setShortcut("Ctrl+1")
        actual.triggered.connect(self.canvas.zoom_actual)
        self.view_menu.addAction(fit)
        self.view_menu.addAction(actual)
        self.view_menu.addSeparator()
        self.browse_action = QAction("&Gallery (full window)", self)
        self.browse_action.setObjectName("BrowseGalleryAction")
        self.browse_action.setCheckable(True)
        self.browse_action.setShortcut("Ctrl+G")
        self.browse_action.setToolTip("Show the whole gallery in the window (Ctrl+G, Esc back)")
        self.browse_action.setStatusTip(self.browse_action.toolTip())
        self.browse_action.triggered.connect(lambda _checked=False: self.toggle_browser())
        self.view_menu.addAction(self.browse_action)
        self.view_menu.addSeparator()
        for dock in (
            self.prompt_dock,
            self.sampler_dock,
            self.img2img_dock,
            self.queue_dock,
            self.gallery_dock,
        ):
            self.view_menu.addAction(dock.toggleViewAction())

        # Window-wide shortcuts, so they work while typing in the prompt box.
        keypad_enter = QKeySequence(
            Qt.KeyboardModifier.ControlModifier
            | Qt.KeyboardModifier.KeypadModifier
            | Qt.Key.Key_Enter
        )
        for keys in (QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter"), keypad_enter):
            shortcut = QShortcut(keys, self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(self.generate)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WindowShortcut)
        escape.activated.connect(self._on_escape)

    def _connect_worker(self) -> None:
        w = self.worker
        w.engine_ready.connect(self._on_engine_ready)
        w.engine_failed.connect(self._on_engine_failed)
        w.job_started.connect(self._on_job_started)
        w.status_changed.connect(self._on_status)
        w.step_previewed.connect(self._on_step)
        w.images_generated.connect(self._on_images)
        w.job_finished.connect(self._on_job_finished)
        w.save_failed.connect(self._on_save_failed)
        w.job_failed.connect(self._on_job_failed)
        w.job_cancelled.connect(self._on_job_cancelled)
        w.warning_raised.connect(lambda _job, text: self.show_message(text, "warning"))

    def _connect_remote(self) -> None:
        r = self.remote
        r.job_started.connect(self._on_job_started)
        r.job_placed.connect(self._on_job_placed)
        r.status_changed.connect(self._on_status)
        r.step_previewed.connect(self._on_step)
        r.images_generated.connect(self._on_images)
        r.job_finished.connect(self._on_job_finished)
        r.save_failed.connect(self._on_save_failed)
        r.job_failed.connect(self._on_job_failed)
        r.job_cancelled.connect(self._on_job_cancelled)
        r.warning_raised.connect(lambda _job, text: self.show_message(text, "warning"))
        r.servers_changed.connect(self._show_backend_models)

    # -- settings --------------------------------------------------------------------------
    def _restore(self, settings: Settings) -> None:
        values = restored_values(settings)
        for panel in self.panels:
            panel.set_values(values)
        self._fresh_settings = "width" not in values
        self.refresh_models(select=str(values.get("model", "")))
        if settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(settings.window_geometry.encode("ascii")))
        else:
            self._default_geometry()
        if settings.window_state:
            state = QByteArray.fromBase64(settings.window_state.encode("ascii"))
            # A layout saved before LAYOUT_VERSION is restored as it was, then the gallery
            # strip gets its rows (the queue dock follows the queue from the first refresh).
            if not self.restoreState(state, LAYOUT_VERSION) and self.restoreState(state, 0):
                self._grow_strip_when_shown = True

    def _grow_gallery_strip(self) -> None:
        """Give a docked gallery strip its rows when an older layout left it lower (once
        the window is laid out, so its height is known)."""
        dock = self.gallery_dock
        area = self.dockWidgetArea(dock)
        bottom = (Qt.DockWidgetArea.BottomDockWidgetArea, Qt.DockWidgetArea.TopDockWidgetArea)
        if dock.isHidden() or dock.isFloating() or area not in bottom:
            return
        view = self.gallery_panel.view
        if view.viewport().height() < GALLERY_STRIP_ROWS * view.gridSize().height():
            self._fit_gallery_strip()

    def _default_geometry(self) -> None:
        """First start: 90 % of the screen (at most 1600×1000), centred."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            self.resize(QSize(1400, 880))
            return
        area = screen.availableGeometry()
        size = QSize(min(1600, int(area.width() * 0.9)), min(1000, int(area.height() * 0.9)))
        self.resize(size)
        self.move(area.center() - self.rect().center())

    def request_values(self) -> dict[str, Any]:
        """Every panel's settings by name."""
        values: dict[str, Any] = {}
        for panel in self.panels:
            values.update(panel.values())
        return values

    def build_request(self) -> GenerationRequest:
        """The request the panels describe; raises ``RequestError`` when a value is invalid."""
        return build_request(self.request_values())

    def apply_request(self, request: GenerationRequest, keep_seed: bool = True) -> None:
        """Fill the panels from a request (e.g. "Reuse" on a gallery image).

        The model is selected first, because a model of another family resets the size.
        A model that is not installed here leaves the picker alone and says so.
        """
        values = request.values()
        if not keep_seed:
            values["seed"] = -1
        # The window keeps LoRAs as tags in the prompt, where the user edits them.
        loras = values.pop("loras", ())
        if loras:
            tags = " ".join(lora.tag() for lora in loras)
            values["prompt"] = " ".join(p for p in (values.get("prompt", ""), tags) if p)
        model = values.pop("model", "")
        if model:
            listed = self._remote_models if self._uses_servers() else self.models
            match = match_model(listed, model)
            if match is not None:
                self.prompt_panel.set_models(listed, model_key(match))
            else:
                where = "on the servers" if self._uses_servers() else "installed here"
                self.show_message(
                    f"The model {Path(model).name} is not {where}; "
                    "the other settings were applied.",
                    "warning",
                )
        if not request.is_img2img:
            values.pop("init_image", None)
            values.pop("strength", None)
        elif request.init_image and not Path(request.init_image).is_file():
            values.pop("init_image", None)
        for panel in self.panels:
            panel.set_values(values)

    def set_init_image(self, path: str) -> bool:
        """Use ``path`` as the init image (switches to img2img) and show the panel."""
        self.img2img_dock.show()
        self.img2img_dock.raise_()
        return self.img2img_panel.set_image(path)

    def show_image(self, path: str, infotext: str = "") -> bool:
        """Show an image file on the canvas (e.g. opened from the gallery)."""
        reader = QImageReader(path)
        reader.setAutoTransform(True)
        image = reader.read()
        if image.isNull():
            self.show_message(f"{Path(path).name} could not be read: {reader.errorString()}.")
            return False
        self.canvas.set_image(image)
        self.canvas.setToolTip(infotext or Path(path).name)
        self.statusBar().showMessage(Path(path).name, 5000)
        return True

    # -- upscaling gallery images ----------------------------------------------------------
    def ask_upscale(self, path: str) -> UpscaleDialog | None:
        """Ask how to upscale the image at ``path`` (non-modal; the answer queues it)."""
        from PIL import Image

        from desktop.engine.upscalers import list_upscalers

        source = Path(path)
        try:
            with Image.open(source) as image:  # reads the header only
                size = image.size
        except FileNotFoundError:
            self.show_message(f"{source.name} is gone (deleted or moved); nothing to upscale.")
            return None
        except OSError as exc:
            self.show_message(f"{source.name} cannot be read as an image: {exc}")
            return None
        names = [u.name for u in list_upscalers(self.settings.extra_model_folders)]
        upscaler, scale = self._upscale_choice
        dialog = UpscaleDialog(source.name, size, names, upscaler, scale, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.upscale_image(path, dialog.upscaler(), dialog.scale()))
        dialog.finished.connect(lambda _result: setattr(self, "upscale_dialog", None))
        self.upscale_dialog = dialog
        dialog.open()
        return dialog

    def upscale_image(self, path: str, upscaler: str, scale: float) -> None:
        """Queue an upscale of ``path``; the copy is saved beside it when it is in the gallery
        shown now, else into that gallery's folder."""
        self._upscale_choice = (upscaler, scale)
        root = self.gallery_panel.gallery.root
        folder = Path(path).parent
        if not folder.resolve().is_relative_to(root):
            folder = root
        self.image_upscaler.upscale(path, upscaler, scale, folder)

    def _on_upscale_started(self, source: str) -> None:
        self._upscale_text = f"Upscaling {Path(source).name}…"
        self.show_message(self._upscale_text, "info", action=("Cancel", self._cancel_upscale))

    def _dismiss_upscale_message(self) -> None:
        # Only the upscale's own message: another one (an error) stays.
        if self.message_bar.isVisible() and self.message_bar.label.text() == self._upscale_text:
            self.message_bar.dismiss()

    def _cancel_upscale(self) -> None:
        self.image_upscaler.cancel()
        self._dismiss_upscale_message()

    def _on_upscale_cancelled(self, source: str) -> None:
        self._dismiss_upscale_message()
        self.statusBar().showMessage(f"Upscaling {Path(source).name} was cancelled.", 5000)

    def _on_upscale_progress(self, source: str, done: int, total: int) -> None:
        self.statusBar().showMessage(f"Upscaling {Path(source).name}: tile {done} of {total}")

    def _on_upscaled(self, source: str, saved: str) -> None:
        self._dismiss_upscale_message()
        try:
            items = self.gallery_panel.gallery.index_files([saved])
        except SandstormError:  # the gallery shown changed meanwhile; its sync finds it
            items = []
        self.statusBar().showMessage(
            f"Saved {Path(saved).name}, upscaled from {Path(source).name}.", 8000
        )
        if items:
            self.results_saved.emit(items)

    def store_settings(self) -> Settings:
        """Write the panels, layout and geometry to the settings file; returns them."""
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64().data()).decode()
        # While the full-window gallery shows, the docks are hidden: save them as they were.
        state = self._layout_before_browse or self.saveState(LAYOUT_VERSION)
        self.settings.window_state = bytes(state.toBase64().data()).decode()
        self._save_settings_file()
        return self.settings

    def _save_settings_file(self) -> None:
        remember_values(self.request_values(), self.settings)
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.statusBar().showMessage(f"Settings could not be saved: {exc.strerror}.")

    def open_settings(self) -> SettingsDialog:
        """Open the settings dialog (window-modal, non-blocking); returns it."""
        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_settings()))
        dialog.open()
        return dialog

    def open_downloads(self, **options: Any) -> DownloadDialog:
        """Open the optional starter-model downloads (``options`` go to the dialog)."""
        dialog = open_download_dialog(self, **options)
        dialog.download_finished.connect(self._on_model_downloaded)
        return dialog

    def _on_model_downloaded(self, path: str) -> None:
        self.refresh_models()
        self.show_message(f"{Path(path).name} was downloaded to {Path(path).parent}.", "info")

    def apply_settings(self, new: Settings) -> None:
        """Adopt edited settings: output folder, model folders, device, performance and the
        ComfyUI servers."""
        old = self.settings
        self.settings = new
        self.worker.set_output_dir(new.output_path)
        self.remote.set_output_dir(new.output_path)
        if new.output_path != old.output_path:
            self.output_dir_changed.emit(str(new.output_path))
        compute = (new.device, new.compute_options())
        if compute != (old.device, old.compute_options()):
            self.worker.set_compute(*compute)
        if new.extra_model_folders != old.extra_model_folders:
            self.refresh_models()
            self.lora_panel.set_extra_sources(new.extra_model_folders)
            self.control_panel.set_extra_sources(new.extra_model_folders)
            self.reference_panel.set_extra_sources(new.extra_model_folders)
        if new.servers != old.servers:
            self._servers_edited()
        self.store_settings()

    # -- models ----------------------------------------------------------------------------
    def refresh_models(self, select: str = "") -> None:
        """Rescan the model folders (cheap: headers only) and refill the picker; with a
        server backend, ask the servers again too (the picker follows their answer)."""
        self._token_counters.clear()  # embeddings may have come or gone
        self.models = scan(checkpoint_search_folders(self.settings.extra_model_folders))
        from desktop.engine.upscalers import list_upscalers

        self.sampler_panel.set_upscalers(
            [u.name for u in list_upscalers(self.settings.extra_model_folders) if u.path]
        )
        self.control_panel.refresh_models()
        self.reference_panel.refresh_models()
        if self._uses_servers():
            pool = self.remote.pool()
            if pool is not None:
                pool.refresh()
            self.statusBar().showMessage("Asking the servers for their models…", 4000)
            return
        self.prompt_panel.set_models(self.models, select)
        current = self.prompt_panel.current_model()
        if current is not None and current.usable:
            self._load_token_counter(current)
        usable = sum(m.usable for m in self.models)
        if not usable and not is_server_backend(self.settings.backend):
            self.show_message(
                "No usable model was found. Add a model folder in File ▸ Settings, "
                "or put a .safetensors checkpoint in models/checkpoints.",
                "warning",
            )
        self.statusBar().showMessage(f"{usable} model{'s' if usable != 1 else ''} found.", 4000)

    def _on_model_changed(self, info: ModelInfo | None) -> None:
        """Offer the family's sizes. On a first start the model's defaults fill the panels;
        restored settings are kept; switching to another family takes its native size."""
        if info is None:
            self.prompt_panel.set_token_counter(None)
            return
        self._last_model[bool(info.extras.get("server"))] = model_key(info)
        self._load_token_counter(info)
        self.sampler_panel.set_family(info.family, info.native_size)
        self.control_panel.set_family(info.family)
        self.reference_panel.set_family(info.family)
        defaults = defaults_for(info)
        if self._restoring and not self._fresh_settings:
            self._family = info.family
            return
        changes: dict[str, Any] = {}
        if self._restoring or info.family != self._family:
            changes.update(width=defaults.width, height=defaults.height)
        if self._restoring:
            changes.update(
                sampler=defaults.sampler, steps=defaults.steps, cfg_scale=defaults.cfg_scale
            )
        self.sampler_panel.set_values(changes)
        self._family = info.family

    def _load_token_counter(self, info: ModelInfo) -> None:
        """Give the prompt boxes the model's tokenizer and the installed embeddings' vector
        counts, read off the GUI thread once (again after Refresh)."""
        from desktop.engine.prompt_tokens import count_prompt, counting_tokenizer

        folder = info.path if info.path.is_dir() else None
        if folder in self._token_counters:
            self.prompt_panel.set_token_counter(self._token_counters[folder])
            return
        sources = list(self.settings.extra_model_folders)

        def read() -> tuple[Any, dict[str, int]]:
            from desktop.engine.embeddings import installed_triggers

            return counting_tokenizer(folder), installed_triggers(sources)

        def ready(loaded: tuple[Any, dict[str, int]]) -> None:
            tokenizer, triggers = loaded
            counter = functools.partial(count_prompt, tokenizer, triggers=triggers)
            self._token_counters[folder] = counter
            current = self.prompt_panel.current_model()
            if current is not None and (current.path if current.path.is_dir() else None) == folder:
                self.prompt_panel.set_token_counter(counter)

        self.tasks.submit(
            read,
            on_result=ready,
            on_error=lambda exc: self.prompt_panel.set_token_counter(None),
            name="tokenizer",
        )

    # -- backends --------------------------------------------------------------------------
    def _uses_servers(self) -> bool:
        """True while jobs go to ComfyUI servers rather than the local engine."""
        return is_server_backend(self._backend)

    def _init_backend(self, model: str) -> None:
        """Offer the servers in the picker and take the saved backend (local when its server
        is no longer in the list). ``model`` is the restored model."""
        if is_server_backend(self.settings.backend) and not self.settings.backend_servers():
            self.settings.backend = LOCAL_BACKEND
        self._last_model[False] = self.prompt_panel.current_key()
        self.prompt_panel.set_backends(
            backend_choices(self.settings.server_configs()), self.settings.backend
        )
        if is_server_backend(self.settings.backend):
            self._last_model[True] = model
            # The restored panels stay as they were when the servers' list arrives.
            self._restore_remote_model = True
            # The pool starts with start_engine, once the window is on screen: its module
            # brings torch along, which must not delay the first paint.
            self._backend = self.settings.backend
            self._show_backend_models()

    def choose_backend(self, backend: str) -> None:
        """Run the next jobs on ``backend`` ("local", "all" or a server URL), as the picker
        does: the model picker then lists that backend's models."""
        if backend == self._backend:
            return
        configs = self.settings.server_configs()
        if (
            is_server_backend(backend)
            and not replace(self.settings, backend=backend).backend_servers()
        ):
            self.show_message(f"{backend} is not among the servers set up in File ▸ Settings.")
            self.prompt_panel.set_backends(backend_choices(configs), self._backend)
            return
        self.prompt_panel.set_backends(backend_choices(configs), backend)
        if is_server_backend(backend) and not self.settings.seen_server_seed_note:
            self.settings.seen_server_seed_note = True
            self.show_message(describe_seed_difference(), "info")
        self.settings.backend = backend
        self._switch_to(backend)
        if not self._uses_servers():
            self.prompt_panel.set_models(self.models, self._last_model[False])
            if self.isVisible():
                self.start_engine()
        self._save_settings_file()

    def _switch_to(self, backend: str) -> None:
        """Point the remote worker at ``backend``'s servers (none for the local engine)."""
        self._backend = backend
        self._connect_servers()

    def _connect_servers(self) -> None:
        """Start (or stop) the pool for the current backend's servers, if not done yet."""
        configs = self.settings.backend_servers() if self._uses_servers() else []
        if configs != self.remote.configs():
            self._remote_models = []
            self._servers_state = ""
            cancelled = [
                j
                for j in [*self.jobs.running_jobs, *self.jobs.pending]
                if j.remote and j.submitted and not j.cancelled
            ]
            self.remote.set_servers(configs)
            if cancelled:
                n = len(cancelled)
                self.show_message(
                    f"{n} job{'s' if n != 1 else ''} on the servers "
                    f"{'were' if n != 1 else 'was'} cancelled: the servers changed.",
                    "warning",
                )
        self._show_backend_models()

    def _servers_edited(self) -> None:
        """The server list changed in the settings: update the picker and the pool."""
        if is_server_backend(self.settings.backend) and not self.settings.backend_servers():
            self.settings.backend = LOCAL_BACKEND
            self.show_message(
                "The server jobs ran on is no longer set up: they run on this computer now.",
                "info",
            )
        self.prompt_panel.set_backends(
            backend_choices(self.settings.server_configs()), self.settings.backend
        )
        was_servers = self._uses_servers()
        self._switch_to(self.settings.backend)
        if was_servers and not self._uses_servers():
            self.prompt_panel.set_models(self.models, self._last_model[False])

    def _show_backend_models(self) -> None:
        """List the servers' checkpoints in the model picker ("Connecting…" until one
        answers; the last list stays while they are away, so jobs can still queue)."""
        if not self._uses_servers():
            return
        pool = self.remote.pool()
        models = pool.models() if pool is not None else None
        statuses = self.remote.servers()
        if models is not None:
            self._remote_models = checkpoint_infos(models)
        if models is None and not self._remote_models:
            if pool is None:  # not started yet (see _init_backend)
                labels = ", ".join(c.label for c in self.settings.backend_servers())
                reason = f"Connecting to {labels}…"
            else:
                reason = connecting_reason(statuses)
            self.prompt_panel.show_model_placeholder("Connecting…", reason)
            self._show_servers_state(reason)
            return
        if not self._remote_models:
            text = "No checkpoints on the server"
            why = "The servers list no checkpoint: put one in ComfyUI's models/checkpoints."
            self.prompt_panel.show_model_placeholder(text, why)
            self._show_servers_state(why)
            return
        if self._remote_models != self.prompt_panel.listed_models():
            restoring, self._restoring = self._restoring, self._restore_remote_model
            try:
                self.prompt_panel.set_models(self._remote_models, self._last_model[True])
            finally:
                self._restoring, self._restore_remote_model = restoring, False
        self._show_servers_state(servers_summary(statuses))

    def _show_servers_state(self, text: str) -> None:
        """Say how the servers are doing (in the state label while no job runs), when that
        changed: their job counts change all the time, and must not hide a job's news."""
        if text and text != self._servers_state:
            self.statusBar().showMessage(text, 8000)
            if self.jobs.running is None:
                self._set_state(text)
        self._servers_state = text

    # -- img2img ---------------------------------------------------------------------------
    def _on_init_image(self, path: str | None) -> None:
        mode = "image-to-image" if path else "text-to-image"
        self._update_generate_label()
        self.statusBar().showMessage(f"Switched to {mode}.", 3000)
        if path:
            # Like PNG info / recall elsewhere: an image that carries generation settings
            # offers them (non-blocking); the drop itself already set it up for img2img.
            self.offer_stored_parameters(path)

    def _update_generate_label(self) -> None:
        """The Generate button names the kind of job: img2img, inpaint, outpaint."""
        panel = self.img2img_panel
        if panel.init_image() is None:
            self.generate_button.setText("Generate")
        elif panel.expand_spec() is not None:
            self.generate_button.setText("Generate (outpaint)")
        elif panel.has_mask():
            self.generate_button.setText("Generate (inpaint)")
        else:
            self.generate_button.setText("Generate (img2img)")

    def offer_stored_parameters(self, path: str) -> bool:
        """If the image at ``path`` carries generation settings, offer "Use its parameters"
        in the message bar (non-blocking). False when it carries none."""
        meta = read_metadata(path)
        if meta.request is None:
            return False
        request = meta.request
        self.show_message(
            f"{Path(path).name} carries {describe_source(meta)} generation settings.",
            "info",
            action=("Use its parameters", lambda: self.apply_request(request, keep_seed=True)),
        )
        return True

    # Dropping an image anywhere on the window works like dropping it on the img2img zone.
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime is not None and (mime.hasUrls() or mime.hasImage()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        if self.img2img_panel.accept_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def _use_image_size(self, width: int, height: int) -> None:
        self.sampler_panel.set_values({"width": snap_size(width), "height": snap_size(height)})

    # -- engine ----------------------------------------------------------------------------
    def start_engine(self) -> None:
        """Start the worker thread (it imports and creates the engine). Not while jobs go
        to ComfyUI servers: then the servers are asked for their models, and the engine
        starts with the first local job."""
        if self._uses_servers():
            if not self._shut_down:
                self._connect_servers()
            return
        self._start_worker()

    def _start_worker(self) -> None:
        if self._shut_down or self.worker.isRunning():
            return
        self._set_state("Starting engine…")
        self.worker.start()

    def _on_engine_ready(self) -> None:
        self._set_state("Engine ready")
        model = self.prompt_panel.current_key()
        if model and not self._uses_servers() and not self.jobs.running and not self.jobs.pending:
            self._set_state("Loading model…")
            self.worker.preload(model)

    def _on_engine_failed(self, message: str) -> None:
        self._set_state("Engine failed")
        self.show_message(message)

    def _set_state(self, text: str) -> None:
        """The engine/job state, shown permanently at the right of the status bar."""
        self.state_label.setText(text)

    # -- jobs ------------------------------------------------------------------------------
    def generate(self) -> Job | None:
        """Queue a job from the panels; an invalid value shows a message instead."""
        try:
            request = self.build_request()
        except RequestError as exc:
            self.show_message(str(exc))
            return None
        if not request.model:
            if self._uses_servers():
                why = connecting_reason(self.remote.servers())
                self.show_message(f"No server has listed its models yet. {why}")
            else:
                self.show_message("Choose a model first (none is usable; see File ▸ Settings).")
            return None
        # A new attempt: the last problem's message has served its purpose.
        self.message_bar.dismiss()
        job = self.jobs.add(request)
        self._submit_waiting()
        # The panels as they were for this job survive a crash too, not only a clean close.
        self._save_settings_file()
        self.statusBar().showMessage(f"Queued {job.job_id}.", 2000)
        return job

    def _submit_waiting(self) -> None:
        """Hand every waiting job not handed out yet (none while paused) to the backend
        chosen now: the servers, or the local worker (started for it if need be)."""
        jobs = self.jobs.take_submittable()
        remote = self._uses_servers()
        if jobs and remote and not self._shut_down:
            self._connect_servers()
        for job in jobs:
            if remote:
                job.remote = True
                self.remote.submit(job)
            else:
                self.worker.submit(job)
        if jobs and not remote and not self.worker.isRunning() and not self._shut_down:
            self._start_worker()
        self._refresh_queue()

    def _restore_queue(self) -> None:
        """Bring back the jobs that were waiting when the app last closed or crashed.

        A job that was running then is listed as interrupted and never rerun by itself:
        if it crashed the app, it must not crash it again on every start.
        """
        store = self.jobs.store
        if store is None:
            return
        restored = store.load()
        if restored.problem:
            self.show_message(restored.problem, "warning")
        paused = self.settings.queue_on_start == "paused"
        jobs = self.jobs.restore(restored, paused=paused)
        if jobs or restored.interrupted:
            waiting = f"{len(jobs)} waiting job{'s' if len(jobs) != 1 else ''} restored"
            if paused and jobs:
                waiting += " (paused: press Resume in the queue)"
            interrupted = len(restored.interrupted)
            if interrupted:
                waiting += (
                    f"; {interrupted} job{'s' if interrupted != 1 else ''} interrupted by the "
                    "last shutdown, not rerun"
                )
            self.show_message(waiting + ".", "info")
        self._submit_waiting()

    def resume_queue(self) -> None:
        self.jobs.resume()
        self._submit_waiting()

    def requeue_interrupted(self, job_id: str) -> None:
        try:
            self.jobs.requeue_interrupted(job_id)
        except KeyError:
            return
        self._submit_waiting()

    def dismiss_interrupted(self, job_id: str) -> None:
        self.jobs.dismiss_interrupted(job_id)
        self._refresh_queue()

    def cancel_current(self) -> None:
        """Stop the job the canvas shows (the most recently started one)."""
        job = self.jobs.cancel_current()
        if job is not None:
            self._set_state("Cancelling…")
            self._refresh_queue()

    def cancel_job(self, job_id: str) -> None:
        """Stop one job (running or waiting); the others go on."""
        job = self.jobs.cancel(job_id)
        if job is not None:
            self._set_state(f"Cancelling {job_id}…")
        self._refresh_queue()

    def cancel_all(self) -> None:
        if self.jobs.cancel_all():
            self._set_state("Cancelling all jobs…")
        self._refresh_queue()

    def remove_job(self, job_id: str) -> None:
        self.jobs.remove(job_id)
        self._refresh_queue()

    def _refresh_queue(self) -> None:
        self.queue_view.refresh(self.jobs)
        error = self.jobs.save_error
        if error and error != self._queue_error:
            self.show_message(error, "warning")
        self._queue_error = error
        running = self.jobs.running is not None
        self.cancel_button.setEnabled(running)
        pending = len(self.jobs.pending)
        self.queue_dock.setWindowTitle(f"Queue ({pending} waiting)" if pending else "Queue")
        self._update_queue_dock()

    def _on_job_started(self, job_id: str) -> None:
        job = self.jobs.mark_started(job_id)
        if job is None:
            return
        job.started_at = time.perf_counter()
        job.step, job.first_step_elapsed = 0, None
        self._show_progress(job)
        self._set_state(f"Running {job_id}")
        self._refresh_queue()

    def _show_progress(self, job: Job) -> None:
        """Point the progress bar at ``job`` (the one the canvas follows)."""
        total = job.request.denoising_steps
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(job.step, max(total, 1)))
        self.progress.setFormat(f"Step {job.step}/{total}")

    def _on_job_placed(self, job_id: str, label: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.where = label
        if label and self.jobs.is_current(job_id):
            self._set_state(f"Running {job_id} on {label}")
        self._refresh_queue()

    def _on_status(self, job_id: str, text: str) -> None:
        job = self.jobs.get(job_id) if job_id else None
        if job is not None and job.status != text:
            job.status = text
            if job.remote:  # the queue says why a job waits for a server
                self._refresh_queue()
        waiting = self.jobs.pending
        # While nothing runs, the first waiting job's state is the news (a server is down…).
        news = self.jobs.running is None and bool(waiting) and waiting[0] is job
        if job_id and not self.jobs.is_current(job_id) and not news:
            return
        self._set_state(text)

    def _on_step(self, job_id: str, step: int, total: int, elapsed: float, image: QImage) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.step = step
        if job is None or job is not self.jobs.running or job.cancelled:
            self.dropped_previews += 1
            if job is not None:
                job.dropped_previews += 1
            return
        if job.first_step_elapsed is None:
            job.first_step_elapsed = elapsed
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(step)
        span = elapsed - job.first_step_elapsed
        rate = (step - 1) / span if step > 1 and span > 0 else (step / elapsed if elapsed else 0.0)
        self.progress.setFormat(f"Step {step}/{total} · {elapsed:.1f} s · {rate:.2f} it/s")
        if not image.isNull():
            size = QSize(job.request.width, job.request.height)
            self.canvas.set_image(image, size, preview=True)
            self.preview_shown.emit(job_id, step)

    def _on_images(self, job_id: str, images: JobImages) -> None:
        self.last_images = images
        job = self.jobs.get(job_id)
        # A job that finished while a later one runs goes to the gallery, not the canvas.
        if images.qimages and (job is None or job is self.jobs.running):
            self.canvas.set_image(images.qimages[0])
        self.sampler_panel.remember_seed(images.request.seed)

    def _finish(self, job_id: str) -> tuple[Job | None, bool, bool]:
        """Forget ``job_id``. Returns it, whether the progress bar followed it, and whether
        the bar may now say how it ended: no other job runs (when one does and the bar
        followed this job, the bar moves on to that one)."""
        current = self.jobs.running
        job = self.jobs.mark_done(job_id)
        followed = job is not None and job is current
        following = self.jobs.running
        if followed and following is not None:
            self._show_progress(following)
            where = f" on {following.where}" if following.where else ""
            self._set_state(f"Running {following.job_id}{where}")
        return job, followed, following is None

    def _on_job_finished(self, job_id: str, saved: list) -> None:
        job, _followed, free = self._finish(job_id)
        where = f" on {job.where}" if job is not None and job.where else ""
        if free:
            took = time.perf_counter() - job.started_at if job is not None else 0.0
            self.progress.setFormat(f"Done · {took:.1f} s")
            self.progress.setValue(self.progress.maximum())
            self._set_state(f"Finished {job_id}{where}")
        if saved:
            self.statusBar().showMessage(
                f"Saved {job_id}{where} to {self.settings.output_path}", 8000
            )
        self._refresh_queue()
        if saved:
            self.results_saved.emit(saved)

    def _on_save_failed(self, job_id: str, message: str) -> None:
        self.show_message(
            f"{message} The images are kept here; use “Save as…” to put them elsewhere.",
            "error",
            action=("Save as…", self.save_last_images_as),
        )

    def _on_job_failed(self, job_id: str, message: str) -> None:
        _job, _followed, free = self._finish(job_id)
        if free:
            self.progress.setFormat("Failed")
            self._set_state(f"{job_id} failed")
        self.show_message(message)
        self._refresh_queue()

    def _on_job_cancelled(self, job_id: str) -> None:
        _job, followed, free = self._finish(job_id)
        if followed and free:
            self.progress.setFormat("Cancelled")
            self._set_state(f"Cancelled {job_id}")
        self._refresh_queue()

    # -- saving ----------------------------------------------------------------------------
    def save_last_images_as(self, folder: str | None = None) -> Task | None:
        """Save the last job's images into ``folder`` (asks for one when None).

        Saving (which hashes the model for the metadata) runs off the GUI thread; the
        result arrives as ``results_saved``, a failure as a message. Returns the task.
        """
        if self.last_images is None:
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the images in…")
            if not folder:
                return None
        images = self.last_images
        self.statusBar().showMessage(f"Saving {len(images.images)} image(s) to {folder}…")

        def saved(items: list[Any]) -> None:
            self.message_bar.dismiss()
            self.statusBar().showMessage(f"Saved {len(items)} image(s) to {folder}.", 5000)
            self.results_saved.emit(items)

        def failed(exc: BaseException) -> None:
            text = str(exc) if isinstance(exc, SandstormError) else f"Saving failed: {exc}"
            self.show_message(text, action=("Save as…", self.save_last_images_as))

        return self.tasks.submit(
            save_results,
            images.images,
            images.model,
            Path(folder),
            on_result=saved,
            on_error=failed,
            name="save as",
        )

    def save_canvas_as(self) -> None:
        if not self.canvas.has_image():
            self.statusBar().showMessage("There is no image to save yet.", 3000)
            return
        name, _ = QFileDialog.getSaveFileName(self, "Save image as", "", "PNG image (*.png)")
        if name and not self.canvas.image().save(name, "PNG"):
            self.show_message(f"Could not write {name}.")

    # -- messages --------------------------------------------------------------------------
    def show_message(self, text: str, level: str = "error", action: Any = None) -> None:
        """Show a non-blocking message above the canvas and in the status bar."""
        self.message_bar.show_message(text, level, action)
        self.statusBar().showMessage(text, 8000)

    # -- shutdown --------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel everything and stop the worker; safe to call more than once."""
        if self._shut_down:
            return not self.worker.isRunning()
        self._shut_down = True
        # Keeps the waiting jobs (and the running one) on disk for the next launch.
        self.jobs.shutdown()
        stopped = self.worker.stop(timeout_ms)
        stopped = self.remote.stop(timeout_ms) and stopped
        stopped = self.tasks.shutdown(timeout_ms) and stopped
        stopped = self.image_upscaler.shutdown(timeout_ms) and stopped
        stopped = self.control_panel.shutdown(timeout_ms) and stopped
        stopped = self.gallery_browser.shutdown(timeout_ms) and stopped
        return self.gallery_panel.shutdown(timeout_ms) and stopped

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._shut_down:
            self.store_settings()
        self.shutdown()
        event.accept()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            # A person who launches the app and types is typing a prompt.
            self._shown_once = True
            if self._grow_strip_when_shown:
                QTimer.singleShot(0, self, self._grow_gallery_strip)
            # Ask for keyboard focus too: without a window manager (or when the launcher kept
            # it) the window is not active, and window shortcuts such as Ctrl+Enter need it.
            self.activateWindow()
            self.prompt_panel.focus_prompt()
