"""The HTTP and websocket API of a ComfyUI server, seen from a client (no Qt, standard library).

``ComfyClient(ServerConfig("http://host:8188"))`` wraps the endpoints Sandstorm uses
(``/system_stats``, ``/object_info``, ``/upload/image``, ``/prompt``, ``/queue``,
``/interrupt``, ``/history``, ``/view``, ``/ws``); ``parse_event`` turns websocket messages
into dicts and ``PreviewFrame`` objects. Every failure is one of three exceptions, which tell
the caller what to do with the job:

* ``ServerError`` (``retryable``): the server is unreachable or misbehaved (refused
  connection, timeout, TLS failure, HTTP 5xx, malformed JSON, a truncated image, an answer
  over the size cap, a dropped websocket): put the job back and run it elsewhere or later;
* ``AuthError`` (a ``ServerError``, not retryable): the server wants another access token;
* ``ServerRejected`` (not retryable): the server understood the job and refused it (HTTP
  400 from ``/prompt`` with ``node_errors``, for a model it does not have).

Safety: TLS certificates are verified unless the user turned that off for this server; the
access token goes only into the ``Authorization`` header, never into a URL, a ``repr``, an
exception or a log line; answers are read up to a cap (``JSON_CAP``, ``IMAGE_CAP``), so a
hostile server cannot exhaust memory. File names the server sends (outputs, uploads) are
only ever passed back to that server (``view``, ``LoadImage``); they are never used as
local paths.
"""

from __future__ import annotations

import http.client
import json
import ssl
import struct
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

from desktop.engine.errors import RequestError, SandstormError
from desktop.engine.remote.websocket import (
    OP_BINARY,
    OP_TEXT,
    WebSocket,
    WebSocketHandshakeError,
)

#: The largest JSON answer read (``/object_info`` of a big install is a few MiB).
JSON_CAP = 32 * 1024 * 1024
#: The largest image ``view`` reads.
IMAGE_CAP = 64 * 1024 * 1024
#: The websocket drops messages over this many bytes (previews are far smaller).
WS_MAX_PAYLOAD = 16 * 1024 * 1024
_USER_AGENT = "Sandstorm"


# -- errors ------------------------------------------------------------------------------------


class ServerError(SandstormError):
    """The server is unreachable or misbehaved: the job goes back to the queue."""

    retryable = True


class AuthError(ServerError):
    """The server (or the proxy in front of it) refused the access token."""

    retryable = False


class ServerRejected(SandstormError):
    """The server understood the job and refused it: running it again there will not help."""

    retryable = False


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """One ComfyUI server as the user set it up. ``url`` is normalised by ``normalize_url``
    before it gets here; ``token`` is sent as ``Authorization: Bearer`` and shown nowhere."""

    url: str
    token: str = field(default="", repr=False)
    verify_tls: bool = True
    name: str = ""

    @property
    def label(self) -> str:
        """What the user sees: the name, or host:port."""
        if self.name.strip():
            return self.name.strip()
        parts = urllib.parse.urlsplit(self.url)
        return parts.netloc or self.url

    def __repr__(self) -> str:
        token = ", token=<set>" if self.token else ""
        return (
            f"ServerConfig(url={self.url!r}{token}, verify_tls={self.verify_tls}, "
            f"name={self.name!r})"
        )

    __str__ = __repr__


