"""The ComfyUI benchmark's websocket client and workflow, without starting ComfyUI."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from bench import comfyui_bench as cb
from desktop.engine.remote.websocket import accept_key


@pytest.fixture
def pair() -> Iterator[tuple[cb.WebSocket, socket.socket]]:
    """A client WebSocket and the "server" end of a socketpair that feeds it frames."""
    client, server = socket.socketpair()
    ws = cb.WebSocket(client)
    yield ws, server
    client.close()
    server.close()


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server-to-client frame (unmasked)."""
    return cb.encode_frame(opcode, payload, fin=fin, mask=False)


def read_client_frame(server: socket.socket) -> tuple[bool, int, bytes, bool]:
    """One frame the client sent: (fin, opcode, payload, was it masked)."""
    server.settimeout(2.0)
    data = b""
    while (parsed := cb.parse_frame(data)) is None:
        data += server.recv(4096)
    fin, opcode, payload, used = parsed
    assert used == len(data)
    return fin, opcode, payload, bool(data[1] & 0x80)


def test_small_text_frame(pair):
    ws, server = pair
    server.sendall(frame(cb.OP_TEXT, b'{"type": "status"}'))
    assert ws.recv(timeout=2) == (cb.OP_TEXT, b'{"type": "status"}')


def test_126_length_frame(pair):
    ws, server = pair
    payload = bytes(range(256)) * 2  # 512 bytes: the 16-bit length form
    data = frame(cb.OP_TEXT, payload)
    assert data[1] == 126 and struct.unpack(">H", data[2:4])[0] == 512
    server.sendall(data)
    assert ws.recv(timeout=2) == (cb.OP_TEXT, payload)


def test_64_bit_length_frame_parses():
    payload = b"x" * 70_000
    data = frame(cb.OP_BINARY, payload)
    assert data[1] == 127
    assert cb.parse_frame(data[:-1]) is None
    assert cb.parse_frame(data) == (True, cb.OP_BINARY, payload, len(data))


def test_binary_preview_frame(pair):
    ws, server = pair
    preview = struct.pack(">II", 1, 1) + b"\xff\xd8jpeg bytes"
    server.sendall(frame(cb.OP_BINARY, preview) + frame(cb.OP_TEXT, b"after"))
    assert ws.recv(timeout=2) == (cb.OP_BINARY, preview)
    assert ws.recv(timeout=2) == (cb.OP_TEXT, b"after")


def test_fragmented_message_with_a_ping_in_between(pair):
    ws, server = pair
    server.sendall(
        frame(cb.OP_TEXT, b"hel", fin=False)
        + frame(cb.OP_PING, b"p1")
        + frame(cb.OP_CONTINUATION, b"lo ", fin=False)
        + frame(cb.OP_CONTINUATION, b"world")
    )
    assert ws.recv(timeout=2) == (cb.OP_TEXT, b"hello world")
    assert read_client_frame(server) == (True, cb.OP_PONG, b"p1", True)


def test_ping_is_answered_with_a_masked_pong(pair):
    ws, server = pair
    server.sendall(frame(cb.OP_PING, b"are you there") + frame(cb.OP_TEXT, b"next"))
    assert ws.recv(timeout=2) == (cb.OP_TEXT, b"next")
    assert read_client_frame(server) == (True, cb.OP_PONG, b"are you there", True)


def test_a_frame_split_across_reads_and_timeouts(pair):
    ws, server = pair
    data = frame(cb.OP_TEXT, b"x" * 300)
    server.sendall(data[:3])
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    server.sendall(data[3:])
    assert ws.recv(timeout=2) == (cb.OP_TEXT, b"x" * 300)


def test_close_frame_is_answered_and_raises(pair):
    ws, server = pair
    server.sendall(frame(cb.OP_CLOSE, struct.pack(">H", 1001) + b"going away"))
    with pytest.raises(cb.WebSocketClosed) as info:
        ws.recv(timeout=2)
    assert info.value.code == 1001 and info.value.reason == "going away"
    assert read_client_frame(server) == (True, cb.OP_CLOSE, struct.pack(">H", 1001), True)


def test_end_of_stream_raises(pair):
    ws, server = pair
    server.close()
    with pytest.raises(cb.WebSocketClosed):
        ws.recv(timeout=2)


def test_masked_frames_round_trip():
    for size in (0, 5, 125, 126, 65535, 65536):
        payload = bytes(i % 251 for i in range(size))
        data = cb.encode_frame(cb.OP_BINARY, payload)
        assert data[1] & 0x80
        assert cb.parse_frame(data) == (True, cb.OP_BINARY, payload, len(data))


def test_handshake_and_bytes_that_follow_it():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict[str, bytes] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            seen["request"] = request
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = accept_key(key.decode()).encode()
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
                + frame(cb.OP_TEXT, b"hello")
            )
            conn.recv(100)  # the client's close frame

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        ws = cb.WebSocket.connect("127.0.0.1", port, "/ws?clientId=abc", timeout=5)
        assert ws.recv(timeout=2) == (cb.OP_TEXT, b"hello")
        ws.close()
    finally:
        thread.join(5)
        listener.close()
    assert seen["request"].startswith(b"GET /ws?clientId=abc HTTP/1.1\r\n")
    assert b"Sec-WebSocket-Version: 13" in seen["request"]


