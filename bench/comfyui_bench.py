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
import contextlib
import itertools
import json
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

# The websocket client lives in the engine; the names of its old home here stay importable.
from desktop.engine.remote.websocket import MAX_PAYLOAD as MAX_PAYLOAD
from desktop.engine.remote.websocket import OP_BINARY, WebSocket
from desktop.engine.remote.websocket import OP_CLOSE as OP_CLOSE
from desktop.engine.remote.websocket import OP_CONTINUATION as OP_CONTINUATION
from desktop.engine.remote.websocket import OP_PING as OP_PING
from desktop.engine.remote.websocket import OP_PONG as OP_PONG
from desktop.engine.remote.websocket import OP_TEXT as OP_TEXT
from desktop.engine.remote.websocket import WebSocketClosed as WebSocketClosed
from desktop.engine.remote.websocket import encode_frame as encode_frame
from desktop.engine.remote.websocket import parse_frame as parse_frame

DEFAULT_PYTHON = "/tmp/comfy-venv/bin/python"
HOST = "127.0.0.1"

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
    """Poll ``/system_stats`` until the server answers (see ``ComfyProcess.wait_ready``)."""
    from tests.helpers.comfy_server import ComfyProcess

    ComfyProcess(proc=proc, port=port, log_path=log, base_dir=log.parent).wait_ready(timeout)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate the server and whatever it started; kill what does not stop in time."""
    from tests.helpers.comfy_server import stop_process

    stop_process(proc, timeout)


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
    to an earlier one finishes at once (give each a different seed). The server is started
    by ``tests.helpers.comfy_server.start_comfyui`` (loopback, CPU, no custom or API nodes,
    no web front end) and sees only ``checkpoint``, linked into a models folder;
    everything it writes goes to a temporary folder that is deleted afterwards. Returns
    ``startup_s`` (process start to ``/system_stats`` answering), ``jobs`` (one dict of
    metrics each, see the module docstring), ``peak_rss_mb`` and ``comfyui_version``.
    """
    from tests.helpers.comfy_server import link_into, start_comfyui

    comfy_dir = Path(comfy_dir).resolve()
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise FileNotFoundError(checkpoint)
    tmp = Path(tempfile.mkdtemp(prefix="comfyui-bench-"))
    comfy = None
    monitor: RssMonitor | None = None
    ws: WebSocket | None = None
    try:
        models = tmp / "bench-models"
        link_into(checkpoint, models / "checkpoints")
        comfy = start_comfyui(
            models, tmp / "base", port=port, python=Path(python), folder=comfy_dir
        )
        monitor = RssMonitor(comfy.proc.pid).start()
        startup_s = comfy.wait_ready(startup_timeout)
        client_id = uuid.uuid4().hex
        ws = WebSocket.connect(HOST, comfy.port, f"/ws?clientId={client_id}")
        results = [
            _run_job(
                ws,
                comfy.proc,
                comfy.port,
                client_id,
                build_workflow(job, checkpoint.name),
                comfy.log_path,
                job_timeout,
            )
            for job in jobs
        ]
    finally:
        if ws is not None:
            ws.close()
        if comfy is not None:
            comfy.stop()
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
