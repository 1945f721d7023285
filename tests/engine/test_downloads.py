"""Starter model downloads against a local HTTP server (the tests never touch the internet)."""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop.engine import downloads, paths
from desktop.engine.downloads import DownloadError, StarterModel
from desktop.engine.errors import Cancelled

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes: several chunks at the test chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 32 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def do_GET(self) -> None:
        hub = self.server
        hub.requests.append((self.path, self.headers.get("Range")))
        route = urllib.parse.urlsplit(self.path).path
        if route.startswith("/resolve/"):
            # As the hub does: the sha256 rides on the redirect, the CDN has its own ETag.
            self.send_response(302)
            self.send_header("Location", "/cdn/" + route.rsplit("/", 1)[-1])
            self.send_header("X-Linked-Etag", f'"{hub.linked_etag}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.endswith("/missing.safetensors"):
            self.send_error(404)
            return
        if route.endswith("/gated.safetensors"):
            self.send_error(403)
            return
        body = hub.payload
        start = 0
        requested = self.headers.get("Range")
        if requested and not hub.ignore_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if hub.etag:
            self.send_header("ETag", f'"{hub.etag}"')
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:]
        if hub.drop_after is not None:
            # Simulate a lost connection: promise everything, send a part, hang up.
            self.wfile.write(data[: hub.drop_after])
            hub.drop_after = None
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)


class FileServer(http.server.ThreadingHTTPServer):
    """A local file server whose behaviour each test sets (resume, ETags, dropped links)."""

    def __init__(self, payload: bytes = PAYLOAD) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        sha = hashlib.sha256(payload).hexdigest()
        self.etag: str | None = sha
        self.linked_etag = sha
        self.ignore_range = False
        self.drop_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, name="test-file-server"
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[FileServer]:
    hub = FileServer().start()
    yield hub
    hub.stop()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _NoNetwork:
    """An opener that fails the test if anything tries to use it."""

    def open(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the network was used")


def test_full_download_verifies_the_etag_sha256(server: FileServer, tmp_path: Path):
    seen: list[tuple[int, int | None]] = []
    path = downloads.download(
        server.url("/files/model.safetensors"),
        tmp_path,
        progress=lambda done, total: seen.append((done, total)),
        chunk_size=CHUNK,
    )
    assert path == tmp_path / "model.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert not (tmp_path / "model.safetensors.part").exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_hub_redirect_linked_etag_is_checked(server: FileServer, tmp_path: Path):
    server.etag = "0" * 32  # the CDN's own tag (an MD5-like value), not a sha256
    path = downloads.download(server.url("/resolve/main/model.safetensors"), tmp_path)
    assert path.read_bytes() == PAYLOAD
    server.linked_etag = "f" * 64
    (tmp_path / "other").mkdir()
    with pytest.raises(DownloadError, match="corrupt"):
        downloads.download(server.url("/resolve/main/model.safetensors"), tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(server: FileServer, tmp_path: Path):
    server.drop_after = 100_000
    url = server.url("/files/model.safetensors")
    with pytest.raises(DownloadError, match="resumes"):
        downloads.download(url, tmp_path, chunk_size=CHUNK)
    part = tmp_path / "model.safetensors.part"
    assert 0 < part.stat().st_size <= 100_000
    kept = part.stat().st_size
    assert not (tmp_path / "model.safetensors").exists()

    seen: list[int] = []
    path = downloads.download(url, tmp_path, progress=lambda d, t: seen.append(d), chunk_size=CHUNK)
    assert server.requests[-1][1] == f"bytes={kept}-"
    assert seen[0] == kept
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert not part.exists()


def test_resume_through_the_hub_redirect_keeps_range_and_linked_sha(
    server: FileServer, tmp_path: Path
):
    server.etag = None
    (tmp_path / "model.safetensors.part").write_bytes(PAYLOAD[:5000])
    path = downloads.download(server.url("/resolve/main/model.safetensors"), tmp_path)
    assert server.requests == [
        ("/resolve/main/model.safetensors", "bytes=5000-"),
        ("/cdn/model.safetensors", "bytes=5000-"),
    ]
    assert path.read_bytes() == PAYLOAD
    # A corrupt partial file is caught by the linked sha256 even when resuming.
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "model.safetensors.part").write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError, match="corrupt"):
        downloads.download(server.url("/resolve/main/model.safetensors"), tmp_path / "again")
    assert list((tmp_path / "again").iterdir()) == []


