"""A fake ComfyUI server for fast tests: HTTP and the ``/ws`` websocket on one port.

    with FakeComfy(checkpoints=["sd15.safetensors"], step_delay=0.01) as server:
        client = ComfyClient(ServerConfig(server.url))
        ...
        server.fail("drop_ws")   # the next step closes the job's websocket
        server.wait_until(lambda: "p1" in server.history)

It speaks the part of ComfyUI's protocol Sandstorm uses (see
``/work/shared/notes/comfyui-server.md``): ``/system_stats``, ``/object_info[/{node}]``,
``/embeddings``, ``/upload/image``, ``POST /prompt`` (validated: every node has a known
``class_type``, model, sampler and upload names are in their lists, there is an output
node; a 400 carries ``node_errors`` in ComfyUI's shape), ``GET``/``POST /queue``,
``/interrupt``, ``/history[/{id}]``, ``/view`` and ``/ws?clientId=``. One runner thread
executes one prompt at a time, sending ``execution_start``, ``execution_cached``,
``executing`` per node, ``progress`` per KSampler step with a binary JPEG preview (event 1,
or event 4 to a socket whose ``feature_flags`` asked for ``supports_preview_metadata``),
``executed``, ``execution_success`` and ``executing`` with node null, only to the websocket
of the prompt's ``client_id``. Output images are solid-colour PNGs of the size the graph
makes (``EmptyLatentImage`` width/height/batch_size, followed through scaling nodes); an
identical graph run twice is reported as cached, like ComfyUI does.

Faults (``fail(name, count=1)``; ``recover()`` ends them all):

* ``refuse``: the listening socket is closed (connection refused); ``recover`` listens
  again on the same port. Open connections stay open.
* ``hang``: new connections are accepted and never answered (client timeouts).
* ``restart``: now: every connection dropped, queue, history and temp images forgotten, the
  running job abandoned without a word; the server keeps listening (a process restart).
* ``drop_ws``: at the next KSampler step the job's websocket is closed; the job goes on
  and lands in ``/history`` (``count`` drops, one per step).
* ``http500``: the next ``count`` requests (the websocket upgrade included) answer 500.
* ``garbage_json``: the next ``count`` JSON answers are malformed.
* ``truncated_image``: the next ``count`` ``/view`` answers hold half the file.
* ``oversized_preview``: the next ``count`` previews are one frame of ``size`` bytes
  (20 MiB by default).
* ``node_error``: the next ``count`` jobs fail in their KSampler (``execution_error``).

With ``token`` set every route answers 401 without ``Authorization: Bearer <token>``.
``ssl_context`` (a server context) serves https/wss instead. ``stop()`` joins every thread
the server started.
"""

from __future__ import annotations

import contextlib
import http
import io
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from desktop.engine.remote.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    encode_frame,
    parse_frame,
)

HOST = "127.0.0.1"
VERSION = "0.3.64"
DEFAULT_SAMPLERS = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "ddim",
    "uni_pc",
    "lcm",
)
DEFAULT_SCHEDULERS = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
)
FAULTS = (
    "refuse",
    "hang",
    "restart",
    "drop_ws",
    "http500",
    "garbage_json",
    "truncated_image",
    "oversized_preview",
    "node_error",
)
GARBAGE_JSON = b'{"exec_info": {"queue_remaining": 1'
#: Socket operations of the server give up after this long (a client that stopped reading).
IO_TIMEOUT = 10.0

_IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
_CROP = ["disabled", "center"]
# class_type -> (inputs, outputs, is an output node). An input is a type name, a list of
# choices, or "@list" for one of the server's configurable lists (validated on /prompt).
_NODES: dict[str, tuple[dict[str, Any], tuple[str, ...], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": "@checkpoints"}, ("MODEL", "CLIP", "VAE"), False),
    "CLIPSetLastLayer": ({"clip": "CLIP", "stop_at_clip_layer": "INT"}, ("CLIP",), False),
    "LoraLoader": (
        {
            "model": "MODEL",
            "clip": "CLIP",
            "lora_name": "@loras",
            "strength_model": "FLOAT",
            "strength_clip": "FLOAT",
        },
        ("MODEL", "CLIP"),
        False,
    ),
    "CLIPTextEncode": ({"text": "STRING", "clip": "CLIP"}, ("CONDITIONING",), False),
    "ConditioningConcat": (
        {"conditioning_to": "CONDITIONING", "conditioning_from": "CONDITIONING"},
        ("CONDITIONING",),
        False,
    ),
    "EmptyLatentImage": (
        {"width": "INT", "height": "INT", "batch_size": "INT"},
        ("LATENT",),
        False,
    ),
    "EmptyImage": (
        {"width": "INT", "height": "INT", "batch_size": "INT", "color": "INT"},
        ("IMAGE",),
        False,
    ),
    "KSampler": (
        {
            "model": "MODEL",
            "seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": "@samplers",
            "scheduler": "@schedulers",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "denoise": "FLOAT",
        },
        ("LATENT",),
        False,
    ),
    "VAELoader": ({"vae_name": "@vaes"}, ("VAE",), False),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",), False),
    "VAEEncode": ({"pixels": "IMAGE", "vae": "VAE"}, ("LATENT",), False),
    "VAEEncodeForInpaint": (
        {"pixels": "IMAGE", "vae": "VAE", "mask": "MASK", "grow_mask_by": "INT"},
        ("LATENT",),
        False,
    ),
    "SetLatentNoiseMask": ({"samples": "LATENT", "mask": "MASK"}, ("LATENT",), False),
    "LatentCompositeMasked": (
        {
            "destination": "LATENT",
            "source": "LATENT",
            "x": "INT",
            "y": "INT",
            "resize_source": "BOOLEAN",
        },
        ("LATENT",),
        False,
    ),
    "LatentUpscale": (
        {
            "samples": "LATENT",
            "upscale_method": _LATENT_METHODS,
            "width": "INT",
            "height": "INT",
            "crop": _CROP,
        },
        ("LATENT",),
        False,
    ),
    "LatentUpscaleBy": (
        {"samples": "LATENT", "upscale_method": _LATENT_METHODS, "scale_by": "FLOAT"},
        ("LATENT",),
        False,
    ),
    "LoadImage": ({"image": "@uploads"}, ("IMAGE", "MASK"), False),
    "LoadImageMask": (
        {"image": "@uploads", "channel": ["alpha", "red", "green", "blue"]},
        ("MASK",),
        False,
    ),
    "ImageBatch": ({"image1": "IMAGE", "image2": "IMAGE"}, ("IMAGE",), False),
    "ImageScale": (
        {
            "image": "IMAGE",
            "upscale_method": _IMAGE_METHODS,
            "width": "INT",
            "height": "INT",
            "crop": _CROP,
        },
        ("IMAGE",),
        False,
    ),
    "ImageScaleBy": (
        {"image": "IMAGE", "upscale_method": _IMAGE_METHODS, "scale_by": "FLOAT"},
        ("IMAGE",),
        False,
    ),
    "ImageCompositeMasked": (
        {
            "destination": "IMAGE",
            "source": "IMAGE",
            "x": "INT",
            "y": "INT",
            "resize_source": "BOOLEAN",
        },
        ("IMAGE",),
        False,
    ),
    "ControlNetLoader": ({"control_net_name": "@controlnets"}, ("CONTROL_NET",), False),
    "ControlNetApplyAdvanced": (
        {
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "control_net": "CONTROL_NET",
            "image": "IMAGE",
            "strength": "FLOAT",
            "start_percent": "FLOAT",
            "end_percent": "FLOAT",
        },
        ("CONDITIONING", "CONDITIONING"),
        False,
    ),
    "UpscaleModelLoader": ({"model_name": "@upscale_models"}, ("UPSCALE_MODEL",), False),
    "ImageUpscaleWithModel": (
        {"upscale_model": "UPSCALE_MODEL", "image": "IMAGE"},
        ("IMAGE",),
        False,
    ),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, (), True),
    "PreviewImage": ({"images": "IMAGE"}, (), True),
}
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
#: Factor ``ImageUpscaleWithModel`` scales by (the common 4x models).
MODEL_UPSCALE = 4
_MAX_SIDE = 2048


