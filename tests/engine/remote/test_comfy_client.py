"""ComfyClient against the fake ComfyUI server: every method, auth, TLS, every fault."""

from __future__ import annotations

import io
import json
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.comfyui_bench import build_workflow
from desktop.engine.errors import RequestError, SandstormError
from desktop.engine.remote import comfy_client
from desktop.engine.remote.comfy_client import (
    AuthError,
    ComfyClient,
    PreviewFrame,
    ServerConfig,
    ServerError,
    ServerModels,
    ServerRejected,
    image_problem,
    normalize_url,
    parse_event,
)
from desktop.engine.remote.websocket import OP_BINARY, OP_TEXT, WebSocket, WebSocketClosed
from tests.helpers.fake_comfy import FakeComfy, self_signed_context, solid_jpeg, solid_png

CHECKPOINT = "sd15.safetensors"
TOKEN = "tok-3f9a-secret"


@pytest.fixture
def server() -> Iterator[FakeComfy]:
    with FakeComfy(
        checkpoints=[CHECKPOINT, "sub\\xl.safetensors"],
        loras=["detail.safetensors"],
        vaes=["vae.pt"],
        controlnets=["canny.pth"],
        upscale_models=["4x.pth"],
        embeddings=["bad-hands"],
        step_delay=0.005,
    ) as fake:
        yield fake


def client_for(server: FakeComfy, timeout: float = 2.0, **config: Any) -> ComfyClient:
    return ComfyClient(ServerConfig(server.url, **config), timeout=timeout)


@pytest.fixture
def client(server: FakeComfy) -> ComfyClient:
    return client_for(server)


def graph(steps: int = 2, width: int = 96, height: int = 64, **job: Any) -> dict[str, Any]:
    return build_workflow({"steps": steps, "width": width, "height": height, **job}, CHECKPOINT)


def follow(ws: WebSocket, prompt_id: str, timeout: float = 5.0) -> list[Any]:
    """Parsed events until the prompt is done (``executing`` with node null)."""
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        opcode, payload = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        event = parse_event(opcode, payload)
        events.append(event)
        if isinstance(event, dict) and event.get("type") == "executing":
            data = event["data"]
            if data["node"] is None and data["prompt_id"] == prompt_id:
                return events


def kinds(events: list[Any]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else type(e).__name__ for e in events]


def submit(client: ComfyClient, job_graph: dict[str, Any]) -> tuple[WebSocket, str]:
    """A websocket for a fresh client id, and the prompt queued on it."""
    client_id, prompt_id = uuid.uuid4().hex, uuid.uuid4().hex
    ws = client.open_websocket(client_id, timeout=2)
    client.queue_prompt(job_graph, client_id=client_id, prompt_id=prompt_id)
    return ws, prompt_id


# -- addresses and configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
        ("  HTTP://Example.COM:8188/  ", "http://example.com:8188"),
        ("https://gpu.lan/", "https://gpu.lan"),
        ("https://gpu.lan:443", "https://gpu.lan"),
        ("http://gpu.lan:80/comfy/", "http://gpu.lan/comfy"),
        ("http://[::1]:8188", "http://[::1]:8188"),
    ],
)
def test_normalize_url_accepts(text, url):
    assert normalize_url(text) == url


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ftp://x", "Only http:// and https:// server addresses are allowed: ftp://x"),
        ("localhost:8188", "Only http://"),
        ("ws://host:8188", "Only http://"),
        ("", "Only http://"),
        ("http://", "no host"),
        ("http://:8188", "no host"),
        ("http://host:99999", "not valid"),
        ("http://host:0", "port 0"),
        ("http://host:8188/?a=1", "query"),
        ("http://host:8188/#top", "fragment"),
        ("http://user:hunter2@host", "user name or password"),
        ("http://ho st", "spaces"),
    ],
)
def test_normalize_url_refuses(text, words):
    with pytest.raises(RequestError, match=words.replace("?", r"\?")) as info:
        normalize_url(text)
    assert "hunter2" not in str(info.value)


