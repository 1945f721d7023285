"""Optional downloads of starter models from the Hugging Face hub (standard library only).

Nothing in Sandstorm needs a network: the built-in model is bundled. This module serves
the explicit "Download starter models" action for machines that are online. A download
goes to ``<file>.part`` next to its destination, resumes with an HTTP ``Range`` request,
hashes while it streams and only becomes the real file after its sha256 matched, so a
half-written or corrupt checkpoint never shows up in the model list.

The hub serves a Git LFS file's sha256 as its ``X-Linked-Etag`` on the redirect from
``/resolve/`` to the CDN; that header is recorded before the redirect is followed and
used when the catalogue carries no hash of its own.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.engine import paths
from desktop.engine.durable import fsync_folder
from desktop.engine.errors import Cancelled, SandstormError

CATALOGUE = paths.RESOURCES / "starter_models.json"
HUB_HOST = "huggingface.co"
KINDS = ("checkpoints", "vae", "vae_approx")
FAMILIES = ("sd1", "sd2", "sdxl")
CHUNK_SIZE = 1024 * 1024
USER_AGENT = "Sandstorm (starter model download)"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("name", "family", "kind", "repo", "filename", "size_bytes", "license", "url")

#: ``progress(done_bytes, total_bytes_or_None)``
ProgressCallback = Callable[[int, int | None], None]


class DownloadError(SandstormError):
    """A download failed; the message says why and what to do."""


@dataclass(frozen=True)
class StarterModel:
    """One entry of the starter model catalogue.

    Attributes:
        name: display name.
        family: "sd1", "sd2" or "sdxl".
        kind: destination sub-folder of the models folder ("checkpoints", "vae", "vae_approx").
        repo: Hugging Face repository (``owner/name``).
        filename: file name in the repository, also the name it is saved under.
        size_bytes: approximate size, for display before the server says.
        license: licence name shown to the user.
        description: one or two sentences for the tooltip.
        url: where the file is downloaded from.
        sha256: the expected hash when known; otherwise the server's linked ETag is used.
    """

    name: str
    family: str
    kind: str
    repo: str
    filename: str
    size_bytes: int
    license: str
    url: str
    description: str = ""
    sha256: str | None = None

    def folder(self, models_dir: Path | None = None) -> Path:
        """The folder this model is saved into (``<models>/<kind>``)."""
        root = models_dir if models_dir is not None else paths.user_models_dir()
        return root / self.kind

    def target(self, models_dir: Path | None = None) -> Path:
        """The finished file."""
        return self.folder(models_dir) / self.filename

    def partial(self, models_dir: Path | None = None) -> Path:
        """The partial download that the next attempt resumes."""
        return part_path(self.target(models_dir))

    def is_installed(self, models_dir: Path | None = None) -> bool:
        return self.target(models_dir).is_file()

    def partial_bytes(self, models_dir: Path | None = None) -> int:
        """Bytes already downloaded by an interrupted attempt (0 when none)."""
        try:
            return self.partial(models_dir).stat().st_size
        except OSError:
            return 0


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def hub_url(repo: str, filename: str, revision: str = "main") -> str:
    """The hub's direct download address of ``filename`` in ``repo``."""
    return f"https://{HUB_HOST}/{repo}/resolve/{revision}/{urllib.parse.quote(filename)}"


def load_catalogue(path: Path = CATALOGUE) -> list[StarterModel]:
    """Read the starter model catalogue; raises ``DownloadError`` when it is damaged."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DownloadError(f"The starter model list {path} cannot be read ({exc}).") from exc
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f'The starter model list {path} has no "models" list.')
    models = []
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict) or any(raw.get(key) in (None, "") for key in _REQUIRED):
            raise DownloadError(
                f"Entry {index + 1} of the starter model list {path} lacks one of "
                f"{', '.join(_REQUIRED)}."
            )
        sha = raw.get("sha256")
        model = StarterModel(
            name=str(raw["name"]),
            family=str(raw["family"]),
            kind=str(raw["kind"]),
            repo=str(raw["repo"]),
            filename=str(raw["filename"]),
            size_bytes=int(raw["size_bytes"]),
            license=str(raw["license"]),
            url=str(raw["url"]),
            description=str(raw.get("description", "")),
            sha256=str(sha).lower() if sha else None,
        )
        if model.kind not in KINDS or model.family not in FAMILIES:
            raise DownloadError(
                f"{model.name} in {path} has an unknown kind or family "
                f"({model.kind!r}, {model.family!r})."
            )
        if model.sha256 is not None and not _SHA256.fullmatch(model.sha256):
            raise DownloadError(f"{model.name} in {path} has a malformed sha256.")
        if "/" in model.filename or "\\" in model.filename or model.filename.startswith("."):
            raise DownloadError(f"{model.name} in {path} has an unsafe file name.")
        models.append(model)
    return models


def offline_forced() -> bool:
    """``SANDSTORM_OFFLINE=1`` makes every download answer "offline" without touching the net.

    ``HF_HUB_OFFLINE`` is not used: the app sets it so that model loading never reaches
    out, while a download is something the user asked for explicitly.
    """
    return os.environ.get("SANDSTORM_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_online(
    host: str = HUB_HOST,
    port: int = 443,
    timeout: float = 2.0,
    connect: Callable[..., Any] = socket.create_connection,
) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (cheap check)."""
    if offline_forced():
        return False
    try:
        connection = connect((host, port), timeout=timeout)
    except OSError:
        return False
    connection.close()
    return True