# -- the workflow -----------------------------------------------------------------------------

JOB = {
    "width": 320,
    "height": 192,
    "steps": 3,
    "cfg": 6.5,
    "seed": 42,
    "prompt": "a fox",
    "negative": "blurry",
}


def test_workflow_wiring():
    graph = cb.build_workflow(JOB, "model.safetensors")
    json.dumps(graph)  # what is POSTed
    n = cb.NODES
    assert {node["class_type"] for node in graph.values()} == {
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }
    links = {
        (target, name): tuple(value)
        for target, node in graph.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list)
    }
    assert links == {
        (n["positive"], "clip"): (n["checkpoint"], 1),
        (n["negative"], "clip"): (n["checkpoint"], 1),
        (n["sampler"], "model"): (n["checkpoint"], 0),
        (n["sampler"], "positive"): (n["positive"], 0),
        (n["sampler"], "negative"): (n["negative"], 0),
        (n["sampler"], "latent_image"): (n["latent"], 0),
        (n["decode"], "samples"): (n["sampler"], 0),
        (n["decode"], "vae"): (n["checkpoint"], 2),
        (n["save"], "images"): (n["decode"], 0),
    }


def test_workflow_job_parameters():
    graph = cb.build_workflow(JOB, "model.safetensors")
    n = cb.NODES
    assert graph[n["checkpoint"]]["inputs"] == {"ckpt_name": "model.safetensors"}
    assert graph[n["positive"]]["inputs"]["text"] == "a fox"
    assert graph[n["negative"]]["inputs"]["text"] == "blurry"
    assert graph[n["latent"]]["inputs"] == {"width": 320, "height": 192, "batch_size": 1}
    sampler = graph[n["sampler"]]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"]) == (42, 3, 6.5)
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["denoise"]) == (
        "euler",
        "normal",
        1.0,
    )
    with pytest.raises(ValueError, match="sampler"):
        cb.build_workflow({**JOB, "sampler": "dpm"}, "model.safetensors")


# -- messages to metrics ----------------------------------------------------------------------


def test_messages_become_job_metrics():
    times = cb.JobTimes(submitted=100.0)
    pid = "p1"

    def text(kind: str, **data) -> bytes:
        return json.dumps({"type": kind, "data": data}).encode()

    feed = [
        (100.1, cb.OP_TEXT, text("status", status={})),
        (100.2, cb.OP_TEXT, text("execution_start", prompt_id=pid)),
        (100.3, cb.OP_TEXT, text("progress", value=1, max=9, prompt_id="other", node="5")),
        (103.0, cb.OP_TEXT, text("progress", value=1, max=3, prompt_id=pid, node="5")),
        (103.1, cb.OP_BINARY, struct.pack(">II", 1, 1) + b"jpeg"),
        (104.0, cb.OP_TEXT, text("progress", value=2, max=3, prompt_id=pid, node="5")),
        (104.1, cb.OP_BINARY, struct.pack(">II", 1, 1) + b"jpeg"),
        (105.5, cb.OP_TEXT, text("progress", value=3, max=3, prompt_id=pid, node="5")),
        (105.6, cb.OP_TEXT, text("progress", value=1, max=1, prompt_id=pid, node="6")),
    ]
    for now, opcode, payload in feed:
        assert not cb.handle_message(times, pid, opcode, payload, now)
    assert cb.handle_message(
        times, pid, cb.OP_TEXT, text("executing", node=None, prompt_id=pid), 106.0
    )
    metrics = times.metrics()
    assert metrics["end_to_end_s"] == pytest.approx(6.0)
    assert metrics["first_preview_s"] == pytest.approx(3.1)
    assert metrics["seconds_per_step"] == pytest.approx(1.25)  # median of 1.0 and 1.5
    assert metrics["steps_seen"] == 3 and metrics["previews_seen"] == 2


def test_execution_error_raises_with_its_message():
    times = cb.JobTimes(submitted=0.0)
    error = {
        "type": "execution_error",
        "data": {
            "prompt_id": "p",
            "node_id": "1",
            "node_type": "CheckpointLoaderSimple",
            "exception_type": "RuntimeError",
            "exception_message": "Could not detect model type",
        },
    }
    with pytest.raises(RuntimeError, match="Could not detect model type"):
        cb.handle_message(times, "p", cb.OP_TEXT, json.dumps(error).encode(), 1.0)


def test_comfyui_version_is_read_as_text(tmp_path):
    (tmp_path / "comfyui_version.py").write_text('__version__ = "9.8.7"\n')
    assert cb.comfyui_version(tmp_path) == "9.8.7"
    assert cb.comfyui_version(tmp_path / "missing") is None
