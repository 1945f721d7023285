"""Start the desktop window: ``run_gui(argv) -> exit code``.

Start-up contract: the window is on screen before any model code runs. torch, diffusers
and transformers are imported by the worker thread, which starts after the window is
shown. ``SANDSTORM_EXIT_AFTER_PAINT=1`` prints one line at the first paint and quits (the
start-up test and benchmark use it); ``SANDSTORM_SCREENSHOT=<file>`` saves a grab of the
window once it has settled and quits (the Xvfb test uses it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtCore import QObject
    from PySide6.QtWidgets import QApplication

    from desktop.ui.main_window import MainWindow

_IMPORTED_AT = time.time()
HEAVY_MODULES = ("torch", "diffusers", "transformers")


def qt_defaults() -> None:
    """Environment Qt reads when the application starts; call before ``QApplication``.

    ``QT_NO_GUI_THREADPOOL``: Qt's raster painter splits large smooth scalings and fills
    over a pool of threads and waits for them on the GUI thread. Those threads compete for
    the cores with the thumbnail decoders and with generation, which keep every core busy,
    so the GUI thread sat waiting: 39–130 ms paints while a gallery search result came in
    (``bench.gallery_ui_bench`` on two cores). Painted on the GUI thread alone the same
    frame costs half (2.5 vs 5.0 ms for 24 smooth-scaled thumbnails, idle machine).
    A value the user set is kept.
    """
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


def process_age() -> float:
    """Seconds since this process started (from /proc on Linux, else since this import)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat; the split dropped pid and comm
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - _IMPORTED_AT


def run_gui(argv: list[str]) -> int:
    """Create the application, show the window, then start the engine; returns the exit code."""
    # Before torch loads (in the worker): sleeping OpenMP workers, offline Hub libraries.
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    qt_defaults()
    from PySide6.QtCore import QEvent, QObject, Qt, QTimer
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from desktop.engine import paths
    from desktop.ui.collector import IdleCollector
    from desktop.ui.main_window import MainWindow
    from desktop.ui.theme import apply_theme

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("Sandstorm")
    app.setOrganizationName("Sandstorm")
    # Matches the installed sandstorm.desktop, so Wayland docks show the right icon.
    app.setDesktopFileName("sandstorm")
    for name in ("sandstorm.svg", "sandstorm.png"):
        icon_path = paths.RESOURCES / "icons" / name
        if icon_path.is_file():
            app.setWindowIcon(QIcon(str(icon_path)))
            break

    instance = _single_instance(argv)
    if instance is False:
        return 0
    apply_theme(app)
    window = MainWindow()
    if instance is not None:
        instance.activation_requested.connect(lambda args: _activate(window, args))
    _open_argument_images(window, argv)

    exit_after_paint = os.environ.get("SANDSTORM_EXIT_AFTER_PAINT") == "1"
    screenshot = os.environ.get("SANDSTORM_SCREENSHOT", "")

    class FirstPaint(QObject):
        """Reports the first paint of any part of the window (once)."""

        done = False

        def eventFilter(self, obj: QObject, event: QEvent) -> bool:
            if (
                not self.done
                and event.type() == QEvent.Type.Paint
                and hasattr(obj, "window")
                and obj.window() is window
            ):
                self.done = True
                loaded = [m for m in HEAVY_MODULES if m in sys.modules]
                print(
                    f"SANDSTORM_FIRST_PAINT modules={','.join(loaded)} seconds={process_age():.3f}",
                    flush=True,
                )
                QTimer.singleShot(0, app.quit)
            return False

    watcher = FirstPaint()
    if exit_after_paint:
        app.installEventFilter(watcher)
    window.show()
    if exit_after_paint:
        code = app.exec()
        app.removeEventFilter(watcher)
        window.shutdown()
        return code

    # Quitting by other routes than the close button (session end, Ctrl+Q) still saves the
    # layout and stops the worker: close() runs the same path as the close button.
    app.aboutToQuit.connect(window.close)
    # Garbage collection from the event loop, never in the middle of a scroll.
    collector = IdleCollector(parent=app)
    app.aboutToQuit.connect(collector.stop)
    QTimer.singleShot(500, collector.start)  # after the first paint
    QTimer.singleShot(0, window.start_engine)
    if screenshot:
        _schedule_screenshot(window, Path(screenshot), app)
    return app.exec()


def _single_instance(argv: list[str]) -> QObject | bool | None:
    """The single-instance guard: None when unavailable, False when another window took over.

    A second launch forwards its arguments to the running window and exits; when that window
    does not answer (hung or gone), this launch carries on as a normal window.
    """
    from desktop.ui.single_instance import SingleInstance

    try:
        instance = SingleInstance()
        if not instance.try_become_primary() and instance.notify_primary(list(argv)):
            return False
    except Exception:  # the guard is a convenience; never let it stop the window opening
        return None
    return instance


def _activate(window: MainWindow, args: list) -> None:
    """Another launch asked for the window: bring it forward and open its image, if any."""
    from desktop.ui.single_instance import raise_window

    raise_window(window)
    _open_argument_images(window, [str(a) for a in args])


def _open_argument_images(window: MainWindow, argv: list[str]) -> None:
    """An image path on the command line (e.g. "Open with Sandstorm") becomes the init image."""
    for arg in argv:
        path = Path(arg)
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp") and path.is_file():
            window.set_init_image(str(path))
            break


def _schedule_screenshot(window: MainWindow, target: Path, app: QApplication) -> None:
    """Screenshot hook for the Xvfb test: grab the settled window, announce it, quit.

    With ``SANDSTORM_SCREENSHOT_GENERATE=1`` one job runs first, so the canvas shows an
    image. ``SANDSTORM_SCREENSHOT_HOLD`` keeps the window up that many seconds after the
    announcement, for an outside tool (``import -window root``) to capture the screen.
    """
    from PySide6.QtCore import QTimer

    hold_ms = int(float(os.environ.get("SANDSTORM_SCREENSHOT_HOLD", "0")) * 1000)

    def grab() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(target), "PNG")
        print(f"SANDSTORM_SCREENSHOT {target}", flush=True)
        QTimer.singleShot(hold_ms, app.quit)

    if os.environ.get("SANDSTORM_SCREENSHOT_GENERATE") == "1":
        window.worker.job_finished.connect(lambda *_: QTimer.singleShot(500, grab))
        window.worker.job_failed.connect(lambda *_: QTimer.singleShot(500, grab))
        window.worker.engine_ready.connect(window.generate)
    else:
        QTimer.singleShot(2000, grab)