@dataclass
class SeenRequest:
    """One request the server read: ``headers`` have lower-case names."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Job:
    prompt_id: str
    number: int
    graph: dict[str, Any]
    client_id: str | None
    extra_data: dict[str, Any]
    outputs: list[str]
    interrupted: bool = False
    aborted: bool = False  # the server "restarted": forget it silently
    step: int = 0


@dataclass
class _WsConn:
    sock: socket.socket
    client_id: str
    features: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, opcode: int, payload: bytes) -> bool:
        try:
            with self.lock:
                self.sock.sendall(encode_frame(opcode, payload, mask=False))
            return True
        except OSError:
            _shutdown(self.sock)
            return False

    def send_json(self, kind: str, data: dict[str, Any]) -> bool:
        return self.send(OP_TEXT, json.dumps({"type": kind, "data": data}).encode())


def _shutdown(sock: socket.socket) -> None:
    """Wake whatever thread is blocked on ``sock`` (its owner closes it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _now_ms() -> int:
    return int(time.time() * 1000)


def solid_png(width: int, height: int, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def solid_jpeg(
    width: int = 8, height: int = 8, color: tuple[int, int, int] = (30, 90, 200)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def self_signed_context(folder: Path) -> ssl.SSLContext | None:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (written to
    ``folder/cert.pem``, which a client can trust); None without the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class FakeComfy:
    """A fake ComfyUI server on 127.0.0.1 (see the module docstring).

    Recorded for assertions: ``prompts`` (accepted ``/prompt`` bodies: prompt_id, graph,
    client_id, extra_data, number), ``rejected`` (refused ones), ``interrupts`` (prompt ids
    asked to stop, None for a global interrupt), ``deleted`` (ids asked to leave the
    queue), ``uploads`` (name -> bytes), ``requests`` (``SeenRequest``), ``history``,
    ``loaded_checkpoint`` (the last one a job loaded; ComfyUI has no API for it).
    """

    def __init__(
        self,
        *,
        checkpoints: Iterable[str] = ("model.safetensors",),
        loras: Iterable[str] = (),
        vaes: Iterable[str] = (),
        controlnets: Iterable[str] = (),
        upscale_models: Iterable[str] = (),
        embeddings: Iterable[str] = (),
        samplers: Iterable[str] = DEFAULT_SAMPLERS,
        schedulers: Iterable[str] = DEFAULT_SCHEDULERS,
        token: str = "",
        step_delay: float = 0.0,
        combo_style: str = "list",
        missing_nodes: Iterable[str] = (),
        preview: bool = True,
        version: str = VERSION,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if combo_style not in ("list", "combo"):
            raise ValueError("combo_style is 'list' ([[names], {}]) or 'combo' (COMBO/options)")
        self.lists: dict[str, list[str]] = {
            "checkpoints": list(checkpoints),
            "loras": list(loras),
            "vaes": list(vaes),
            "controlnets": list(controlnets),
            "upscale_models": list(upscale_models),
            "samplers": list(samplers),
            "schedulers": list(schedulers),
        }
        self.embeddings = list(embeddings)
        self.token = token
        self.step_delay = step_delay
        self.combo_style = combo_style
        self.missing_nodes = set(missing_nodes)
        self.preview = preview
        self.version = version
        self.ssl_context = ssl_context
        self.port = 0
        # recorded for assertions
        self.prompts: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.interrupts: list[str | None] = []
        self.deleted: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.requests: list[SeenRequest] = []
        self.history: dict[str, dict[str, Any]] = {}
        self.loaded_checkpoint: str | None = None
        # state
        self._cond = threading.Condition(threading.RLock())
        self._pending: deque[_Job] = deque()
        self._running: _Job | None = None
        self._number = 0
        self._files: dict[tuple[str, str, str], bytes] = {}
        self._image_counter = 0
        self._last_run: tuple[str, dict[str, Any]] | None = None  # graph json, outputs
        self._sockets: dict[str, _WsConn] = {}  # client id -> its (latest) websocket
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._listener_lock = threading.Lock()
        self._faults: dict[str, int] = {}
        self._oversize = 20 * 2**20
        self._hanging = False
        self._release_hung = threading.Event()
        self._stopping = False
        self._started = False

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def start(self) -> FakeComfy:
        if self._started:
            raise RuntimeError("FakeComfy.start() called twice")
        self._started = True
        self._listen()
        self._spawn(self._accept_loop, "fake-comfy-accept")
        self._spawn(self._run_jobs, "fake-comfy-runner")
        return self

    def stop(self) -> None:
        """Stop serving and join every thread (connections are dropped)."""
        with self._cond:
            if not self._started or self._stopping:
                return
            self._stopping = True
            for job in [*self._pending, *filter(None, [self._running])]:
                job.aborted = True
            self._cond.notify_all()
        self._release_hung.set()
        self._threads[0].join(5.0)  # the acceptor first: no new connections after it
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)
        for thread in self._threads:
            thread.join(10.0)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"FakeComfy threads did not stop: {alive}")

    def __enter__(self) -> FakeComfy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name)
        self._threads = [t for t in self._threads[:2]] + [
            t for t in self._threads[2:] if t.is_alive()
        ]
        self._threads.append(thread)
        thread.start()

    def _listen(self) -> None:
        listener = socket.create_server((HOST, self.port))  # SO_REUSEADDR on POSIX
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        with self._listener_lock:
            self._listener = listener

    def _accept_loop(self) -> None:
        while not self._stopping:
            with self._listener_lock:
                listener = self._listener
                conn = None
                if listener is not None:
                    with contextlib.suppress(TimeoutError, OSError):
                        conn, _ = listener.accept()
            if listener is None:
                time.sleep(0.02)
                continue
            if conn is None:
                continue
            with self._cond:
                if self._stopping:
                    conn.close()
                    break
                self._conns.add(conn)
            self._spawn(self._serve, "fake-comfy-conn", conn)
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    # -- faults -------------------------------------------------------------------------------

    def fail(self, fault: str, count: int = 1, *, size: int = 20 * 2**20) -> None:
        """Inject ``fault`` (see the module docstring); ``size`` is for oversized_preview."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        if fault == "refuse":
            with self._listener_lock:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
        elif fault == "hang":
            self._release_hung.clear()
            self._hanging = True
        elif fault == "restart":
            self._restart()
        else:
            with self._cond:
                self._faults[fault] = count
                if fault == "oversized_preview":
                    self._oversize = size

    def recover(self) -> None:
        """End every fault: listen again (same port), release hung connections."""
        with self._cond:
            self._faults.clear()
        self._hanging = False
        self._release_hung.set()
        with self._listener_lock:
            missing = self._listener is None
        if missing and not self._stopping:
            self._listen()

    def _take(self, fault: str) -> bool:
        """Use up one occurrence of a counted fault; True when it was armed."""
        with self._cond:
            left = self._faults.get(fault, 0)
            if left <= 0:
                return False
            self._faults[fault] = left - 1
            return True

    def _restart(self) -> None:
        with self._cond:
            for job in [*self._pending, *filter(None, [self._running])]:
                job.aborted = True
            self._pending.clear()
            self.history.clear()
            self._files = {k: v for k, v in self._files.items() if k[0] != "temp"}
            self._last_run = None
            self._number = 0
            self.loaded_checkpoint = None
            self._sockets.clear()
            conns = list(self._conns)
            self._cond.notify_all()
        for conn in conns:
            _shutdown(conn)

    # -- waiting and state ------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` (checked under the server's lock) holds."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"FakeComfy: condition not met within {timeout} s")

    @property
    def running(self) -> str | None:
        with self._cond:
            return self._running.prompt_id if self._running else None

    @property
    def pending(self) -> list[str]:
        with self._cond:
            return [job.prompt_id for job in self._pending]

    @property
    def step(self) -> int:
        """The step the running job has reached (0 when none runs)."""
        with self._cond:
            return self._running.step if self._running else 0

    @property
    def websocket_clients(self) -> list[str]:
        with self._cond:
            return list(self._sockets)

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- HTTP ---------------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        sock = conn
        try:
            if self._hanging:
                self._release_hung.wait()
                return
            sock.settimeout(IO_TIMEOUT)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(conn, server_side=True)
                with self._cond:
                    self._conns.discard(conn)
                    self._conns.add(sock)
            request = self._read_request(sock)
            if request is not None:
                self._handle(sock, request)
        except (OSError, ValueError):
            pass  # the client went away or sent nonsense: nothing to answer
        finally:
            with self._cond:
                self._conns.discard(conn)
                self._conns.discard(sock)
                self._cond.notify_all()
            with contextlib.suppress(OSError):
                sock.close()

    def _read_request(self, sock: socket.socket) -> SeenRequest | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
            if data[:1] == b"\x16":  # a TLS ClientHello on plain HTTP: say so, like aiohttp
                self._respond(sock, 400, b"Bad Request", "text/plain")
                _drain(sock)
                return None
            if len(data) > 65536:
                self._respond(sock, 431, b"", "text/plain")
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = sock.recv(min(1 << 20, length - len(body)))
            if not chunk:
                return None
            body += chunk
        parts = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        request = SeenRequest(method.upper(), parts.path, query, headers, body[:length])
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        return request

    def _respond(
        self, sock: socket.socket, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        reason = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)

    def _json(self, sock: socket.socket, value: Any, status: int = 200) -> None:
        body = GARBAGE_JSON if self._take("garbage_json") else json.dumps(value).encode()
        self._respond(sock, status, body)

    def _handle(self, sock: socket.socket, request: SeenRequest) -> None:
        if self._take("http500"):
            self._respond(sock, 500, b"500 Internal Server Error", "text/plain")
            return
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            self._respond(sock, 401, b'{"error": "unauthorized"}')
            return
        path, method = request.path, request.method
        if method == "GET" and path == "/ws":
            self._websocket(sock, request)
            return
        route = self._route(method, path)
        if route is None:
            self._respond(sock, 404, b"404: Not Found", "text/plain")
            return
        route(sock, request)

    def _route(self, method: str, path: str) -> Callable[[socket.socket, SeenRequest], None] | None:
        routes: dict[tuple[str, str], Callable[[socket.socket, SeenRequest], None]] = {
            ("GET", "/system_stats"): self._system_stats,
            ("GET", "/object_info"): self._object_info,
            ("GET", "/embeddings"): lambda s, r: self._json(s, list(self.embeddings)),
            ("GET", "/queue"): self._get_queue,
            ("POST", "/queue"): self._post_queue,
            ("POST", "/prompt"): self._post_prompt,
            ("POST", "/interrupt"): self._interrupt,
            ("POST", "/upload/image"): self._upload,
            ("GET", "/history"): self._history,
            ("GET", "/view"): self._view,
        }
        if method == "GET" and path.startswith("/object_info/"):
            return self._object_info
        if method == "GET" and path.startswith("/history/"):
            return self._history
        return routes.get((method, path))

    def _system_stats(self, sock: socket.socket, request: SeenRequest) -> None:
        self._json(
            sock,
            {
                "system": {
                    "os": "posix",
                    "ram_total": 8 * 2**30,
                    "ram_free": 4 * 2**30,
                    "comfyui_version": self.version,
                    "python_version": "3.11.7",
                    "pytorch_version": "2.5.0",
                    "embedded_python": False,
                    "argv": ["main.py", "--fake"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            },
        )

    def _object_info(self, sock: socket.socket, request: SeenRequest) -> None:
        if request.path.startswith("/object_info/"):
            name = urllib.parse.unquote(request.path[len("/object_info/") :])
            names = [name] if self._has_node(name) else []
        else:
            names = [n for n in _NODES if self._has_node(n)]
        self._json(sock, {name: self._node_info(name) for name in names})

    def _has_node(self, name: str) -> bool:
        return name in _NODES and name not in self.missing_nodes

    def _choices(self, source: str) -> list[str]:
        if source == "@uploads":
            with self._cond:
                return sorted(self.uploads)
        return list(self.lists[source[1:]])

    def _input_spec(self, spec: Any) -> list[Any]:
        if isinstance(spec, str) and spec.startswith("@"):
            names = self._choices(spec)
            options: dict[str, Any] = {"image_upload": True} if spec == "@uploads" else {}
        elif isinstance(spec, list):
            names, options = list(spec), {}
        else:
            defaults = {"INT": {"default": 0}, "FLOAT": {"default": 1.0}}
            return [spec, defaults.get(spec, {})] if spec in defaults else [spec]
        if self.combo_style == "list":
            return [names, options]
        return ["COMBO", {**options, "options": names}]

    def _node_info(self, name: str) -> dict[str, Any]:
        inputs, outputs, output_node = _NODES[name]
        return {
            "input": {"required": {k: self._input_spec(v) for k, v in inputs.items()}},
            "input_order": {"required": list(inputs)},
            "output": list(outputs),
            "output_is_list": [False] * len(outputs),
            "output_name": list(outputs),
            "name": name,
            "display_name": name,
            "description": "",
            "python_module": "nodes",
            "category": "fake",
            "output_node": output_node,
        }

    def _get_queue(self, sock: socket.socket, request: SeenRequest) -> None:
        def row(job: _Job) -> list[Any]:
            return [job.number, job.prompt_id, job.graph, job.extra_data, job.outputs]

        with self._cond:
            running = [row(self._running)] if self._running else []
            pending = [row(job) for job in self._pending]
        self._json(sock, {"queue_running": running, "queue_pending": pending})

    def _post_queue(self, sock: socket.socket, request: SeenRequest) -> None:
        body = _json_or_empty(request.body)
        with self._cond:
            if body.get("clear"):
                self._pending.clear()
            for prompt_id in body.get("delete") or []:
                self.deleted.append(str(prompt_id))
                self._pending = deque(j for j in self._pending if j.prompt_id != prompt_id)
            self._cond.notify_all()
        self._respond(sock, 200, b"")
        self._broadcast_status()

    def _interrupt(self, sock: socket.socket, request: SeenRequest) -> None:
        prompt_id = _json_or_empty(request.body).get("prompt_id")
        with self._cond:
            self.interrupts.append(str(prompt_id) if prompt_id else None)
            job = self._running
            if job is not None and (not prompt_id or job.prompt_id == prompt_id):
                job.interrupted = True
            self._cond.notify_all()
        self._respond(sock, 200, b"")

    def _history(self, sock: socket.socket, request: SeenRequest) -> None:
        with self._cond:
            if request.path.startswith("/history/"):
                prompt_id = urllib.parse.unquote(request.path[len("/history/") :])
                entry = self.history.get(prompt_id)
                reply = {prompt_id: entry} if entry else {}
            else:
                reply = dict(self.history)
        self._json(sock, reply)

    def _view(self, sock: socket.socket, request: SeenRequest) -> None:
        q = request.query
        key = (q.get("type") or "output", q.get("subfolder", ""), q.get("filename", ""))
        with self._cond:
            data = self._files.get(key)
        if data is None:
            self._respond(sock, 404, b"404: Not Found", "text/plain")
            return
        if self._take("truncated_image"):
            data = data[: len(data) // 2]
        self._respond(sock, 200, data, "image/png")

    def _upload(self, sock: socket.socket, request: SeenRequest) -> None:
        fields = _multipart(request.headers.get("content-type", ""), request.body)
        image = fields.get("image")
        if image is None or not image[0]:
            self._respond(sock, 400, b"", "text/plain")
            return
        name = image[0]
        subfolder = fields.get("subfolder", (None, b""))[1].decode()
        overwrite = fields.get("overwrite", (None, b""))[1].decode() in ("true", "1")
        with self._cond:
            stem, dot, ext = name.rpartition(".")
            n = 1
            while not overwrite and _join(subfolder, name) in self.uploads:
                name = f"{stem} ({n}){dot}{ext}" if dot else f"{ext} ({n})"
                n += 1
            self.uploads[_join(subfolder, name)] = image[1]
            self._cond.notify_all()
        self._json(sock, {"name": name, "subfolder": subfolder, "type": "input"})

    # -- prompts ------------------------------------------------------------------------------

    def _post_prompt(self, sock: socket.socket, request: SeenRequest) -> None:
        body = _json_or_empty(request.body)
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            error = {"type": "no_prompt", "message": "No prompt provided", "details": ""}
            self._reject(sock, body, {"error": {**error, "extra_info": {}}, "node_errors": {}})
            return
        problem = self._validate(graph)
        if problem is not None:
            self._reject(sock, body, problem)
            return
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        client_id = body.get("client_id")
        if client_id is not None:
            extra["client_id"] = client_id
        outputs = [i for i, node in graph.items() if _NODES[node["class_type"]][2]]
        with self._cond:
            number = -self._number if body.get("front") else self._number
            self._number += 1
            job = _Job(prompt_id, number, graph, client_id, extra, outputs)
            if body.get("front"):
                self._pending.appendleft(job)
            else:
                self._pending.append(job)
            self.prompts.append(
                {
                    "prompt_id": prompt_id,
                    "graph": graph,
                    "client_id": client_id,
                    "extra_data": extra,
                    "number": number,
                }
            )
            self._cond.notify_all()
        self._json(sock, {"prompt_id": prompt_id, "number": number, "node_errors": {}})
        self._broadcast_status()

    def _reject(self, sock: socket.socket, body: dict[str, Any], reply: dict[str, Any]) -> None:
        with self._cond:
            self.rejected.append({"body": body, "reply": reply})
            self._cond.notify_all()
        self._json(sock, reply, status=400)

    def _validate(self, graph: dict[str, Any]) -> dict[str, Any] | None:
        """ComfyUI's 400 reply for a graph it cannot run; None when it can."""
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return _invalid(
                    "Cannot execute because a node is missing the class_type property.", node_id
                )
            if not self._has_node(node["class_type"]):
                return _invalid(
                    f"Cannot execute because node {node['class_type']} does not exist.", node_id
                )
        outputs = [i for i, node in graph.items() if _NODES[node["class_type"]][2]]
        if not outputs:
            return _invalid("Prompt has no outputs", None, "prompt_no_outputs")
        node_errors: dict[str, Any] = {}
        for node_id, node in graph.items():
            errors = self._node_errors(node)
            if errors:
                node_errors[node_id] = {
                    "errors": errors,
                    "dependent_outputs": outputs,
                    "class_type": node["class_type"],
                }
        if not node_errors:
            return None
        details = "\n".join(
            f"{e['message']}: {e['details']}" for n in node_errors.values() for e in n["errors"]
        )
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return {"error": error, "node_errors": node_errors}

    def _node_errors(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        errors = []
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for name, spec in _NODES[node["class_type"]][0].items():
            value = inputs.get(name)
            if not (isinstance(spec, str) and spec.startswith("@")) or not isinstance(value, str):
                continue
            names = self._choices(spec)
            if value not in names:
                errors.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{value}' not in {names}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": [names, {}],
                            "received_value": value,
                        },
                    }
                )
        return errors

    # -- running prompts ----------------------------------------------------------------------

    def _run_jobs(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._pending:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                self._running = job
                self._cond.notify_all()
            try:
                self._execute(job)
            finally:
                with self._cond:
                    if self._running is job:
                        self._running = None
                    self._cond.notify_all()
            self._broadcast_status()

    def _execute(self, job: _Job) -> None:
        messages: list[tuple[str, dict[str, Any]]] = []

        def event(kind: str, **data: Any) -> None:
            data = {**data, "prompt_id": job.prompt_id, "timestamp": _now_ms()}
            messages.append((kind, data))
            self._send(job, kind, data)

        event("execution_start")
        key = json.dumps(job.graph, sort_keys=True)
        with self._cond:
            cached = self._last_run is not None and self._last_run[0] == key
            old_outputs = self._last_run[1] if self._last_run else {}
        event("execution_cached", nodes=list(job.graph) if cached else [])
        if cached:
            outputs = dict(old_outputs)
            for node_id, output in outputs.items():
                self._send(job, "executed", _executed(job, node_id, output))
            event("execution_success")
            self._finish(job, outputs, messages, True)
            return
        outputs = {}
        executed: list[str] = []
        failing = self._take("node_error")
        for node_id in _order(job.graph, job.outputs):
            if self._halted(job, 0):
                self._stopped(job, node_id, executed, outputs, messages, event)
                return
            node = job.graph[node_id]
            self._send(
                job,
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": job.prompt_id},
            )
            if node["class_type"] == "CheckpointLoaderSimple":
                with self._cond:
                    self.loaded_checkpoint = node["inputs"].get("ckpt_name")
            if node["class_type"] in _SAMPLER_NODES:
                if failing:
                    event(
                        "execution_error",
                        node_id=node_id,
                        node_type=node["class_type"],
                        executed=list(executed),
                        exception_message="The fake sampler failed on purpose.",
                        exception_type="RuntimeError",
                        traceback=["Traceback (fake)\n"],
                        current_inputs={},
                        current_outputs=list(executed),
                    )
                    self._finish(job, outputs, messages, False)
                    return
                if not self._sample(job, node_id, node):
                    self._stopped(job, node_id, executed, outputs, messages, event)
                    return
            if _NODES[node["class_type"]][2]:
                outputs[node_id] = {"images": self._make_images(job, node_id)}
                self._send(job, "executed", _executed(job, node_id, outputs[node_id]))
            executed.append(node_id)
        event("execution_success")
        with self._cond:
            if not job.aborted:
                self._last_run = (key, outputs)
        self._finish(job, outputs, messages, True)

    def _sample(self, job: _Job, node_id: str, node: dict[str, Any]) -> bool:
        """The KSampler steps, with progress and previews; False when halted."""
        steps = node["inputs"].get("steps")
        steps = steps if isinstance(steps, int) and steps > 0 else 1
        for step in range(1, steps + 1):
            if self._halted(job, self.step_delay):
                return False
            with self._cond:
                job.step = step
                self._cond.notify_all()
            self._send(
                job,
                "progress",
                {"value": step, "max": steps, "prompt_id": job.prompt_id, "node": node_id},
            )
            if self.preview:
                self._send_preview(job, node_id)
            if self._take("drop_ws"):
                with self._cond:
                    ws = self._sockets.pop(job.client_id or "", None)
                if ws is not None:
                    _shutdown(ws.sock)
        return True

    def _halted(self, job: _Job, delay: float) -> bool:
        """Wait ``delay`` s; True when the job was interrupted or abandoned meanwhile."""
        with self._cond:
            self._cond.wait_for(
                lambda: job.interrupted or job.aborted or self._stopping, timeout=delay
            )
            return job.interrupted or job.aborted or self._stopping

    def _stopped(
        self,
        job: _Job,
        node_id: str,
        executed: list[str],
        outputs: dict[str, Any],
        messages: list[tuple[str, dict[str, Any]]],
        event: Callable[..., None],
    ) -> None:
        if job.aborted or self._stopping:
            return  # a restart: the job is forgotten without a word
        event(
            "execution_interrupted",
            node_id=node_id,
            node_type=job.graph[node_id]["class_type"],
            executed=list(executed),
        )
        self._finish(job, outputs, messages, False)

    def _finish(
        self,
        job: _Job,
        outputs: dict[str, Any],
        messages: list[tuple[str, dict[str, Any]]],
        success: bool,
    ) -> None:
        """The history entry, then ``executing`` with node null (ComfyUI's order)."""
        with self._cond:
            if job.aborted:
                return
            self.history[job.prompt_id] = {
                "prompt": [job.number, job.prompt_id, job.graph, job.extra_data, job.outputs],
                "outputs": outputs,
                "status": {
                    "status_str": "success" if success else "error",
                    "completed": success,
                    "messages": [[kind, data] for kind, data in messages],
                },
                "meta": {node: {"node_id": node, "display_node": node} for node in outputs},
            }
            self._cond.notify_all()
        self._send(job, "executing", {"node": None, "prompt_id": job.prompt_id})

    def _make_images(self, job: _Job, node_id: str) -> list[dict[str, str]]:
        node = job.graph[node_id]
        width, height, count = self._size(job.graph, node["inputs"].get("images"), 0)
        kind = "output" if node["class_type"] == "SaveImage" else "temp"
        prefix = str(node["inputs"].get("filename_prefix") or "ComfyUI").replace("/", "_")
        images = []
        for index in range(count):
            crc = zlib.crc32(f"{job.prompt_id}:{index}".encode()).to_bytes(4, "big")
            data = solid_png(width, height, (crc[0], crc[1], crc[2]))
            with self._cond:
                self._image_counter += 1
                filename = f"{prefix}_{self._image_counter:05d}_.png"
                self._files[(kind, "", filename)] = data
            images.append({"filename": filename, "subfolder": "", "type": kind})
        return images

    def _size(self, graph: dict[str, Any], link: Any, depth: int) -> tuple[int, int, int]:
        """(width, height, batch) of the images or latent a link carries (latents are
        measured in pixels here)."""
        if depth > 64 or not (isinstance(link, list) and link and str(link[0]) in graph):
            return 64, 64, 1
        node = graph[str(link[0])]
        kind, inputs = node.get("class_type"), node.get("inputs") or {}

        def up(name: str) -> tuple[int, int, int]:
            return self._size(graph, inputs.get(name), depth + 1)

        def side(value: Any) -> int:
            return max(1, min(_MAX_SIDE, int(value))) if isinstance(value, (int, float)) else 64

        if kind in ("EmptyLatentImage", "EmptyImage"):
            batch = inputs.get("batch_size")
            batch = batch if isinstance(batch, int) and 0 < batch <= 64 else 1
            return side(inputs.get("width")), side(inputs.get("height")), batch
        if kind in ("LoadImage", "LoadImageMask"):
            return (*self._upload_size(inputs.get("image")), 1)
        if kind in ("LatentUpscale", "ImageScale"):
            source = "samples" if kind == "LatentUpscale" else "image"
            w, h, n = up(source)
            width, height = inputs.get("width") or 0, inputs.get("height") or 0
            if not width and not height:
                return w, h, n
            width = width or round(w * height / h)
            height = height or round(h * width / w)
            return side(width), side(height), n
        if kind in ("LatentUpscaleBy", "ImageScaleBy"):
            w, h, n = up("samples" if kind == "LatentUpscaleBy" else "image")
            scale = inputs.get("scale_by")
            scale = scale if isinstance(scale, (int, float)) and scale > 0 else 1
            return side(round(w * scale)), side(round(h * scale)), n
        if kind == "ImageUpscaleWithModel":
            w, h, n = up("image")
            return side(w * MODEL_UPSCALE), side(h * MODEL_UPSCALE), n
        if kind == "ImageBatch":
            w, h, n = up("image1")
            return w, h, n + up("image2")[2]
        follow = {
            "KSampler": "latent_image",
            "VAEDecode": "samples",
            "VAEEncode": "pixels",
            "VAEEncodeForInpaint": "pixels",
            "SetLatentNoiseMask": "samples",
            "LatentCompositeMasked": "destination",
            "ImageCompositeMasked": "destination",
        }.get(str(kind))
        if follow is not None:
            return up(follow)
        links = [v for _, v in sorted(inputs.items()) if isinstance(v, list)]
        return self._size(graph, links[0], depth + 1) if links else (64, 64, 1)

    def _upload_size(self, name: Any) -> tuple[int, int]:
        with self._cond:
            data = self.uploads.get(name) if isinstance(name, str) else None
        if data is None:
            return 64, 64
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except (OSError, ValueError):
            return 64, 64

    # -- websocket ----------------------------------------------------------------------------

    def _websocket(self, sock: socket.socket, request: SeenRequest) -> None:
        key = request.headers.get("sec-websocket-key", "")
        if request.headers.get("upgrade", "").lower() != "websocket" or not key:
            self._respond(sock, 400, b"websocket upgrade expected", "text/plain")
            return
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        ws = _WsConn(sock, client_id)
        with self._cond:
            self._sockets[client_id] = ws  # before the 101: events may follow at once
            remaining = len(self._pending) + (1 if self._running else 0)
            self._cond.notify_all()
        try:
            sock.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
                ).encode()
            )
            ws.send_json(
                "status",
                {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": client_id},
            )
            self._read_client_frames(ws)
        finally:
            with self._cond:
                if self._sockets.get(client_id) is ws:
                    del self._sockets[client_id]
                self._cond.notify_all()

    def _read_client_frames(self, ws: _WsConn) -> None:
        # Reads wait for ever (stop() and faults wake them with a shutdown); sends to a
        # client that stopped reading give up after IO_TIMEOUT.
        buf = b""
        while True:
            parsed = parse_frame(buf)
            if parsed is None:
                try:
                    chunk = ws.sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                continue
            _fin, opcode, payload, used = parsed
            buf = buf[used:]
            if opcode == OP_CLOSE:
                ws.send(OP_CLOSE, payload[:2])
                return
            if opcode == OP_PING:
                ws.send(OP_PONG, payload)
            elif opcode == OP_TEXT:
                message = _json_or_empty(payload)
                if message.get("type") == "feature_flags" and isinstance(message.get("data"), dict):
                    ws.features = dict(message["data"])
                    self._changed()

    def _send(self, job: _Job, kind: str, data: dict[str, Any]) -> None:
        """A JSON event to the websocket of the job's client (if it is connected)."""
        with self._cond:
            ws = self._sockets.get(job.client_id) if job.client_id and not job.aborted else None
        if ws is not None:
            ws.send_json(kind, data)

    def _send_preview(self, job: _Job, node_id: str) -> None:
        with self._cond:
            ws = self._sockets.get(job.client_id) if job.client_id and not job.aborted else None
        if ws is None:
            return
        if self._take("oversized_preview"):
            filler = bytes(max(0, self._oversize - 10))
            ws.send(OP_BINARY, struct.pack(">II", 1, 1) + b"\xff\xd8" + filler)
            return
        jpeg = _preview_jpeg()
        if ws.features.get("supports_preview_metadata"):
            metadata = json.dumps(
                {
                    "node_id": node_id,
                    "prompt_id": job.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/jpeg",
                }
            ).encode()
            ws.send(OP_BINARY, struct.pack(">II", 4, len(metadata)) + metadata + jpeg)
        else:
            ws.send(OP_BINARY, struct.pack(">II", 1, 1) + jpeg)

    def _broadcast_status(self) -> None:
        with self._cond:
            sockets = list(self._sockets.values())
            remaining = len(self._pending) + (1 if self._running else 0)
        for ws in sockets:
            ws.send_json("status", {"status": {"exec_info": {"queue_remaining": remaining}}})


# -- helpers -----------------------------------------------------------------------------------

_PREVIEW: list[bytes] = []


def _preview_jpeg() -> bytes:
    if not _PREVIEW:
        _PREVIEW.append(solid_jpeg())
    return _PREVIEW[0]


def _executed(job: _Job, node_id: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"node": node_id, "display_node": node_id, "output": output, "prompt_id": job.prompt_id}


def _order(graph: dict[str, Any], outputs: list[str]) -> list[str]:
    """Node ids in an order where every node comes after the nodes it takes inputs from."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str, depth: int) -> None:
        if node_id in seen or node_id not in graph or depth > 256:
            return
        seen.add(node_id)
        inputs = graph[node_id].get("inputs") or {}
        for value in inputs.values():
            if isinstance(value, list) and value:
                visit(str(value[0]), depth + 1)
        order.append(node_id)

    for node_id in outputs:
        visit(node_id, 0)
    return order


def _invalid(message: str, node_id: str | None, kind: str = "invalid_prompt") -> dict[str, Any]:
    details = f"Node ID '#{node_id}'" if node_id is not None else ""
    error = {"type": kind, "message": message, "details": details, "extra_info": {}}
    return {"error": error, "node_errors": {}}


def _json_or_empty(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _join(subfolder: str, name: str) -> str:
    return f"{subfolder}/{name}" if subfolder else name


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (file name or None, bytes)."""
    _, _, params = content_type.partition(";")
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        name, filename = None, None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, value = item.strip().partition("=")
                    if key == "name":
                        name = value.strip('"')
                    elif key == "filename":
                        filename = value.strip('"')
        if name is not None:
            fields[name] = (filename, data)
    return fields


def _drain(sock: socket.socket) -> None:
    """Read what the client still sends until it closes (so it sees our answer, not a
    reset), for at most a second."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        while sock.recv(65536):
            pass
