"""Time ComfyUI's own server on a checkpoint, for side-by-side numbers with Sandstorm.

ComfyUI is a separate program (GPL-3.0): it is started here as a server process and driven
through its public HTTP and websocket API, never imported. Each job is a plain txt2img graph
(checkpoint loader, two CLIP text encoders, empty latent, KSampler with Euler / normal,
VAE decode, save). From the websocket messages we take, per job:

* ``end_to_end_s``: ``POST /prompt`` to the end of the prompt (``executing`` with node
  null, or ``execution_success``, whichever comes first);
* ``first_preview_s``: submit to the first binary frame (ComfyUI's latent preview image);
* ``seconds_per_step``: median gap between consecutive KSampler ``progress`` messages; the
  time up to the first one (model load, text encoding, first step) is not in it;
* ``steps_seen``: how many distinct KSampler steps were reported.

The server's peak resident memory (process and children) is sampled every 50 ms over the
whole run. The websocket client is a minimal RFC 6455 one on the standard library.

    python -m bench.comfyui_bench --comfyui /work/shared/peers/ComfyUI \\
        --checkpoint FILE --size 64 --steps 2
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PYTHON = "/tmp/comfy-venv/bin/python"
HOST = "127.0.0.1"

# -- a minimal websocket client (RFC 6455) -------------------------------------------------

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Refuse frames larger than this (a corrupt length would otherwise exhaust memory).
MAX_PAYLOAD = 256 * 1024 * 1024


class WebSocketClosed(ConnectionError):
    """The peer closed the connection (close frame or end of stream)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"websocket closed (code {code}): {reason}".rstrip(": "))
        self.code = code
        self.reason = reason


def _mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One frame; clients must mask what they send (``mask=False`` is for tests)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(bit | 127)
        head += struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        return bytes(head) + key + _mask(payload, key)
    return bytes(head) + payload


def parse_frame(buf: bytes | bytearray) -> tuple[bool, int, bytes, int] | None:
    """Parse one frame at the start of ``buf``: (fin, opcode, payload, bytes used).

    None when ``buf`` does not hold a whole frame yet. Masked frames are unmasked.
    """
    if len(buf) < 2:
        return None
    first, second = buf[0], buf[1]
    if first & 0x70:
        raise ValueError("websocket frame uses extension bits that were not negotiated")
    length = second & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        (length,) = struct.unpack_from(">H", buf, 2)
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        (length,) = struct.unpack_from(">Q", buf, 2)
        pos = 10
    if length > MAX_PAYLOAD:
        raise ValueError(f"websocket frame of {length} bytes is too large")
    key = b""
    if second & 0x80:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos : pos + 4])
        pos += 4
    if len(buf) < pos + length:
        return None
    payload = bytes(buf[pos : pos + length])
    if key:
        payload = _mask(payload, key)
    return bool(first & 0x80), first & 0x0F, payload, pos + length


