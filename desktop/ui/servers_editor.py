"""ComfyUI servers in Settings: add, test, edit and remove server addresses.

``ServersEditor`` lists the servers; ``ServerDialog`` edits one: its address (http or https
only, checked with ``normalize_url``), a name, an optional access token (sent as
``Authorization: Bearer`` for servers behind a proxy; typed into a password field, stored
only in the settings file) and whether to accept a self-signed certificate. "Test" asks the
server off the GUI thread and says what it found: "Connected: ComfyUI 0.3.64, 3 checkpoints,
12 LoRAs", or why not.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.errors import RequestError, SandstormError
from desktop.engine.remote.comfy_client import ComfyClient, ServerConfig, normalize_url
from desktop.ui.tasks import Task, TaskRunner

#: The data role of a list item holding its ``ServerConfig``.
CONFIG_ROLE = Qt.ItemDataRole.UserRole + 1
#: Seconds a connection test waits for the server.
TEST_TIMEOUT_S = 8.0


def test_server(config: ServerConfig) -> str:
    """What a connection test says when the server answers (raises ``SandstormError``)."""
    client = ComfyClient(config, timeout=TEST_TIMEOUT_S)
    version = client.version()
    models = client.models()

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"Connected: ComfyUI {version or '(version unknown)'}, "
        f"{count(len(models.checkpoints), 'checkpoint')}, {count(len(models.loras), 'LoRA')}"
    )


class ServerTester:
    """Runs ``test_server`` on a ``TaskRunner`` and shows the answer on a label."""

    def __init__(self, runner: TaskRunner, label: QLabel) -> None:
        self._runner = runner
        self._label = label
        self._task: Task | None = None

    def start(self, config: ServerConfig) -> None:
        if self._task is not None:
            self._task.cancel()
        self._label.setText(f"Connecting to {config.label}…")
        self._label.setStyleSheet("color: #9a9ca8;")
        try:
            self._task = self._runner.submit(
                test_server,
                config,
                on_result=self._on_result,
                on_error=self._on_error,
                name="server test",
            )
        except RuntimeError:  # shutting down
            self._task = None

    def running(self) -> bool:
        return self._task is not None and not self._task.done

    def cancel(self) -> None:
        """Forget the test under way: its answer is dropped (the label may be gone)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _on_result(self, text: str) -> None:
        self._task = None
        self._label.setText(text)
        self._label.setStyleSheet("color: #7ec27e;")

    def _on_error(self, exc: BaseException) -> None:
        self._task = None
        if isinstance(exc, SandstormError):
            text = str(exc)
        else:
            text = f"The test failed unexpectedly: {exc}"
        self._label.setText(f"Not connected: {text}")
        self._label.setStyleSheet("color: #e07a6a;")