def test_the_token_is_never_shown():
    config = ServerConfig("http://gpu.lan:8188", token=TOKEN)
    for text in (repr(config), str(config), repr(ComfyClient(config)), f"{[config]}"):
        assert TOKEN not in text
    assert "token=<set>" in repr(config)
    assert config.label == "gpu.lan:8188"
    assert ServerConfig("http://gpu.lan:8188", name=" Attic PC ").label == "Attic PC"


def test_error_classes():
    assert issubclass(ServerError, SandstormError) and ServerError.retryable
    assert issubclass(AuthError, ServerError) and not AuthError.retryable
    assert issubclass(ServerRejected, SandstormError) and not ServerRejected.retryable
    assert not issubclass(ServerRejected, ServerError)


# -- discovery ---------------------------------------------------------------------------------


def test_system_stats_and_version(client):
    assert client.system_stats()["devices"][0]["type"] == "cpu"
    assert client.version() == "0.3.64"


@pytest.mark.parametrize("style", ["list", "combo"])
def test_models_in_both_choice_shapes(style):
    with FakeComfy(checkpoints=["a.ckpt", "b\\c.safetensors"], combo_style=style) as server:
        client = client_for(server)
        info = client.object_info("CheckpointLoaderSimple")
        spec = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
        assert (spec[0] == "COMBO") == (style == "combo")
        assert client.choices(info, "CheckpointLoaderSimple", "ckpt_name") == [
            "a.ckpt",
            "b\\c.safetensors",
        ]
        models = client.models()
        assert models.checkpoints == ("a.ckpt", "b\\c.safetensors")
        assert "euler" in models.samplers and "karras" in models.schedulers


def test_models_lists_everything(client):
    assert client.models() == ServerModels(
        checkpoints=(CHECKPOINT, "sub\\xl.safetensors"),
        loras=("detail.safetensors",),
        vaes=("vae.pt",),
        controlnets=("canny.pth",),
        upscale_models=("4x.pth",),
        samplers=client.models().samplers,
        schedulers=client.models().schedulers,
        embeddings=("bad-hands",),
    )


def test_a_node_the_server_lacks_gives_empty_lists():
    with FakeComfy(missing_nodes={"UpscaleModelLoader", "ControlNetLoader"}) as server:
        client = client_for(server)
        assert client.object_info("UpscaleModelLoader") == {}
        models = client.models()
        assert models.upscale_models == () and models.controlnets == ()
        assert models.checkpoints == ("model.safetensors",)


def test_choices_of_missing_inputs_and_odd_shapes(client):
    everything = client.object_info()
    assert "KSampler" in everything and "SaveImage" in everything
    assert client.choices(everything, "KSampler", "sampler_name")[0] == "euler"
    assert client.choices(everything, "KSampler", "steps") == []  # ["INT", {...}]
    assert client.choices(everything, "KSampler", "nope") == []
    assert client.choices(everything, "NoSuchNode", "x") == []
    odd = {"N": {"input": {"optional": {"a": [["x", 3, None]], "b": ["COMBO"], "c": []}}}}
    assert ComfyClient.choices(odd, "N", "a") == ["x"]
    assert ComfyClient.choices(odd, "N", "b") == [] and ComfyClient.choices(odd, "N", "c") == []


# -- auth --------------------------------------------------------------------------------------


def test_the_token_is_sent_as_a_bearer_header():
    with FakeComfy(token=TOKEN) as server:
        client = client_for(server, token=TOKEN)
        assert client.version() == "0.3.64"
        ws = client.open_websocket("c1")
        ws.close()
        assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in server.requests)
        assert all(TOKEN not in r.path for r in server.requests)
        assert [r.path for r in server.requests] == ["/system_stats", "/ws"]


def test_no_header_without_a_token(server, client):
    client.system_stats()
    assert "authorization" not in server.requests[-1].headers


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_a_refused_token_is_an_auth_error(token):
    with FakeComfy(token=TOKEN) as server:
        client = client_for(server, token=token)
        with pytest.raises(AuthError, match="access token") as info:
            client.models()
        assert not info.value.retryable and isinstance(info.value, ServerError)
        with pytest.raises(AuthError):
            client.open_websocket("c1")
        if token:
            assert token not in str(info.value)