def offline_message(host: str = HUB_HOST, models_dir: Path | None = None) -> str:
    folder = (models_dir if models_dir is not None else paths.user_models_dir()) / "checkpoints"
    return (
        f"Sandstorm could not reach {host} — this computer seems to be offline. "
        "The built-in model works without a network; to add models offline, copy checkpoint "
        f"files into {folder}."
    )


def format_size(size: int | None) -> str:
    """``4265146304`` → ``"4.3 GB"`` (decimal units, as download sites show them)."""
    if size is None or size < 0:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def normalise_etag(value: str | None) -> str | None:
    """The sha256 carried by an ETag (``W/"<hex>"``), or None when it is something else."""
    if not value:
        return None
    tag = value.strip()
    if tag.startswith(("W/", "w/")):
        tag = tag[2:]
    tag = tag.strip().strip('"').lower()
    return tag if _SHA256.fullmatch(tag) else None


class _RedirectRecorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects like the default handler and keeps the hub's linked headers.

    The CDN that serves the bytes answers with its own (non-sha256) ETag; the sha256 is
    only on the hub's redirect response, which urllib otherwise throws away.
    """

    def __init__(self) -> None:
        super().__init__()
        self.linked_etag: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        linked = normalise_etag(headers.get("X-Linked-Etag"))
        if linked and self.linked_etag is None:
            self.linked_etag = linked
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _is_offline_error(exc: BaseException) -> bool:
    """DNS failures, refused or reset connections and timeouts; not TLS or protocol errors."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, OSError) and not isinstance(reason, ssl.SSLError)


def _disk_error(exc: OSError, name: str, folder: Path, total: int | None) -> DownloadError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        need = f" (it needs about {format_size(total)})" if total else ""
        return DownloadError(
            f"There is not enough free disk space in {folder} for {name}{need}; free some "
            "space and download again — what arrived so far is kept."
        )
    return DownloadError(f"{name} cannot be written to {folder}: {exc.strerror or exc}.")