def test_server_that_ignores_range_restarts_cleanly(server: FileServer, tmp_path: Path):
    part = tmp_path / "model.safetensors.part"
    part.write_bytes(b"stale bytes from another file")
    server.ignore_range = True
    path = downloads.download(server.url("/files/model.safetensors"), tmp_path)
    assert server.requests[-1][1] == f"bytes={len(b'stale bytes from another file')}-"
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_file_is_finished_on_416(server: FileServer, tmp_path: Path):
    (tmp_path / "model.safetensors.part").write_bytes(PAYLOAD)
    path = downloads.download(server.url("/files/model.safetensors"), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_sha_mismatch_deletes_the_download(server: FileServer, tmp_path: Path):
    server.etag = None
    entry = StarterModel(
        name="Test model",
        family="sd1",
        kind="checkpoints",
        repo="test/model",
        filename="model.safetensors",
        size_bytes=len(PAYLOAD),
        license="MIT",
        url=server.url("/files/model.safetensors"),
        sha256="a" * 64,
    )
    with pytest.raises(DownloadError, match=r"Test model is corrupt \(sha256 mismatch\)"):
        downloads.download(entry, tmp_path)
    assert list(tmp_path.iterdir()) == []
    # The right hash (given explicitly) is accepted.
    path = downloads.download(entry, tmp_path, expected_sha256=SHA)
    assert path.read_bytes() == PAYLOAD


def test_cancel_keeps_the_partial_file(server: FileServer, tmp_path: Path):
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= 2 * CHUNK:
            cancel.set()

    with pytest.raises(Cancelled, match="paused"):
        downloads.download(
            server.url("/files/model.safetensors"),
            tmp_path,
            progress=progress,
            cancel_event=cancel,
            chunk_size=CHUNK,
        )
    part = tmp_path / "model.safetensors.part"
    assert part.stat().st_size == 2 * CHUNK  # stopped within one chunk of the request
    assert not (tmp_path / "model.safetensors").exists()


def test_connection_refused_says_offline(tmp_path: Path):
    url = f"http://127.0.0.1:{_closed_port()}/files/model.safetensors"
    with pytest.raises(DownloadError) as caught:
        downloads.download(url, tmp_path, timeout=2)
    message = str(caught.value)
    assert "could not reach 127.0.0.1" in message and "seems to be offline" in message
    assert "built-in model works without a network" in message
    assert str(paths.user_models_dir() / "checkpoints") in message


def test_forced_offline_uses_no_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SANDSTORM_OFFLINE", "1")

    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "create_connection", no_socket)
    entry = downloads.load_catalogue()[0]
    with pytest.raises(DownloadError, match=r"could not reach huggingface\.co"):
        downloads.download(entry, opener=_NoNetwork())  # type: ignore[arg-type]
    assert downloads.is_online() is False
    assert not paths.user_models_dir().exists()


def test_is_online_checks_a_connection(server: FileServer):
    assert downloads.is_online("127.0.0.1", server.server_address[1], timeout=2)
    assert not downloads.is_online("127.0.0.1", _closed_port(), timeout=2)
    calls: list[tuple] = []

    def fake_connect(address: tuple, timeout: float) -> socket.socket:
        calls.append(address)
        raise TimeoutError

    assert not downloads.is_online(connect=fake_connect)
    assert calls == [("huggingface.co", 443)]


def test_http_errors_have_plain_messages(server: FileServer, tmp_path: Path):
    with pytest.raises(DownloadError, match=r"missing\.safetensors was not found"):
        downloads.download(server.url("/files/missing.safetensors"), tmp_path)
    with pytest.raises(DownloadError, match="requires accepting a licence / logging in"):
        downloads.download(server.url("/files/gated.safetensors"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_reported_and_the_partial_file_kept(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_open = open

    class _FullDisk:
        def __init__(self, handle) -> None:
            self._handle = handle

        def __enter__(self) -> _FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

        def write(self, block: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        downloads, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False
    )
    with pytest.raises(DownloadError, match="not enough free disk space"):
        downloads.download(server.url("/files/model.safetensors"), tmp_path)
    assert (tmp_path / "model.safetensors.part").exists()


def test_existing_file_is_not_downloaded_again(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"already here")
    path = downloads.download("http://127.0.0.1:9/model.safetensors", tmp_path, opener=_NoNetwork())
    assert path.read_bytes() == b"already here"


def test_default_destination_is_the_user_models_folder(server: FileServer):
    entry = StarterModel(
        name="Tiny decoder",
        family="sd1",
        kind="vae_approx",
        repo="test/taesd",
        filename="decoder.safetensors",
        size_bytes=len(PAYLOAD),
        license="MIT",
        url=server.url("/files/decoder.safetensors"),
    )
    assert not entry.is_installed()
    path = downloads.download(entry)
    assert path == paths.user_models_dir() / "vae_approx" / "decoder.safetensors"
    assert entry.is_installed() and entry.partial_bytes() == 0


def test_catalogue_entries_are_complete_hub_downloads():
    models = downloads.load_catalogue()
    assert 3 <= len(models) <= 6
    for model in models:
        assert model.name and model.license and model.description
        assert model.family in ("sd1", "sdxl")
        assert model.kind in ("checkpoints", "vae", "vae_approx")
        assert model.size_bytes > 1_000_000
        assert model.url == downloads.hub_url(model.repo, model.filename)
        assert model.url.startswith("https://huggingface.co/")
        assert model.sha256 is None or len(model.sha256) == 64
    assert {m.kind for m in models} >= {"checkpoints", "vae"}


def test_damaged_catalogue_is_reported(tmp_path: Path):
    broken = tmp_path / "models.json"
    broken.write_text(json.dumps({"models": [{"name": "No URL"}]}), encoding="utf-8")
    with pytest.raises(DownloadError, match=r"Entry 1 .* lacks"):
        downloads.load_catalogue(broken)
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DownloadError, match="cannot be read"):
        downloads.load_catalogue(broken)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f'"{SHA}"', SHA),
        (f'W/"{SHA.upper()}"', SHA),
        ('"d41d8cd98f00b204e9800998ecf8427e"', None),
        (None, None),
    ],
)
def test_etags_are_read_as_sha256_only_when_they_are_one(value: str | None, expected: str | None):
    assert downloads.normalise_etag(value) == expected


def test_sizes_are_formatted_for_people():
    assert downloads.format_size(4_265_146_304) == "4.3 GB"
    assert downloads.format_size(334_641_164) == "334.6 MB"
    assert downloads.format_size(512) == "512 B"
    assert downloads.format_size(None) == "?"
