"""Smoke test of the real ComfyUI server: discovery, a txt2img job with live progress and
previews over the websocket, its result through /history and /view, and an interrupt.

Plain ``urllib`` and our standard-library websocket client: what a remote backend relies on,
checked against the real program rather than a fake.
"""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers.comfy_server import HOST, ComfyProcess
from tests.integration.conftest import TEST_CHECKPOINT

try:  # the client is moving from the benchmark into the engine
    from desktop.engine.remote.websocket import WebSocket
except ImportError:
    from bench.comfyui_bench import WebSocket

#: RFC 6455 binary-message opcode.
OP_BINARY = 0x2
#: ComfyUI's binary event for a preview image (then a 4-byte format: 1 JPEG, 2 PNG).
PREVIEW_IMAGE = 1
#: The smallest size ComfyUI's EmptyLatentImage accepts is 16; 64 costs about 0.5 s more
#: per job on a 2-core CPU and keeps the latent (8x8) above the UNet's smallest level.
SIZE = 64
JOB_TIMEOUT = 600.0


def txt2img_graph(seed: int, steps: int = 2, size: int = SIZE) -> dict[str, Any]:
    """A stock-nodes txt2img graph in ComfyUI's API format (Euler, normal schedule)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TEST_CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


@dataclass
class Events:
    """The websocket messages seen for one prompt."""

    types: list[str] = field(default_factory=list)
    progress: list[dict] = field(default_factory=list)
    previews: list[bytes] = field(default_factory=list)
    last: dict = field(default_factory=dict)


def _choices(spec: list) -> list[str]:
    """A combo input's choices, in either of ComfyUI's two shapes."""
    if spec and isinstance(spec[0], list):
        return spec[0]
    return spec[1].get("options", [])


class Client:
    """One client id and websocket on the server; submits prompts and follows their events."""

    def __init__(self, comfy: ComfyProcess) -> None:
        self.comfy = comfy
        self.client_id = uuid.uuid4().hex
        self.ws = WebSocket.connect(HOST, comfy.port, f"/ws?clientId={self.client_id}")

    def close(self) -> None:
        self.ws.close()

    def submit(self, graph: dict) -> str:
        prompt_id = str(uuid.uuid4())  # chosen before posting: events may beat the reply
        reply = self.comfy.post_json(
            "/prompt", {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        )
        assert reply["prompt_id"] == prompt_id, reply
        assert not reply.get("node_errors"), reply
        return prompt_id

    def follow(self, prompt_id: str, until: tuple[str, ...], on_progress=None) -> Events:
        """Collect events for ``prompt_id`` until one of the types in ``until`` arrives.

        Binary preview frames carry no prompt id; with one job at a time on this server they
        belong to the running one.
        """
        events = Events()
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            try:
                opcode, payload = self.ws.recv(timeout=1.0)
            except TimeoutError:
                assert self.comfy.alive(), f"ComfyUI exited:\n{self.comfy.log_tail()}"
                assert time.monotonic() < deadline, f"no end in time: {events.types}"
                continue
            if opcode == OP_BINARY:
                (event,) = struct.unpack(">I", payload[:4])
                if event == PREVIEW_IMAGE:
                    events.previews.append(payload[4:])
                continue
            message = json.loads(payload)
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            events.types.append(kind)
            events.last = data
            if kind == "progress":
                events.progress.append(data)
                if on_progress is not None:
                    on_progress(data)
            if kind == "execution_error":
                pytest.fail(f"ComfyUI failed: {data}\n{self.comfy.log_tail()}")
            if kind in until:
                return events


def _history(comfy: ComfyProcess, prompt_id: str, timeout: float = 30.0) -> dict:
    """The prompt's history: ComfyUI writes it just after ``execution_success``."""
    deadline = time.monotonic() + timeout
    while True:
        history = comfy.get_json(f"/history/{prompt_id}")
        if prompt_id in history or time.monotonic() > deadline:
            return history
        time.sleep(0.05)


@pytest.fixture
def client(comfyui: ComfyProcess):
    client = Client(comfyui)
    yield client
    client.close()


def test_object_info_lists_the_test_checkpoint(comfyui: ComfyProcess) -> None:
    info = comfyui.get_json("/object_info/CheckpointLoaderSimple")
    spec = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert TEST_CHECKPOINT in _choices(spec)
    stats = comfyui.get_json("/system_stats")
    assert stats["system"]["comfyui_version"]


def test_txt2img_streams_progress_and_previews_then_serves_the_image(
    comfyui: ComfyProcess, client: Client
) -> None:
    from PIL import Image

    times = {}
    for label, seed in (("first job", 1), ("warm job", 2)):
        started = time.perf_counter()
        prompt_id = client.submit(txt2img_graph(seed))
        events = client.follow(prompt_id, until=("execution_success",))
        times[label] = time.perf_counter() - started
        assert events.progress, events.types
        assert {p["max"] for p in events.progress} == {2}
        assert events.previews, "no binary preview frame (event type 1) arrived"
        assert struct.unpack(">I", events.previews[0][:4])[0] in (1, 2)  # JPEG or PNG

        history = _history(comfyui, prompt_id)
        images = history[prompt_id]["outputs"]["7"]["images"]
        assert len(images) == 1, images
        query = urllib.parse.urlencode({k: images[0][k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{comfyui.url}/view?{query}", timeout=30) as response:
            data = response.read()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (SIZE, SIZE)
    print(
        f"\n[comfyui] {SIZE}x{SIZE}, 2 Euler steps: "
        + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in times.items())
    )


def test_interrupt_stops_the_running_job(comfyui: ComfyProcess, client: Client) -> None:
    interrupted: list[float] = []

    def interrupt(progress: dict) -> None:
        if not interrupted:
            comfyui.post_json("/interrupt", {"prompt_id": progress["prompt_id"]})
            interrupted.append(time.perf_counter())

    prompt_id = client.submit(txt2img_graph(seed=3, steps=50))
    events = client.follow(
        prompt_id, until=("execution_interrupted", "execution_success"), on_progress=interrupt
    )
    assert interrupted, events.types
    assert events.types[-1] == "execution_interrupted", events.types
    assert max(p["value"] for p in events.progress) < 50
    print(
        f"\n[comfyui] interrupted after step {events.progress[0]['value']}; "
        f"execution_interrupted {time.perf_counter() - interrupted[0]:.2f} s after the request"
    )
    history = _history(comfyui, prompt_id)
    assert history[prompt_id]["status"]["status_str"] == "error", history[prompt_id]["status"]