# -- jobs --------------------------------------------------------------------------------------


def test_a_job_from_queue_to_image(server, client):
    ws, prompt_id = submit(client, graph(steps=3, width=96, height=64, seed=7))
    with ws:
        events = follow(ws, prompt_id)
    order = kinds(events)
    assert order[0] == "status"
    assert order.index("execution_start") < order.index("progress") < order.index("executed")
    assert order.count("progress") == 3 and order.count("PreviewFrame") == 3
    assert order[-2:] == ["execution_success", "executing"]
    preview = next(e for e in events if isinstance(e, PreviewFrame))
    assert preview.format == "JPEG" and Image.open(io.BytesIO(preview.data)).size == (8, 8)
    progress = [e["data"] for e in events if isinstance(e, dict) and e["type"] == "progress"]
    assert progress[-1] == {"value": 3, "max": 3, "prompt_id": prompt_id, "node": "5"}
    assert server.prompts[-1]["graph"] == graph(steps=3, width=96, height=64, seed=7)
    assert server.loaded_checkpoint == CHECKPOINT

    entry = client.history(prompt_id)
    assert entry is not None and entry["status"]["status_str"] == "success"
    (image,) = entry["outputs"]["7"]["images"]
    data = client.view(image["filename"], image["subfolder"], image["type"])
    assert Image.open(io.BytesIO(data)).size == (96, 64)


def test_a_batch_gives_one_image_each(server, client):
    job = graph(width=72, height=40)
    job["4"]["inputs"]["batch_size"] = 2
    ws, prompt_id = submit(client, job)
    with ws:
        follow(ws, prompt_id)
    images = client.history(prompt_id)["outputs"]["7"]["images"]
    sizes = [Image.open(io.BytesIO(client.view(**_view_args(i)))).size for i in images]
    assert sizes == [(72, 40), (72, 40)]


def _view_args(image: dict[str, str]) -> dict[str, str]:
    return {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}


def test_events_go_only_to_the_prompts_client(server, client):
    other = client.open_websocket("someone-else")
    ws, prompt_id = submit(client, graph())
    with ws, other:
        follow(ws, prompt_id)
        seen = []
        while True:
            try:
                seen.append(parse_event(*other.recv(timeout=0.1)))
            except TimeoutError:
                break
    assert {e["type"] for e in seen} == {"status"}


def test_preview_with_metadata_when_the_client_asks(server, client):
    client_id, prompt_id = "meta-client", "meta-prompt"
    with client.open_websocket(client_id) as ws:
        flags = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
        ws.send_text(json.dumps(flags))
        server.wait_until(lambda: bool(server._sockets[client_id].features))
        client.queue_prompt(graph(steps=1), client_id, prompt_id)
        (preview,) = [e for e in follow(ws, prompt_id) if isinstance(e, PreviewFrame)]
    assert preview.format == "JPEG" and preview.data.startswith(b"\xff\xd8")
    assert preview.metadata["prompt_id"] == prompt_id and preview.metadata["node_id"] == "5"


def test_an_identical_graph_is_reported_as_cached(server, client):
    ws, first = submit(client, graph(seed=3))
    with ws:
        follow(ws, first)
    ws, second = submit(client, graph(seed=3))
    with ws:
        events = follow(ws, second)
    cached = next(e for e in events if isinstance(e, dict) and e["type"] == "execution_cached")
    assert set(cached["data"]["nodes"]) == set(graph())
    assert "progress" not in kinds(events)
    assert client.history(second)["outputs"] == client.history(first)["outputs"]


def test_upload_image_then_use_it(server, client):
    png = solid_png(40, 24)
    name = client.upload_image(png, "init-1.png")
    assert name == "init-1.png" and server.uploads[name] == png
    info = client.object_info("LoadImage")
    assert client.choices(info, "LoadImage", "image") == ["init-1.png"]
    assert client.upload_image(png, "init-1.png") == "init-1.png"  # overwritten, not renamed
    job = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    ws, prompt_id = submit(client, job)
    with ws:
        follow(ws, prompt_id)
    (image,) = client.history(prompt_id)["outputs"]["2"]["images"]
    assert image["type"] == "temp"
    assert Image.open(io.BytesIO(client.view(**_view_args(image)))).size == (40, 24)