def _sha256_of(path: Path, cancel_event: threading.Event | None) -> Any:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled("The download was paused before it resumed.")
            hasher.update(block)
    return hasher


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` → (100, 200), ``bytes */200`` → (None, 200); unknowns are None."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def download(
    entry_or_url: StarterModel | str,
    dest_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel_event: threading.Event | None = None,
    expected_sha256: str | None = None,
    timeout: float = 30.0,
    opener: urllib.request.OpenerDirector | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Path:
    """Download a starter model (or any URL) into ``dest_dir``, resuming a previous attempt.

    Args:
        entry_or_url: a catalogue entry, or a URL whose last path segment names the file.
        dest_dir: target folder; defaults to ``user_models_dir()/<kind>`` (``checkpoints``
            for a bare URL).
        progress: called with (bytes done, total bytes or None) after every chunk.
        cancel_event: when set, the download stops within one chunk, keeps the ``.part``
            file for resuming and raises ``Cancelled``.
        expected_sha256: overrides the entry's hash; without either, the server's sha256
            ETag is checked when it sends one.
        timeout: socket timeout in seconds for connecting and for each read.
        opener: a urllib opener (tests); the default one records the hub's linked ETag.
        chunk_size: bytes per read; cancellation is checked between reads.

    Returns:
        The finished file. An already finished file is returned as it is.

    Raises:
        DownloadError: offline, refused by the server, interrupted, corrupt or disk full.
        Cancelled: ``cancel_event`` was set.
    """
    if isinstance(entry_or_url, StarterModel):
        url = entry_or_url.url
        filename = entry_or_url.filename
        name = entry_or_url.name
        expected = expected_sha256 or entry_or_url.sha256
        kind = entry_or_url.kind
    else:
        url = entry_or_url
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        name = filename
        expected = expected_sha256
        kind = "checkpoints"
    if not filename or filename in (".", ".."):
        raise DownloadError(f"{url} does not name a file to download.")
    host = urllib.parse.urlsplit(url).hostname or HUB_HOST
    folder = Path(dest_dir) if dest_dir is not None else paths.user_models_dir() / kind
    if offline_forced():
        raise DownloadError(offline_message(host))
    expected = expected.lower() if expected else None
    target = folder / filename
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"The folder {folder} cannot be created: {exc.strerror}.") from exc
    part = part_path(target)

    # Two passes at most: the second starts from zero when the partial file turned out to be
    # unusable (the server says it is complete but its hash does not match).
    for attempt in (0, 1):
        offset = part.stat().st_size if part.is_file() else 0
        hasher = _sha256_of(part, cancel_event) if offset else hashlib.sha256()
        recorder = _RedirectRecorder()
        client = opener if opener is not None else urllib.request.build_opener(recorder)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = client.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            linked = (
                recorder.linked_etag
                or normalise_etag(exc.headers.get("X-Linked-Etag"))
                or normalise_etag(exc.headers.get("ETag"))
            )
            exc.close()
            if exc.code == 416 and offset:
                # Nothing left to send: the partial file is complete, or longer than the file.
                _, total = _content_range(exc.headers.get("Content-Range"))
                want = expected or linked
                complete = hasher.hexdigest() == want if want else total == offset
                if complete:
                    return _finish(part, target, name)
                part.unlink(missing_ok=True)
                if attempt == 0:
                    continue
            raise _http_error(exc.code, exc.reason, name, url) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if _is_offline_error(exc):
                raise DownloadError(offline_message(host)) from exc
            raise DownloadError(f"The download of {name} failed: {exc}.") from exc
        with response:
            return _stream(
                response=response,
                part=part,
                target=target,
                name=name,
                host=host,
                offset=offset,
                hasher=hasher,
                expected=expected or recorder.linked_etag,
                progress=progress,
                cancel_event=cancel_event,
                chunk_size=chunk_size,
            )
    raise DownloadError(f"The download of {name} could not be completed; try again.")


def _http_error(code: int, reason: str, name: str, url: str) -> DownloadError:
    if code in (401, 403):
        return DownloadError(
            f"{name} requires accepting a licence / logging in on the website ({url}); "
            "download it in a browser and copy it into the models folder."
        )
    if code == 404:
        return DownloadError(f"{name} was not found on the server ({url}); it may have moved.")
    if code == 429 or code >= 500:
        return DownloadError(
            f"The server is busy or failing (HTTP {code}) for {name}; try again later — "
            "what arrived so far is kept."
        )
    return DownloadError(f"The server refused the download of {name} (HTTP {code} {reason}).")


def _stream(
    *,
    response: Any,
    part: Path,
    target: Path,
    name: str,
    host: str,
    offset: int,
    hasher: Any,
    expected: str | None,
    progress: ProgressCallback | None,
    cancel_event: threading.Event | None,
    chunk_size: int,
) -> Path:
    """Append the response body to ``part``, then verify and publish it."""
    status = getattr(response, "status", 200)
    headers = response.headers
    length = headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if offset and status == 206:
        start, total = _content_range(headers.get("Content-Range"))
        if start != offset:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"The server resumed {name} at the wrong place, so the partial download was "
                "deleted; try again."
            )
        if total is None and length is not None:
            total = offset + length
    else:
        # A 200 answer is the whole file: the server ignored the Range request.
        offset = 0
        hasher = hashlib.sha256()
        total = length
    expected = expected or normalise_etag(headers.get("X-Linked-Etag") or headers.get("ETag"))
    done = offset
    folder = target.parent
    try:
        # Opened outside ``with`` so that a failure to open is reported as a disk error.
        handle = open(part, "ab" if offset else "wb")  # noqa: SIM115
    except OSError as exc:
        raise _disk_error(exc, name, folder, total) from exc
    with handle:
        if progress is not None:
            progress(done, total)
        while True:
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled(
                    f"The download of {name} was paused; it resumes where it stopped next time."
                )
            try:
                block = response.read(chunk_size)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"The connection to {host} was lost while downloading {name}; what arrived "
                    "is kept and the next download resumes from there."
                ) from exc
            if not block:
                break
            try:
                handle.write(block)
            except OSError as exc:
                raise _disk_error(exc, name, folder, total) from exc
            hasher.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
        try:
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            raise _disk_error(exc, name, folder, total) from exc
    if total is not None and done < total:
        raise DownloadError(
            f"The connection to {host} closed early while downloading {name} "
            f"({format_size(done)} of {format_size(total)}); the next download resumes from there."
        )
    if expected and hasher.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"The download of {name} is corrupt (sha256 mismatch); it was deleted. Try again."
        )
    return _finish(part, target, name)


def _finish(part: Path, target: Path, name: str) -> Path:
    try:
        os.replace(part, target)
    except OSError as exc:
        raise DownloadError(f"{name} could not be moved into place: {exc.strerror}.") from exc
    fsync_folder(target.parent)
    return target
