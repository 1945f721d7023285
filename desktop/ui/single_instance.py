"""One Sandstorm window per user: a second launch brings the running one to the front.

The first instance listens on a local socket (a Unix socket, or a named pipe on Windows)
named after the user and the data folder, so two users on one computer, or a portable copy
with its own ``SANDSTORM_HOME``, never see each other. A second instance connects, sends its
command-line arguments as one JSON line, waits for the first to answer ``ok`` and exits.

Usage in the start-up code::

    instance = SingleInstance()
    if not instance.try_become_primary():
        if instance.notify_primary(argv):
            return 0
        # No answer: the other process hangs or is gone; carry on as a normal window.
    instance.activation_requested.connect(lambda args: raise_window(window))
"""

from __future__ import annotations

import getpass
import hashlib
import json

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

from desktop.engine import paths

#: Milliseconds a second instance waits for the first one before giving up.
DEFAULT_TIMEOUT_MS = 2000
_ACK = b"ok\n"
_MAX_MESSAGE = 1 << 20


def server_name() -> str:
    """The local socket name for this user and data folder (short: Unix paths are limited)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        user = "unknown"
    digest = hashlib.sha256(f"{user}\0{paths.data_dir()}".encode()).hexdigest()[:16]
    return f"sandstorm-{digest}"


class SingleInstance(QObject):
    """Elects one primary instance and forwards later launches to it.

    Signals:
        activation_requested(list): a second launch asked to be shown; carries its
            arguments (a list of strings).
    """

    activation_requested = Signal(list)

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or server_name()
        self._server: QLocalServer | None = None
        self._buffers: dict[QLocalSocket, bytearray] = {}

    @property
    def is_primary(self) -> bool:
        return self._server is not None and self._server.isListening()

    def try_become_primary(self, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> bool:
        """Listen for later launches unless another instance already does.

        Returns:
            True when this process is now the primary instance; False when another one
            answers on the socket (then call ``notify_primary`` and exit).
        """
        if self.is_primary:
            return True
        probe = QLocalSocket()
        probe.connectToServer(self.name)
        if probe.waitForConnected(timeout_ms):
            probe.disconnectFromServer()
            return False
        # Nobody answers: whatever is left at the name is a crashed instance's socket file.
        QLocalServer.removeServer(self.name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # Another instance won the race between our probe and listen().
            server.deleteLater()
            return False
        server.newConnection.connect(self._accept)
        self._server = server
        return True

    def notify_primary(self, args: list[str], timeout_ms: int = DEFAULT_TIMEOUT_MS) -> bool:
        """Ask the primary instance to come to the front; True once it confirmed.

        Blocks for at most about ``2 * timeout_ms``; safe to call before any event loop runs.
        """
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(timeout_ms):
            return False
        message = json.dumps({"args": [str(a) for a in args]}).encode() + b"\n"
        socket.write(message)
        if not socket.waitForBytesWritten(timeout_ms):
            socket.abort()
            return False
        reply = bytearray()
        while not reply.endswith(b"\n") and socket.waitForReadyRead(timeout_ms):
            reply += bytes(socket.readAll().data())
        socket.disconnectFromServer()
        return bytes(reply) == _ACK

    def close(self) -> None:
        """Stop listening (the socket name is freed for the next primary)."""
        if self._server is not None:
            self._server.close()
            self._server.deleteLater()
            self._server = None
        for socket in list(self._buffers):
            socket.abort()
        self._buffers.clear()

    def _accept(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            self._buffers[socket] = bytearray()
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))

    def _forget(self, socket: QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.deleteLater()

    def _read(self, socket: QLocalSocket) -> None:
        buffer = self._buffers.get(socket)
        if buffer is None:
            return
        buffer += bytes(socket.readAll().data())
        if len(buffer) > _MAX_MESSAGE:
            socket.abort()  # not one of ours
            return
        if not buffer.endswith(b"\n"):
            return
        try:
            payload = json.loads(bytes(buffer))
            args = [str(a) for a in payload.get("args", [])]
        except (ValueError, AttributeError, TypeError):
            socket.abort()
            return
        socket.write(_ACK)
        socket.flush()
        self.activation_requested.emit(args)


def raise_window(window: QWidget) -> None:
    """Show ``window`` in front: restore it if minimised, raise it and give it focus."""
    if window.isMinimized():
        window.showNormal()
    else:
        window.show()
    window.raise_()
    window.activateWindow()
