"""The ComfyUI server editor in Settings: address checks, the connection test, tokens."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QLineEdit

from desktop.engine.remote.comfy_client import ServerConfig
from desktop.engine.settings import Settings, server_entry
from desktop.ui.servers_editor import ServerDialog, ServersEditor
from desktop.ui.settings_dialog import SettingsDialog
from tests.helpers.fake_comfy import FakeComfy

TEST_WAIT_MS = 15_000


@pytest.fixture
def fake() -> Iterator[FakeComfy]:
    with FakeComfy(checkpoints=["sd15.safetensors", "sdxl_base.safetensors"], loras=["a.pt"]) as s:
        yield s


@pytest.fixture
def dialog(qtbot) -> Iterator[ServerDialog]:
    dialog = ServerDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    yield dialog
    dialog.reject()  # shuts its own task runner down


def _ok(dialog: ServerDialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_only_http_and_https_addresses_are_accepted(qtbot, dialog: ServerDialog):
    assert not _ok(dialog).isEnabled()  # nothing typed yet
    qtbot.keyClicks(dialog.url_edit, "ftp://192.168.1.20:8188")
    assert not _ok(dialog).isEnabled() and not dialog.test_button.isEnabled()
    assert "Only http:// and https://" in dialog.result_label.text()
    assert dialog.config() is None
    dialog.url_edit.setText("http://user:secret@host:8188")
    assert not _ok(dialog).isEnabled()
    assert "secret" not in dialog.result_label.text()  # the password is not echoed
    dialog.url_edit.setText("HTTP://Studio.local:8188/")
    assert _ok(dialog).isEnabled() and dialog.result_label.text() == ""
    assert dialog.config() == ServerConfig("http://studio.local:8188")


def test_the_test_button_says_what_the_server_has(qtbot, dialog: ServerDialog, fake: FakeComfy):
    dialog.url_edit.setText(fake.url)
    qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: dialog.result_label.text().startswith("Connected: "), timeout=TEST_WAIT_MS
    )
    assert dialog.result_label.text() == "Connected: ComfyUI 0.3.64, 2 checkpoints, 1 LoRA"


def test_the_test_button_says_why_a_server_does_not_answer(qtbot, dialog: ServerDialog):
    port = _closed_port()
    dialog.url_edit.setText(f"http://127.0.0.1:{port}")
    qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: dialog.result_label.text().startswith("Not connected: "), timeout=TEST_WAIT_MS
    )
    assert f"127.0.0.1:{port}" in dialog.result_label.text()
    assert "refused" in dialog.result_label.text()


def test_a_wrong_token_is_reported(qtbot, dialog: ServerDialog):
    with FakeComfy(token="right") as fake:
        dialog.url_edit.setText(fake.url)
        dialog.token_edit.setText("wrong")
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: dialog.result_label.text().startswith("Not connected: "),
            timeout=TEST_WAIT_MS,
        )
        assert "token" in dialog.result_label.text()
        assert "wrong" not in dialog.result_label.text()


def test_tokens_are_typed_as_passwords_and_never_listed(qtbot):
    config = ServerConfig("https://gpu.example:8443", token="s3cret-token", name="Studio")
    editor = ServersEditor([config])
    qtbot.addWidget(editor)
    text = editor.list.item(0).text()
    assert "Studio" in text and "gpu.example" in text and "token" in text
    assert "s3cret" not in text and "s3cret" not in editor.list.item(0).toolTip()
    dialog = ServerDialog(config, editor.runner, editor)
    try:
        assert dialog.token_edit.echoMode() == QLineEdit.EchoMode.Password
        assert dialog.token_edit.text() == "s3cret-token"
        assert dialog.config() == config
        assert "s3cret" not in repr(dialog.config())
    finally:
        dialog.reject()
        editor.shutdown()


def test_the_editor_adds_refuses_duplicates_and_removes(qtbot):
    editor = ServersEditor()
    qtbot.addWidget(editor)
    a = ServerConfig("http://10.0.0.1:8188")
    b = ServerConfig("http://10.0.0.2:8188", name="Second", verify_tls=False)
    with qtbot.waitSignal(editor.changed):
        assert editor.add_config(a)
    assert not editor.add_config(ServerConfig("http://10.0.0.1:8188", name="again"))
    assert "already in the list" in editor.result_label.text()
    assert editor.add_config(b)
    assert editor.configs() == [a, b]
    assert "self-signed" in editor.list.item(1).text()
    editor.list.setCurrentRow(0)
    with qtbot.waitSignal(editor.changed):
        editor.remove_button.click()
    assert editor.configs() == [b]
    assert editor.shutdown()


def test_the_editor_tests_the_selected_server(qtbot, fake: FakeComfy):
    editor = ServersEditor([ServerConfig(fake.url, name="Fake")])
    qtbot.addWidget(editor)
    assert not editor.test_button.isEnabled()  # nothing selected
    editor.list.setCurrentRow(0)
    qtbot.mouseClick(editor.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: editor.result_label.text().startswith("Connected: "), timeout=TEST_WAIT_MS
    )
    assert editor.shutdown()


def test_the_settings_dialog_keeps_the_servers(qtbot):
    config = ServerConfig("http://10.0.0.9:8188", token="tok", name="Box")
    settings = Settings(servers=[server_entry(config)])
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.servers_editor.configs() == [config]
    dialog.servers_editor.add_config(ServerConfig("http://10.0.0.10:8188"))
    result = dialog.result_settings()
    dialog.reject()
    assert [e["url"] for e in result.servers] == ["http://10.0.0.9:8188", "http://10.0.0.10:8188"]
    assert result.servers[0]["token"] == "tok"
    assert result.server_configs()[0] == config