def normalize_url(text: str) -> str:
    """``text`` as a server address: ``scheme://host[:port][/path]``, lower-case scheme and
    host, no trailing slash, the scheme's default port left out.

    Raises:
        RequestError: not http:// or https://, no host, a bad port, credentials, a query
            or a fragment in it.
    """
    text = text.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise RequestError(f"This server address is not valid ({exc}): {text[:100]}") from exc
    scheme = parts.scheme.lower()
    if port == 0:
        raise RequestError(f"This server address has port 0: {text[:100]}")
    if scheme not in ("http", "https") or "://" not in text:
        raise RequestError(f"Only http:// and https:// server addresses are allowed: {text[:100]}")
    if parts.username is not None or parts.password is not None:
        # Not echoed: the address holds a password.
        raise RequestError(
            "A server address must not hold a user name or password; put an access token in "
            "the token field instead."
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise RequestError(f"This server address has no host name: {text[:100]}")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise RequestError(
            f"A server address cannot have a query (?…) or fragment (#…): {text[:100]}"
        )
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise RequestError(f"A server address cannot contain spaces: {text[:100]}")
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        shown = f"{shown}:{port}"
    return f"{scheme}://{shown}{parts.path.rstrip('/')}"


# -- what the server has -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerModels:
    """The model files and sampler names a server offers, as it spells them (path
    separators included): send them back unchanged."""

    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    vaes: tuple[str, ...] = ()
    controlnets: tuple[str, ...] = ()
    upscale_models: tuple[str, ...] = ()
    samplers: tuple[str, ...] = ()
    schedulers: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()


#: ServerModels field -> (node class, input name) it is read from.
MODEL_INPUTS: dict[str, tuple[str, str]] = {
    "checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
    "loras": ("LoraLoader", "lora_name"),
    "vaes": ("VAELoader", "vae_name"),
    "controlnets": ("ControlNetLoader", "control_net_name"),
    "upscale_models": ("UpscaleModelLoader", "model_name"),
    "samplers": ("KSampler", "sampler_name"),
    "schedulers": ("KSampler", "scheduler"),
}


# -- websocket events --------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewFrame:
    """A preview image from the websocket: ``format`` is "JPEG", "PNG" or "WEBP", ``data``
    the encoded image (not decoded here), ``metadata`` the JSON header of a type 4 frame
    (``prompt_id``, ``node_id``, ...; empty for the plain type 1 frame)."""

    format: str
    data: bytes
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


#: What ``parse_event`` returns.
Event: TypeAlias = "dict[str, Any] | PreviewFrame | None"

#: Binary event types (ComfyUI's protocol.BinaryEventTypes).
BINARY_PREVIEW = 1
BINARY_PREVIEW_WITH_METADATA = 4
_PREVIEW_FORMATS = {1: "JPEG", 2: "PNG"}
_MIME_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def parse_event(opcode: int, payload: bytes) -> Event:
    """One websocket message: a dict for JSON text, a ``PreviewFrame`` for a preview image,
    None for anything else (malformed JSON, unknown binary events). Never raises."""
    if opcode == OP_TEXT:
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        return message if isinstance(message, dict) else None
    if opcode != OP_BINARY or len(payload) < 8:
        return None
    (event,) = struct.unpack_from(">I", payload)
    if event == BINARY_PREVIEW:
        image_format = _PREVIEW_FORMATS.get(struct.unpack_from(">I", payload, 4)[0])
        return PreviewFrame(image_format, payload[8:]) if image_format else None
    if event == BINARY_PREVIEW_WITH_METADATA:
        return _preview_with_metadata(payload)
    return None


def _preview_with_metadata(payload: bytes) -> PreviewFrame | None:
    """Type 4: a 4-byte big-endian length, that many bytes of JSON, then the image."""
    (length,) = struct.unpack_from(">I", payload, 4)
    if 8 + length > len(payload):
        return None
    try:
        metadata = json.loads(payload[8 : 8 + length])
    except (ValueError, RecursionError):
        return None
    if not isinstance(metadata, dict):
        return None
    image_format = _MIME_FORMATS.get(str(metadata.get("image_type", "")).lower())
    if image_format is None:
        return None
    return PreviewFrame(image_format, payload[8 + length :], metadata)


# -- checking images ---------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete PNG, JPEG or WebP file; None when it is one.

    Only the container is checked (all PNG chunks up to IEND, the JPEG end marker, the
    RIFF length), which is what a cut-off transfer breaks; decoding is the caller's job.
    """
    if data.startswith(_PNG_SIGNATURE):
        return _png_problem(data)
    if data.startswith(b"\xff\xd8"):
        return None if data.rstrip(b"\0").endswith(b"\xff\xd9") else "the JPEG is cut off"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        (size,) = struct.unpack_from("<I", data, 4)
        return None if len(data) >= size + 8 else "the WebP is cut off"
    return "it is not a PNG, JPEG or WebP image"


def _png_problem(data: bytes) -> str | None:
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if pos > len(data):
            break
        if kind == b"IEND":
            return None
    return "the PNG is cut off"


# -- the client --------------------------------------------------------------------------------


def _node_errors_summary(reply: Any) -> str:
    """One sentence out of a ``/prompt`` 400 reply (``error`` and ``node_errors``)."""
    parts: list[str] = []
    node_errors = reply.get("node_errors") if isinstance(reply, dict) else None
    if isinstance(node_errors, dict):
        for node_id, node in sorted(node_errors.items(), key=lambda item: str(item[0])):
            if not isinstance(node, dict):
                continue
            class_type = _clip(node.get("class_type") or f"node {node_id}")
            for error in node.get("errors") or []:
                if isinstance(error, dict):
                    parts.append(f"{class_type} {_describe_error(error)}")
    if not parts:
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict):
            text = _clip(error.get("message") or error.get("type") or "")
            details = _clip(error.get("details") or "")
            parts.append(f"{text} ({details})" if text and details else text or details)
        elif isinstance(error, str):
            parts.append(_clip(error))
    summary = "; ".join(p for p in parts[:4] if p) or "the graph is not valid there"
    if len(parts) > 4:
        summary += f"; and {len(parts) - 4} more"
    return f"The server refused the job: {summary.rstrip('.')}."


def _describe_error(error: dict[str, Any]) -> str:
    extra = error.get("extra_info")
    if not isinstance(extra, dict):
        extra = {}
    input_name = _clip(extra.get("input_name") or "")
    if error.get("type") == "value_not_in_list" and input_name:
        return f"{input_name} {_clip(extra.get('received_value'))!r} is not in its list"
    message = _clip(error.get("message") or error.get("type") or "error")
    details = _clip(error.get("details") or "")
    text = f"{input_name}: {message}" if input_name else message
    return f"{text} ({details})" if details and details != message else text


def _clip(value: Any, limit: int = 120) -> str:
    """A server-provided value as short printable text."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ComfyClient:
    """The API of one ComfyUI server. Thread-safe: every call opens its own connection.

    Every method raises ``ServerError`` (or ``AuthError``) when the server cannot be
    reached or misbehaves; ``queue_prompt`` and ``upload_image`` also raise
    ``ServerRejected``. ``timeout`` (seconds) bounds each network operation. Raises
    ``RequestError`` at once when ``config.url`` is not a valid server address.
    """

    def __init__(self, config: ServerConfig, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        parts = urllib.parse.urlsplit(normalize_url(config.url))
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._secure else 80)
        self._prefix = parts.path
        self._ssl = self._ssl_context(config.verify_tls) if self._secure else None

    def __repr__(self) -> str:
        return f"ComfyClient({self.config!r})"

    @staticmethod
    def _ssl_context(verify: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not verify:  # the user trusts this server's self-signed certificate
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # -- discovery ---------------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        return self._json_dict("GET", "/system_stats")

    def version(self) -> str:
        """The server's ComfyUI version ("" when it does not say)."""
        system = self.system_stats().get("system")
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return _clip(version, 40) if isinstance(version, str) else ""

    def object_info(self, node: str | None = None) -> dict[str, Any]:
        """``/object_info`` (every node) or ``/object_info/{node}`` ({} when it lacks it)."""
        path = "/object_info" if node is None else f"/object_info/{_quote(node)}"
        return self._json_dict("GET", path)

    @staticmethod
    def choices(info: dict[str, Any], node: str, input_name: str) -> list[str]:
        """The names an input of ``node`` accepts, from an ``object_info`` answer; [] when
        the node or input is missing. Both shapes: ``[[names], {...}]`` and
        ``["COMBO", {"options": [names]}]``."""
        node_info = info.get(node)
        inputs = node_info.get("input") if isinstance(node_info, dict) else None
        if not isinstance(inputs, dict):
            return []
        for group in ("required", "optional"):
            section = inputs.get(group)
            spec = section.get(input_name) if isinstance(section, dict) else None
            if isinstance(spec, list) and spec:
                return _combo_names(spec)
        return []

    def models(self) -> ServerModels:
        """The server's models and sampler names (empty for a node it lacks)."""
        infos: dict[str, dict[str, Any]] = {}
        values: dict[str, tuple[str, ...]] = {}
        for field_name, (node, input_name) in MODEL_INPUTS.items():
            if node not in infos:
                infos[node] = self.object_info(node)
            values[field_name] = tuple(self.choices(infos[node], node, input_name))
        return ServerModels(**values, embeddings=self._embeddings())

    def _embeddings(self) -> tuple[str, ...]:
        """``/embeddings`` (names without extension); () when the server has no such route."""
        status, data = self._request("GET", "/embeddings", missing_ok=True)
        if status == 404:
            return ()
        names = self._parse_json("/embeddings", data)
        if not isinstance(names, list):
            self._bad_answer("/embeddings", "it is not a list")
        return tuple(name for name in names if isinstance(name, str))

    # -- jobs --------------------------------------------------------------------------------

    def upload_image(self, data: bytes, filename: str) -> str:
        """Upload an input image (overwriting one of the same name); returns the name to
        put in ``LoadImage``'s ``image`` input ("subfolder/name" when the server chose a
        subfolder). ``filename`` must be a plain file name."""
        if not filename or any(c in filename for c in '/\\"\r\n\0') or filename in (".", ".."):
            raise RequestError(f"Cannot upload an image under the name {filename[:80]!r}.")
        boundary = uuid.uuid4().hex
        body = _multipart(
            boundary,
            {"type": "input", "subfolder": "", "overwrite": "true"},
            ("image", filename, data),
        )
        reply = self._json_dict(
            "POST", "/upload/image", body, f"multipart/form-data; boundary={boundary}"
        )
        name, subfolder = reply.get("name"), reply.get("subfolder") or ""
        if not isinstance(name, str) or not name or not isinstance(subfolder, str):
            self._bad_answer("/upload/image", "it names no file")
        return f"{subfolder}/{name}" if subfolder else name

    def queue_prompt(
        self, graph: dict[str, Any], client_id: str, prompt_id: str, extra: dict | None = None
    ) -> dict[str, Any]:
        """Queue ``graph`` (API format) as ``prompt_id``; its events go to the websocket of
        ``client_id``. ``extra`` is sent as ``extra_data``. Returns the server's reply
        (``prompt_id``, ``number``, ``node_errors``).

        Raises:
            ServerRejected: the server refused the graph (the message names the input).
        """
        body = {
            "prompt": graph,
            "client_id": client_id,
            "prompt_id": prompt_id,
            "extra_data": dict(extra or {}),
        }
        return self._json_dict("POST", "/prompt", _json_body(body), "application/json")

    def interrupt(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` if it is running (never another user's job: the id is required,
        because ``/interrupt`` without one stops whatever runs)."""
        if not prompt_id:
            raise RequestError("Interrupting a job needs its prompt id.")
        self._request("POST", "/interrupt", _json_body({"prompt_id": prompt_id}))

    def delete_queued(self, prompt_ids: list[str]) -> None:
        """Take waiting prompts out of the queue (running ones are not touched)."""
        if prompt_ids:
            self._request("POST", "/queue", _json_body({"delete": list(prompt_ids)}))

    def queue(self) -> dict[str, list[str]]:
        """The ids of the running and the waiting prompts, all users' alike:
        ``{"queue_running": [...], "queue_pending": [...]}`` (pending in queue order)."""
        reply = self._json_dict("GET", "/queue")
        return {
            "queue_running": _queue_ids(reply.get("queue_running")),
            "queue_pending": _queue_ids(reply.get("queue_pending")),
        }

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt (``outputs``, ``status``); None while it
        is queued or running, and after a server restart."""
        reply = self._json_dict("GET", f"/history/{_quote(prompt_id)}")
        entry = reply.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """An output image's bytes, checked to be a complete PNG, JPEG or WebP. The names
        come from the server (``executed`` events, history) and go back to it unchanged."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        _, data = self._request("GET", f"/view?{query}", cap=IMAGE_CAP)
        problem = image_problem(data)
        if problem is not None:
            raise ServerError(f"{self.config.label} sent a broken image: {problem}.")
        return data

    def open_websocket(self, client_id: str, timeout: float = 10.0) -> WebSocket:
        """A websocket on ``/ws?clientId=…`` that receives the events of ``client_id``'s
        prompts (messages over ``WS_MAX_PAYLOAD`` bytes are skipped)."""
        scheme = "wss" if self._secure else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        query = urllib.parse.urlencode({"clientId": client_id})
        url = f"{scheme}://{host}:{self._port}{self._prefix}/ws?{query}"
        try:
            return WebSocket.connect_url(
                url,
                headers=self._auth_headers(),
                timeout=timeout,
                ssl_context=self._ssl,
                max_payload=WS_MAX_PAYLOAD,
            )
        except WebSocketHandshakeError as exc:
            if exc.status in (401, 403):
                self._auth_failed(exc.status)
            raise ServerError(
                f"{self.config.label} did not open a websocket: {_clip(exc)}."
            ) from exc
        except OSError as exc:
            raise self._connection_error(exc, "/ws") from exc

    # -- HTTP --------------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    def _connection(self) -> http.client.HTTPConnection:
        if self._secure:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        cap: int | None = None,
        missing_ok: bool = False,
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx answer (or a 404 when ``missing_ok``); raises otherwise.
        ``cap``: the most bytes read (``JSON_CAP`` by default)."""
        headers = {"User-Agent": _USER_AGENT, **self._auth_headers()}
        if body is not None:
            headers["Content-Type"] = content_type
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = self._read(response, path, JSON_CAP if cap is None else cap)
        except (OSError, http.client.HTTPException) as exc:
            raise self._connection_error(exc, path) from exc
        finally:
            conn.close()
        status = response.status
        if 200 <= status < 300 or (missing_ok and status == 404):
            return status, data
        self._status_error(status, path, data)

    def _read(self, response: http.client.HTTPResponse, path: str, cap: int) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit():
            if int(length) > cap:
                self._too_big(path, cap)
            return response.read()  # IncompleteRead when the connection ends early
        data = response.read(cap + 1)
        if len(data) > cap:
            self._too_big(path, cap)
        return data

    def _json_dict(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        _, data = self._request(method, path, body, content_type)
        reply = self._parse_json(path, data)
        if not isinstance(reply, dict):
            self._bad_answer(path, "it is not a JSON object")
        return reply

    def _parse_json(self, path: str, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            self._bad_answer(path, "it is not valid JSON")

    def _status_error(self, status: int, path: str, data: bytes) -> NoReturn:
        if status in (401, 403):
            self._auth_failed(status)
        route = path.split("?", 1)[0]
        if status == 400 and route == "/prompt":
            try:
                reply = json.loads(data)
            except (ValueError, RecursionError):
                reply = {}
            raise ServerRejected(_node_errors_summary(reply))
        if status in (400, 413) and route == "/upload/image":
            raise ServerRejected(f"{self.config.label} refused an uploaded image (HTTP {status}).")
        raise ServerError(f"{self.config.label} answered {route} with HTTP {status}.")

    def _auth_failed(self, status: int | None) -> NoReturn:
        raise AuthError(
            f"{self.config.label} refused the connection (HTTP {status}): check the access "
            "token in the server settings."
        )

    def _too_big(self, path: str, cap: int) -> NoReturn:
        raise ServerError(
            f"{self.config.label} sent more than {cap // 2**20} MiB for {path.split('?')[0]}."
        )

    def _bad_answer(self, path: str, why: str) -> NoReturn:
        raise ServerError(
            f"{self.config.label} sent a malformed answer to {path.split('?')[0]}: {why}."
        )

    def _connection_error(self, exc: BaseException, path: str) -> ServerError:
        """The ``ServerError`` for a failed connection, in words for the user."""
        label, route = self.config.label, path.split("?")[0]
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = _clip(exc.verify_message or exc.reason or exc)
            return ServerError(
                f"The TLS certificate of {label} could not be verified ({why}). If it is "
                "your own server with a self-signed certificate, turn off certificate "
                "checking for it."
            )
        if isinstance(exc, ssl.SSLError):
            return ServerError(
                f"The TLS connection to {label} failed ({_clip(exc.reason or exc)}); is it "
                "an https:// server?"
            )
        if isinstance(exc, TimeoutError):
            what = "a TLS connection" if self._secure else "an answer"
            return ServerError(f"{label} did not give {what} to {route} within {self.timeout:g} s.")
        if isinstance(exc, ConnectionRefusedError):
            return ServerError(f"{label} refused the connection; is the server running?")
        if isinstance(exc, (ConnectionError, http.client.HTTPException)):
            return ServerError(f"{label} broke off the connection during {route} ({_clip(exc)}).")
        return ServerError(f"Cannot reach {label} ({_clip(exc)}).")


def _combo_names(spec: list[Any]) -> list[str]:
    if isinstance(spec[0], list):
        names = spec[0]
    elif spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        names = spec[1].get("options") or []
    else:
        return []
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def _queue_ids(items: Any) -> list[str]:
    """Prompt ids of ``/queue`` items ([number, prompt_id, graph, extra, outputs]), sorted by
    number (the server keeps its pending queue as a heap)."""
    if not isinstance(items, list):
        return []
    rows = [i for i in items if isinstance(i, list) and len(i) > 1 and isinstance(i[1], str)]

    def number(row: list[Any]) -> float:
        return float(row[0]) if isinstance(row[0], (int, float)) else 0.0

    return [row[1] for row in sorted(rows, key=number)]


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _multipart(boundary: str, fields: dict[str, str], file: tuple[str, str, bytes]) -> bytes:
    """A multipart/form-data body with text ``fields`` and one file (field, name, data)."""
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    field_name, filename, data = file
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)