class ServerDialog(QDialog):
    """Edits one server; ``config()`` is the result (None while the address is invalid)."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        runner: TaskRunner | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit server" if config else "Add server")
        self.setObjectName("ServerDialog")
        self.setMinimumWidth(460)
        self._own_runner = runner is None
        self._runner = runner or TaskRunner(parent=self)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.url_edit = QLineEdit(config.url if config else "")
        self.url_edit.setObjectName("ServerUrl")
        self.url_edit.setPlaceholderText("http://192.168.1.20:8188")
        self.url_edit.setToolTip("The ComfyUI server's address: http:// or https:// only")
        form.addRow("Address", self.url_edit)
        self.name_edit = QLineEdit(config.name if config else "")
        self.name_edit.setObjectName("ServerName")
        self.name_edit.setPlaceholderText("e.g. Studio GPU (optional)")
        form.addRow("Name", self.name_edit)
        self.token_edit = QLineEdit(config.token if config else "")
        self.token_edit.setObjectName("ServerToken")
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("optional")
        self.token_edit.setToolTip(
            "For a server behind a proxy that asks for one: sent as "
            "“Authorization: Bearer …”. Kept only in the settings file (readable by you "
            "alone), never written into images or logs."
        )
        form.addRow("Access token", self.token_edit)
        self.insecure_check = QCheckBox("Accept a self-signed certificate (https)")
        self.insecure_check.setObjectName("ServerInsecure")
        self.insecure_check.setChecked(bool(config) and not config.verify_tls)
        self.insecure_check.setToolTip(
            "Only for a server whose certificate you made yourself: the certificate is then "
            "not checked, so anyone between you and the server could read the traffic."
        )
        form.addRow("", self.insecure_check)
        layout.addLayout(form)

        test_row = QHBoxLayout()
        self.test_button = QPushButton("Test")
        self.test_button.setObjectName("TestServer")
        self.test_button.setToolTip("Connect to the server and list what it has")
        self.result_label = QLabel()
        self.result_label.setObjectName("ServerTestResult")
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.PlainText)
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.result_label, 1)
        layout.addLayout(test_row)
        self.tester = ServerTester(self._runner, self.result_label)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.test_button.clicked.connect(self.test)
        self.url_edit.textChanged.connect(lambda *_: self._validate())
        self._validate()

    def problem(self) -> str:
        """Why the address cannot be used ("" when it can)."""
        try:
            normalize_url(self.url_edit.text())
        except RequestError as exc:
            return str(exc)
        return ""

    def config(self) -> ServerConfig | None:
        if self.problem():
            return None
        return ServerConfig(
            url=normalize_url(self.url_edit.text()),
            token=self.token_edit.text().strip(),
            verify_tls=not self.insecure_check.isChecked(),
            name=self.name_edit.text().strip(),
        )

    def test(self) -> None:
        config = self.config()
        if config is None:
            self.result_label.setText(self.problem())
            return
        self.tester.start(config)

    def done(self, result: int) -> None:
        # A test still under way must not write to this dialog's label once it is gone.
        self.tester.cancel()
        if self._own_runner:
            self._runner.shutdown()
        super().done(result)

    def _validate(self) -> None:
        problem = self.problem() if self.url_edit.text().strip() else "Type the address."
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(not problem)
        self.test_button.setEnabled(not problem)
        if problem and self.url_edit.text().strip():
            self.result_label.setText(problem)
            self.result_label.setStyleSheet("color: #e07a6a;")
        elif not self.tester.running():
            self.result_label.setText("")


class ServersEditor(QWidget):
    """The list of servers with Add, Edit, Remove and Test.

    Signals:
        changed(): a server was added, edited or removed.
    """

    changed = Signal()

    def __init__(self, configs: Sequence[ServerConfig] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("ServersEditor")
        self.runner = TaskRunner(parent=self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setObjectName("ServerList")
        self.list.setToolTip("ComfyUI servers jobs can run on (pick one next to the model)")
        self.list.setMaximumHeight(110)
        layout.addWidget(self.list)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add…")
        self.add_button.setObjectName("AddServer")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        self.test_button = QPushButton("Test")
        self.test_button.setObjectName("TestSelectedServer")
        for button in (self.add_button, self.edit_button, self.remove_button, self.test_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.result_label = QLabel()
        self.result_label.setObjectName("ServersTestResult")
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.result_label)
        self.tester = ServerTester(self.runner, self.result_label)
        for config in configs:
            self._append(config)
        self.add_button.clicked.connect(lambda: self.add())
        self.edit_button.clicked.connect(lambda: self.edit())
        self.remove_button.clicked.connect(self.remove_selected)
        self.test_button.clicked.connect(self.test_selected)
        self.list.currentRowChanged.connect(lambda *_: self._update_buttons())
        self.list.itemDoubleClicked.connect(lambda *_: self.edit())
        self._update_buttons()

    def configs(self) -> list[ServerConfig]:
        return [self.list.item(i).data(CONFIG_ROLE) for i in range(self.list.count())]

    def add_config(self, config: ServerConfig) -> bool:
        """Add ``config`` (False when a server with that address is already listed)."""
        if any(c.url == config.url for c in self.configs()):
            self.result_label.setText(f"{config.url} is already in the list.")
            return False
        self._append(config)
        self.list.setCurrentRow(self.list.count() - 1)
        self.changed.emit()
        return True

    def add(self) -> bool:
        dialog = ServerDialog(None, self.runner, self)
        try:
            if dialog.exec() != int(QDialog.DialogCode.Accepted):
                return False
            config = dialog.config()
            return config is not None and self.add_config(config)
        finally:
            dialog.deleteLater()

    def edit(self) -> bool:
        item = self.list.currentItem()
        if item is None:
            return False
        dialog = ServerDialog(item.data(CONFIG_ROLE), self.runner, self)
        try:
            if dialog.exec() != int(QDialog.DialogCode.Accepted):
                return False
            config = dialog.config()
            if config is None:
                return False
            self._show(item, config)
            self.changed.emit()
            return True
        finally:
            dialog.deleteLater()

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.list.takeItem(row)
            self.changed.emit()
        self._update_buttons()

    def test_selected(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.tester.start(item.data(CONFIG_ROLE))

    def shutdown(self, msecs: int = 10_000) -> bool:
        return self.runner.shutdown(msecs)

    def _append(self, config: ServerConfig) -> None:
        item = QListWidgetItem()
        self._show(item, config)
        self.list.addItem(item)
        self._update_buttons()

    @staticmethod
    def _show(item: QListWidgetItem, config: ServerConfig) -> None:
        text = config.label if not config.name else f"{config.name} — {config.url}"
        extras = [
            x
            for x in ("token" if config.token else "", "" if config.verify_tls else "self-signed")
            if x
        ]
        item.setText(text + (f"  ({', '.join(extras)})" if extras else ""))
        item.setData(CONFIG_ROLE, config)
        item.setToolTip(config.url)

    def _update_buttons(self) -> None:
        selected = self.list.currentItem() is not None
        for button in (self.edit_button, self.remove_button, self.test_button):
            button.setEnabled(selected)