@pytest.mark.parametrize("name", ["", "../x.png", "a/b.png", "a\\b.png", 'q".png', "a\r\n.png"])
def test_upload_names_must_be_plain(client, name):
    with pytest.raises(RequestError):
        client.upload_image(b"x", name)


def test_a_missing_checkpoint_is_rejected_naming_the_input(server, client):
    with pytest.raises(ServerRejected) as info:
        client.queue_prompt(build_workflow({}, "x.safetensors"), "c", "p")
    assert str(info.value) == (
        "The server refused the job: CheckpointLoaderSimple ckpt_name 'x.safetensors' "
        "is not in its list."
    )
    assert not info.value.retryable and server.prompts == []


def test_other_refusals_are_summarised(client):
    no_class = {"1": {"inputs": {}}}
    with pytest.raises(ServerRejected, match="missing the class_type"):
        client.queue_prompt(no_class, "c", "p")
    unknown = {"1": {"class_type": "MagicNode", "inputs": {}}}
    with pytest.raises(ServerRejected, match="MagicNode does not exist"):
        client.queue_prompt(unknown, "c", "p")
    job = graph()
    job["5"]["inputs"]["sampler_name"] = "euler_magic"
    job["5"]["inputs"]["scheduler"] = "sometimes"
    with pytest.raises(ServerRejected) as info:
        client.queue_prompt(job, "c", "p")
    assert "KSampler sampler_name 'euler_magic' is not in its list" in str(info.value)
    assert "KSampler scheduler 'sometimes' is not in its list" in str(info.value)


def test_the_queue_and_deleting_waiting_jobs(server, client):
    server.step_delay = 0.05
    ids = ["a", "b", "c"]
    for n, prompt_id in enumerate(ids):
        client.queue_prompt(graph(seed=n), "nobody", prompt_id)
    server.wait_until(lambda: server.running == "a")
    assert client.queue() == {"queue_running": ["a"], "queue_pending": ["b", "c"]}
    client.delete_queued(["c"])
    client.delete_queued([])  # nothing to send
    assert client.queue()["queue_pending"] == ["b"] and server.deleted == ["c"]
    client.interrupt("b")  # not running: nothing happens to it
    client.interrupt("a")
    server.wait_until(lambda: "b" in server.history)
    assert client.history("c") is None
    assert server.interrupts == ["b", "a"]
    assert client.history("a")["status"]["status_str"] == "error"
    assert client.history("b")["status"]["status_str"] == "success"
    with pytest.raises(RequestError):
        client.interrupt("")


def test_interrupting_the_running_job(server, client):
    server.step_delay = 0.05
    ws, prompt_id = submit(client, graph(steps=50))
    with ws:
        server.wait_until(lambda: server.step >= 1)
        client.interrupt(prompt_id)
        events = follow(ws, prompt_id)
    assert "execution_interrupted" in kinds(events)
    assert "execution_success" not in kinds(events)
    assert server.interrupts == [prompt_id]
    assert client.history(prompt_id)["status"]["completed"] is False


def test_a_failing_node_sends_execution_error(server, client):
    server.fail("node_error")
    ws, prompt_id = submit(client, graph())
    with ws:
        events = follow(ws, prompt_id)
    error = next(e for e in events if isinstance(e, dict) and e["type"] == "execution_error")
    assert error["data"]["node_type"] == "KSampler"
    assert client.history(prompt_id)["status"]["status_str"] == "error"


# -- faults ------------------------------------------------------------------------------------


def test_refused_connection_then_recovery_on_the_same_port(server):
    client = client_for(server, timeout=1.0)
    port = server.port
    server.fail("refuse")
    started = time.monotonic()
    with pytest.raises(ServerError, match="refused the connection") as info:
        client.system_stats()
    assert info.value.retryable and time.monotonic() - started < 1.0
    with pytest.raises(ServerError):
        client.open_websocket("c")
    server.recover()
    assert server.port == port and client.version() == "0.3.64"