class WebSocket:
    """A websocket client connection on an already-connected socket.

    ``recv`` returns whole messages (``OP_TEXT`` or ``OP_BINARY``, fragments joined),
    answers pings and raises ``WebSocketClosed`` on close. Frames are parsed from a buffer,
    so a ``TimeoutError`` in ``recv`` loses nothing: the next call carries on.
    """

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self._buf = bytearray(buffered)
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._close_sent = False
        self.closed = False

    @classmethod
    def connect(cls, host: str, port: int, path: str, timeout: float = 10.0) -> WebSocket:
        """Open a TCP connection and do the HTTP upgrade handshake."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk or len(data) > 65536:
                    raise ConnectionError("websocket handshake: no complete HTTP response")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
                raise ConnectionError(f"websocket handshake refused: {lines[0]}")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest())
            if headers.get("sec-websocket-accept", "").encode() != expected:
                raise ConnectionError("websocket handshake: wrong Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(encode_frame(opcode, payload, mask=True))

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next data message as (opcode, payload); TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            parsed = parse_frame(self._buf)
            if parsed is None:
                self._fill(deadline)
                continue
            fin, opcode, payload, used = parsed
            del self._buf[:used]
            message = self._handle(fin, opcode, payload)
            if message is not None:
                return message

    def _fill(self, deadline: float | None) -> None:
        if self.closed:
            raise WebSocketClosed(reason="connection already closed")
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no websocket message in time")
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(None)
        chunk = self.sock.recv(65536)  # TimeoutError (socket.timeout) leaves _buf intact
        if not chunk:
            self.closed = True
            raise WebSocketClosed(reason="end of stream")
        self._buf += chunk

    def _handle(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode == OP_PING:
            self.send(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            if not self._close_sent:
                with contextlib.suppress(OSError):
                    self.send(OP_CLOSE, payload[:2])
                self._close_sent = True
            self.closed = True
            raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
        if opcode == OP_CONTINUATION:
            if self._fragment_opcode is None:
                raise ValueError("websocket continuation frame without a first fragment")
            self._fragments.append(payload)
            if not fin:
                return None
            whole = (self._fragment_opcode, b"".join(self._fragments))
            self._fragments, self._fragment_opcode = [], None
            return whole
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragment_opcode is not None:
                raise ValueError("websocket data frame in the middle of a fragmented message")
            if fin:
                return opcode, payload
            self._fragment_opcode, self._fragments = opcode, [payload]
            return None
        raise ValueError(f"unknown websocket opcode {opcode:#x}")

    def close(self) -> None:
        """Send a close frame (1000) if none was sent, and close the socket."""
        if not self._close_sent and not self.closed:
            with contextlib.suppress(OSError):
                self.send(OP_CLOSE, struct.pack(">H", 1000))
            self._close_sent = True
        self.closed = True
        self.sock.close()


# -- the workflow ---------------------------------------------------------------------------

#: Node ids of the txt2img graph that ``build_workflow`` returns.
NODES = {
    "checkpoint": "1",
    "positive": "2",
    "negative": "3",
    "latent": "4",
    "sampler": "5",
    "decode": "6",
    "save": "7",
}
JOB_DEFAULTS: dict[str, Any] = {
    "width": 512,
    "height": 512,
    "steps": 20,
    "cfg": 7.0,
    "seed": 1,
    "prompt": "a big red circle on the left, blue background",
    "negative": "",
}


def build_workflow(job: dict, ckpt_name: str, prefix: str = "sandstorm-bench") -> dict:
    """ComfyUI's API-format graph for one txt2img job (Euler, normal schedule, denoise 1).

    ``job``: width, height, steps, cfg, seed, prompt, negative (missing ones from
    ``JOB_DEFAULTS``). ``ckpt_name``: the file name as ComfyUI lists it in ``checkpoints``.
    """
    unknown = set(job) - set(JOB_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown job keys: {sorted(unknown)}")
    j = {**JOB_DEFAULTS, **job}
    n = NODES
    return {
        n["checkpoint"]: {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": ckpt_name},
        },
        n["positive"]: {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": str(j["prompt"]), "clip": [n["checkpoint"], 1]},
        },
        n["negative"]: {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": str(j["negative"]), "clip": [n["checkpoint"], 1]},
        },
        n["latent"]: {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": int(j["width"]), "height": int(j["height"]), "batch_size": 1},
        },
        n["sampler"]: {
            "class_type": "KSampler",
            "inputs": {
                "seed": int(j["seed"]),
                "steps": int(j["steps"]),
                "cfg": float(j["cfg"]),
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": [n["checkpoint"], 0],
                "positive": [n["positive"], 0],
                "negative": [n["negative"], 0],
                "latent_image": [n["latent"], 0],
            },
        },
        n["decode"]: {
            "class_type": "VAEDecode",
            "inputs": {"samples": [n["sampler"], 0], "vae": [n["checkpoint"], 2]},
        },
        n["save"]: {
            "class_type": "SaveImage",
            "inputs": {"images": [n["decode"], 0], "filename_prefix": prefix},
        },
    }


# -- per-job measurements -------------------------------------------------------------------


@dataclass
class JobTimes:
    """What the websocket told us about one prompt (``time.perf_counter`` seconds)."""

    submitted: float
    ended: float | None = None
    previews: list[float] = field(default_factory=list)
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (t, value, max)
    cached_nodes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        if self.ended is None:
            raise ValueError("the job has not ended")
        times = [t for t, _, _ in self.progress]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return {
            "end_to_end_s": self.ended - self.submitted,
            "first_preview_s": self.previews[0] - self.submitted if self.previews else None,
            "seconds_per_step": statistics.median(gaps) if gaps else None,
            "steps_seen": len({value for _, value, _ in self.progress}),
            "previews_seen": len(self.previews),
            "progress": [
                [round(t - self.submitted, 4), value, total] for t, value, total in self.progress
            ],
            "cached_nodes": self.cached_nodes,
        }


def handle_message(
    times: JobTimes, prompt_id: str, opcode: int, payload: bytes, now: float
) -> bool:
    """Record one websocket message for the job ``prompt_id``; True when the job has ended.

    Binary frames carry no prompt id (ComfyUI's legacy preview format: event type 1, image
    type, JPEG); with one job at a time they belong to the current one.
    """
    if opcode == OP_BINARY:
        if len(payload) >= 4 and struct.unpack(">I", payload[:4])[0] in (1, 4):
            times.previews.append(now)
        return False
    message = json.loads(payload)
    kind, data = message.get("type"), message.get("data") or {}
    if data.get("prompt_id") != prompt_id:
        return False  # status broadcasts, other clients' prompts
    if kind == "progress" and str(data.get("node")) == NODES["sampler"]:
        times.progress.append((now, int(data["value"]), int(data["max"])))
    elif kind == "execution_cached":
        times.cached_nodes = [str(n) for n in data.get("nodes", [])]
    elif kind == "execution_error":
        raise RuntimeError(
            f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
            f"{data.get('exception_type')}: {data.get('exception_message')}"
        )
    elif kind == "execution_interrupted":
        raise RuntimeError("ComfyUI interrupted the prompt")
    elif (kind == "executing" and data.get("node") is None) or kind == "execution_success":
        times.ended = now
        return True
    return False


# -- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def comfyui_version(comfy_dir: Path) -> str | None:
    """``__version__`` from ``comfyui_version.py``, read as text (never imported)."""
    try:
        text = (Path(comfy_dir) / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else None


class RssMonitor:
    """Samples the resident memory of a process and its children in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfyui-rss", daemon=True)

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post_json(url: str, body: dict, timeout: float = 30.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:2000]
        raise RuntimeError(f"ComfyUI refused the prompt ({exc.code}): {detail}") from exc


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"ComfyUI exited with code {proc.returncode} while starting:\n{_log_tail(log)}"
            )
        try:
            _get_json(f"http://{HOST}:{port}/system_stats", timeout=2.0)
            return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{_log_tail(log)}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate the server and whatever it started; kill what does not stop in time."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _run_job(
    ws: WebSocket,
    proc: subprocess.Popen,
    port: int,
    client_id: str,
    workflow: dict,
    log: Path,
    timeout: float,
) -> dict[str, Any]:
    prompt_id = uuid.uuid4().hex
    body = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
    times = JobTimes(submitted=time.perf_counter())
    _post_json(f"http://{HOST}:{port}/prompt", body)
    deadline = time.monotonic() + timeout
    while True:
        try:
            opcode, payload = ws.recv(timeout=1.0)
        except TimeoutError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with code {proc.returncode} during a job:\n{_log_tail(log)}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"a ComfyUI job took over {timeout:.0f} s") from None
            continue
        if handle_message(times, prompt_id, opcode, payload, time.perf_counter()):
            break
    return {"prompt_id": prompt_id, **times.metrics()}


