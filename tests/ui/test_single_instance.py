"""A second launch forwards its arguments to the first instance instead of opening a window."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PySide6.QtWidgets import QWidget

from desktop.ui.single_instance import SingleInstance, raise_window, server_name

REPO = Path(__file__).resolve().parents[2]

SECOND_LAUNCH = """
import sys
from PySide6.QtCore import QCoreApplication
from desktop.ui.single_instance import SingleInstance
app = QCoreApplication([])
instance = SingleInstance(sys.argv[1])
if instance.try_become_primary():
    print("primary")
    sys.exit(3)
print("forwarded" if instance.notify_primary(sys.argv[2:]) else "no answer")
"""


@pytest.fixture
def unique_name() -> str:
    # Tests run in parallel sessions on one machine: never share a socket name.
    return f"sandstorm-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def primary(qapp, unique_name: str):
    instance = SingleInstance(unique_name)
    assert instance.try_become_primary()
    yield instance
    instance.close()


def test_server_name_is_per_user_and_data_folder(monkeypatch, tmp_path: Path):
    first = server_name()
    assert first.startswith("sandstorm-") and len(first) < 40  # Unix socket paths are short
    monkeypatch.setenv("SANDSTORM_HOME", str(tmp_path / "other"))
    assert server_name() != first


def test_second_process_forwards_its_arguments(qtbot, primary: SingleInstance, unique_name):
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    child = subprocess.Popen(
        [sys.executable, "-c", SECOND_LAUNCH, unique_name, "--open", "a b.png"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with qtbot.waitSignal(primary.activation_requested, timeout=30_000) as signal:
            pass
        # The child exits only after the primary's answer, which the event loop delivers.
        qtbot.waitUntil(lambda: child.poll() is not None, timeout=30_000)
    finally:
        if child.poll() is None:
            child.kill()
        out, err = child.communicate()
    assert signal.args == [["--open", "a b.png"]]
    assert child.returncode == 0, err
    assert out.strip() == "forwarded"


def test_second_instance_in_process_is_not_primary(qapp, primary: SingleInstance, unique_name):
    other = SingleInstance(unique_name)
    assert not other.try_become_primary()
    assert not other.is_primary
    assert primary.is_primary


def test_stale_socket_from_a_crash_is_replaced(qapp, unique_name: str):
    first = SingleInstance(unique_name)
    assert first.try_become_primary()
    socket_path = first._server.fullServerName()
    first.close()
    if sys.platform == "win32":
        pytest.skip("named pipes leave nothing behind on a crash")
    Path(socket_path).write_bytes(b"")  # what a killed process leaves at the name
    second = SingleInstance(unique_name)
    try:
        assert second.try_become_primary()
    finally:
        second.close()


def test_notify_without_primary_returns_false(qapp, unique_name: str):
    assert not SingleInstance(unique_name).notify_primary(["x"], timeout_ms=200)


def test_garbage_message_is_ignored(qtbot, primary: SingleInstance, unique_name: str):
    from PySide6.QtNetwork import QLocalSocket

    socket = QLocalSocket()
    socket.connectToServer(unique_name)
    assert socket.waitForConnected(2000)
    with qtbot.assertNotEmitted(primary.activation_requested, wait=200):
        socket.write(b"not json\n")
        socket.flush()
    qtbot.waitUntil(lambda: socket.state() == QLocalSocket.LocalSocketState.UnconnectedState)


@pytest.mark.qt_log_ignore("does not support raise")  # the offscreen platform has no stacking
def test_raise_window_restores_a_minimised_window(qtbot):
    window = QWidget()
    qtbot.addWidget(window)
    window.showMinimized()
    raise_window(window)
    assert window.isVisible()
    assert not window.isMinimized()