def test_a_hanging_server_times_out(server):
    client = client_for(server, timeout=0.3)
    server.fail("hang")
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"within 0\.3 s"):
        client.system_stats()
    with pytest.raises(ServerError):
        client.open_websocket("c", timeout=0.3)
    assert time.monotonic() - started < 2.0
    server.recover()
    assert client.version() == "0.3.64"


def test_http_500_is_a_retryable_server_error(server, client):
    server.fail("http500", count=2)
    for _ in range(2):
        with pytest.raises(ServerError, match="HTTP 500") as info:
            client.queue()
        assert info.value.retryable
    assert client.queue() == {"queue_running": [], "queue_pending": []}


def test_malformed_json_is_a_server_error(server, client):
    server.fail("garbage_json")
    with pytest.raises(ServerError, match="malformed answer to /system_stats"):
        client.version()
    assert client.version() == "0.3.64"


def test_an_answer_over_the_cap_is_a_server_error(client, monkeypatch):
    monkeypatch.setattr(comfy_client, "JSON_CAP", 1000)
    with pytest.raises(ServerError, match="more than"):
        client.object_info()  # every node: far over 1000 bytes


def test_a_truncated_image_is_a_server_error(server, client):
    ws, prompt_id = submit(client, graph())
    with ws:
        follow(ws, prompt_id)
    (image,) = client.history(prompt_id)["outputs"]["7"]["images"]
    server.fail("truncated_image")
    with pytest.raises(ServerError, match="broken image: the PNG is cut off"):
        client.view(**_view_args(image))
    assert client.view(**_view_args(image)).startswith(b"\x89PNG")
    with pytest.raises(ServerError, match="HTTP 404"):
        client.view("gone.png", "", "output")


def test_an_oversized_preview_is_skipped_and_the_job_goes_on(server, client):
    server.fail("oversized_preview")  # 20 MiB, over the client's 16 MiB
    ws, prompt_id = submit(client, graph(steps=3))
    with ws:
        events = follow(ws, prompt_id, timeout=10)
        assert ws.dropped_frames == 1
    assert kinds(events).count("progress") == 3
    assert kinds(events).count("PreviewFrame") == 2
    assert client.history(prompt_id)["status"]["status_str"] == "success"


def test_a_dropped_websocket_and_the_result_in_history(server, client):
    server.fail("drop_ws")
    ws, prompt_id = submit(client, graph(steps=3))
    with ws, pytest.raises(WebSocketClosed):
        follow(ws, prompt_id)
    server.wait_until(lambda: prompt_id in server.history)
    (image,) = client.history(prompt_id)["outputs"]["7"]["images"]
    assert client.view(**_view_args(image)).startswith(b"\x89PNG")
    with client.open_websocket(server.prompts[-1]["client_id"]) as again:
        assert parse_event(*again.recv(timeout=2))["type"] == "status"


def test_a_restart_forgets_queue_and_history(server, client):
    ws, done = submit(client, graph(steps=1))
    with ws:
        follow(ws, done)
    server.step_delay = 0.05
    ws, running = submit(client, graph(steps=40))
    client.queue_prompt(graph(seed=9), "x", "waiting")
    with ws:
        server.wait_until(lambda: server.step >= 1)
        server.fail("restart")
        with pytest.raises(WebSocketClosed):
            follow(ws, running)
    assert client.history(done) is None and client.history(running) is None
    assert client.queue() == {"queue_running": [], "queue_pending": []}
    ws, prompt_id = submit(client, graph(steps=1, seed=11))  # and it still works
    with ws:
        follow(ws, prompt_id)


# -- TLS ---------------------------------------------------------------------------------------


def test_https_to_a_plain_http_server_fails_fast_saying_tls(server):
    client = ComfyClient(ServerConfig(server.url.replace("http://", "https://")), timeout=2)
    started = time.monotonic()
    with pytest.raises(ServerError, match="TLS"):
        client.system_stats()
    assert time.monotonic() - started < 1.5


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    context = self_signed_context(tmp_path_factory.mktemp("tls"))
    if context is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return context