def run_comfyui(
    comfy_dir: Path,
    checkpoint: Path,
    jobs: list[dict],
    python: str = DEFAULT_PYTHON,
    port: int = 0,
    *,
    startup_timeout: float = 120.0,
    job_timeout: float = 1800.0,
) -> dict[str, Any]:
    """Start ComfyUI on ``checkpoint``, run ``jobs`` one after another, stop it, report.

    Jobs are dicts of ``JOB_DEFAULTS`` keys. ComfyUI caches node outputs: a job identical
    to an earlier one finishes at once (give each a different seed). Everything the server
    writes goes to a temporary folder that is deleted afterwards. Returns ``startup_s``
    (process start to ``/system_stats`` answering), ``jobs`` (one dict of metrics each, see
    the module docstring), ``peak_rss_mb`` and ``comfyui_version``.
    """
    comfy_dir = Path(comfy_dir).resolve()
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise FileNotFoundError(checkpoint)
    port = port or free_port()
    tmp = Path(tempfile.mkdtemp(prefix="comfyui-bench-"))
    proc: subprocess.Popen | None = None
    monitor: RssMonitor | None = None
    ws: WebSocket | None = None
    try:
        # --base-directory keeps ComfyUI's defaults (models/, custom_nodes/, input/...) out of
        # comfy_dir too: nothing is written there, and its own models/ are not scanned.
        for sub in ("custom_nodes", "input", "out", "temp", "user"):
            (tmp / sub).mkdir()
        extra = tmp / "extra_model_paths.yaml"
        # JSON is valid YAML: no quoting questions for odd paths.
        extra.write_text(json.dumps({"sandstorm_bench": {"checkpoints": str(checkpoint.parent)}}))
        log = tmp / "server.log"
        command = [
            python,
            str(comfy_dir / "main.py"),
            "--cpu",
            "--listen",
            HOST,
            "--port",
            str(port),
            "--disable-auto-launch",
            "--preview-method",
            "latent2rgb",
            "--extra-model-paths-config",
            str(extra),
            "--base-directory",
            str(tmp),
            "--input-directory",
            str(tmp / "input"),
            "--output-directory",
            str(tmp / "out"),
            "--temp-directory",
            str(tmp / "temp"),
            "--user-directory",
            str(tmp / "user"),
            "--database-url",
            f"sqlite:///{tmp / 'db.sqlite'}",
        ]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                command, cwd=tmp, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        monitor = RssMonitor(proc.pid).start()
        _wait_ready(proc, port, log, startup_timeout)
        startup_s = time.perf_counter() - start
        client_id = uuid.uuid4().hex
        ws = WebSocket.connect(HOST, port, f"/ws?clientId={client_id}")
        results = [
            _run_job(
                ws, proc, port, client_id, build_workflow(job, checkpoint.name), log, job_timeout
            )
            for job in jobs
        ]
    finally:
        if ws is not None:
            ws.close()
        if proc is not None:
            _stop(proc)
        peak = monitor.stop() if monitor is not None else 0
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "startup_s": startup_s,
        "jobs": results,
        "peak_rss_mb": peak / 2**20,
        "comfyui_version": comfyui_version(comfy_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time ComfyUI's server on a checkpoint.")
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI source folder")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="SD checkpoint (default: build the random SD1.5 of bench.ldm_checkpoint)",
    )
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="python of ComfyUI's venv")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--jobs", type=int, default=2, help="jobs, each with its own seed")
    parser.add_argument("--prompt", default=JOB_DEFAULTS["prompt"])
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from bench.ldm_checkpoint import build_sd15_checkpoint

        checkpoint = build_sd15_checkpoint()
    jobs = [
        {
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
            "cfg": args.cfg,
            "seed": seed,
            "prompt": args.prompt,
            "negative": "",
        }
        for seed in range(1, args.jobs + 1)
    ]
    result = run_comfyui(args.comfyui, checkpoint, jobs, python=args.python, port=args.port)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