def test_tls_certificates_are_verified_by_default(tls_context):
    with FakeComfy(ssl_context=tls_context) as server:
        assert server.url.startswith("https://")
        client = client_for(server)
        with pytest.raises(ServerError, match="certificate") as info:
            client.system_stats()
        assert info.value.retryable
        with pytest.raises(ServerError, match="certificate"):
            client.open_websocket("c")


def test_an_unverified_server_the_user_trusts(tls_context):
    with FakeComfy(ssl_context=tls_context, token=TOKEN) as server:
        client = client_for(server, verify_tls=False, token=TOKEN)
        assert client.version() == "0.3.64"
        ws, prompt_id = submit(client, build_workflow({"steps": 1}, "model.safetensors"))
        with ws:
            assert "execution_success" in kinds(follow(ws, prompt_id))


# -- events and images -------------------------------------------------------------------------


def test_parse_event_text():
    assert parse_event(OP_TEXT, b'{"type": "status", "data": {}}') == {"type": "status", "data": {}}
    assert parse_event(OP_TEXT, b"{not json") is None
    assert parse_event(OP_TEXT, b"[1, 2]") is None
    assert parse_event(OP_TEXT, b"\xff\xfe") is None
    assert parse_event(OP_TEXT, b"[" * 100_000) is None


def test_parse_event_binary():
    jpeg, png = solid_jpeg(), solid_png(4, 4)
    assert parse_event(OP_BINARY, struct.pack(">II", 1, 1) + jpeg) == PreviewFrame("JPEG", jpeg)
    assert parse_event(OP_BINARY, struct.pack(">II", 1, 2) + png) == PreviewFrame("PNG", png)
    assert parse_event(OP_BINARY, struct.pack(">II", 1, 9) + png) is None
    meta = json.dumps({"image_type": "image/png", "prompt_id": "p"}).encode()
    frame = parse_event(OP_BINARY, struct.pack(">II", 4, len(meta)) + meta + png)
    assert frame == PreviewFrame("PNG", png) and frame.metadata["prompt_id"] == "p"
    assert parse_event(OP_BINARY, struct.pack(">II", 4, 999) + meta) is None
    assert parse_event(OP_BINARY, struct.pack(">II", 4, 2) + b"[]" + png) is None
    assert parse_event(OP_BINARY, struct.pack(">II", 3, 1) + b"text") is None
    assert parse_event(OP_BINARY, b"\x00\x00") is None
    assert parse_event(0x9, b"ping") is None


def test_image_problem():
    png, jpeg = solid_png(8, 8), solid_jpeg()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="WEBP")
    webp = buffer.getvalue()
    for good in (png, jpeg, webp, jpeg + b"\0\0"):
        assert image_problem(good) is None
    assert image_problem(png[: len(png) // 2]) == "the PNG is cut off"
    assert image_problem(png[:-1]) == "the PNG is cut off"
    assert image_problem(jpeg[:-10]) == "the JPEG is cut off"
    assert image_problem(webp[:-4]) == "the WebP is cut off"
    assert image_problem(b"GIF89a") == "it is not a PNG, JPEG or WebP image"


def test_a_connection_cut_mid_answer_is_a_server_error():
    """A Content-Length the server does not deliver (IncompleteRead)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a":')

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = ComfyClient(ServerConfig(f"http://127.0.0.1:{port}"), timeout=2)
        with pytest.raises(ServerError, match="broke off"):
            client.system_stats()
    finally:
        thread.join(5)
        listener.close()


def test_results_are_not_local_paths(tmp_path: Path, server, client):
    """A hostile file name from the server only ever goes back to the server."""
    with pytest.raises(ServerError, match="HTTP 404"):
        client.view("../../etc/passwd", "..", "output")
    assert server.requests[-1].query["filename"] == "../../etc/passwd"
    assert list(tmp_path.iterdir()) == []
