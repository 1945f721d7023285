"""One generation on one ComfyUI server, from request to images, surviving a dropped socket.

``run_server_job`` turns a ``GenerationRequest`` into a stock graph
(``comfy_graph.build_graph``; the images it needs are uploaded first), opens a websocket
whose client id is the job's prompt id (so the server's events for this job come to this
socket only), posts the prompt and follows it:

* ``progress`` events of the sampler and the binary preview frames become ``StepUpdate``s
  with the decoded preview, tagged with the job id;
* the cancel event is looked at every ``POLL_S``: a waiting prompt is deleted from the
  server's queue, a running one interrupted by its prompt id (never the whole server);
* a dropped websocket is reconnected with backoff; what was missed while away is read from
  ``/history`` (finished) and ``/queue`` (still waiting or running). A prompt that is in
  neither is gone (the server restarted): ``ServerError``, so the caller puts the job back;
* silence is checked on too: after ``CHECK_S`` without an event the queue is asked, so a
  server that restarted while the socket looked open is found out.

The outputs are fetched with ``/view`` (complete images only) and returned as
``GeneratedImage``s with the single-image requests, plus the graph and the server's name for
the saved metadata. ``ServerError`` means "the server failed, run the job elsewhere";
``ServerRejected`` and ``RequestError`` mean "this job cannot run there"; ``Cancelled``
means the user stopped it.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from desktop.engine.errors import Cancelled, SandstormError
from desktop.engine.models import ModelInfo, find_model
from desktop.engine.progress import Progress, StepUpdate
from desktop.engine.remote.comfy_client import (
    ComfyClient,
    PreviewFrame,
    ServerError,
    ServerModels,
    parse_event,
)
from desktop.engine.remote.comfy_graph import build_graph, match_name
from desktop.engine.remote.websocket import WebSocket, WebSocketClosed
from desktop.engine.request import GenerationRequest
from desktop.engine.resources import Resources

if TYPE_CHECKING:  # generate imports torch; this module must not (the window imports it)
    from desktop.engine.generate import GenerationResult

log = logging.getLogger(__name__)

#: How often the cancel event is looked at while waiting for events (seconds).
POLL_S = 0.1
#: After this long without an event, the server's queue is asked whether the job is there.
CHECK_S = 5.0
#: Reconnection delays after a dropped websocket (seconds), then the job is given up.
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
#: How long a prompt that is neither queued nor in the history gets before it counts as
#: lost (the server writes the history just after the last event).
HISTORY_GRACE_S = 0.5
#: A preview larger than this many pixels is not decoded (a malicious or broken frame).
MAX_PREVIEW_PIXELS = 4096 * 4096


@dataclass
class JobState:
    """What is known about the prompt on the server while it runs."""

    prompt_id: str
    started: bool = False
    done: bool = False
    step: int = 0
    total: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    error: str = ""
    previews: int = 0
    last_event: float = field(default_factory=time.monotonic)


def server_model_info(request: GenerationRequest, checkpoint: str) -> ModelInfo:
    """The ``ModelInfo`` recorded with a server's images: the local file of the same name
    when there is one (so the model hash is written), else the server's checkpoint name."""
    local = _local_model(request.model)
    if local is not None and Path(local.path).name.casefold() == _file_name(checkpoint):
        return local
    stem = Path(_file_name(checkpoint)).stem or checkpoint
    # The path is never opened: the hash of a file that is not here is left out.
    return ModelInfo(
        name=stem, path=Path("<server>") / stem, format="safetensors", family="", usable=True
    )


def _file_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1].casefold()


def _local_model(model: str) -> ModelInfo | None:
    if not model:
        return None
    try:
        return find_model(model)
    except SandstormError:
        return None


def run_server_job(
    client: ComfyClient,
    request: GenerationRequest,
    progress: Progress,
    models: ServerModels,
    on_queued: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Run ``request`` on the server behind ``client``; see the module docstring.

    ``on_queued(prompt_id)`` is called once the server accepted the prompt.

    Raises:
        Cancelled: the progress's cancel event was set.
        ServerError: the server failed (unreachable, restarted, garbage): run it elsewhere.
        SandstormError: the job cannot run there (refused graph, a setting it lacks, an
            error while executing).
    """
    started = time.perf_counter()
    progress.check_cancelled()
    request = request.resolved()
    progress.set_status(f"Sending to {client.config.label}…")
    output_node = f"out_{uuid.uuid4().hex[:12]}"
    graph = build_graph(
        request, models, lambda name, data: client.upload_image(data, name), output_node
    )
    progress.check_cancelled()
    state = JobState(prompt_id=uuid.uuid4().hex)
    ws = client.open_websocket(state.prompt_id, timeout=client.timeout)
    try:
        client.queue_prompt(graph, client_id=state.prompt_id, prompt_id=state.prompt_id)
        if on_queued is not None:
            on_queued(state.prompt_id)
        progress.set_status(f"Queued on {client.config.label}")
        ws = _follow(client, ws, state, progress, started)
    finally:
        ws.close()
    from desktop.engine.generate import GeneratedImage, GenerationResult

    images = _fetch_images(client, state, output_node)
    checkpoint = match_name(request.model, models.checkpoints) or request.model
    model = server_model_info(request, checkpoint)
    resources = _resources(request, client, graph)
    results = [
        GeneratedImage(image, request.for_image(i), resources) for i, image in enumerate(images)
    ]
    return GenerationResult(
        progress.job_id,
        request,
        results,
        model,
        elapsed=time.perf_counter() - started,
    )


def _resources(request: GenerationRequest, client: ComfyClient, graph: dict) -> Resources:
    """The server's name and the graph it ran, for the saved metadata. The LoRA and
    embedding hashes are left out: the files are on the server, not here."""
    return Resources(server=client.config.label, graph=json.dumps(graph, separators=(",", ":")))


# -- following the prompt --------------------------------------------------------------------
def _follow(
    client: ComfyClient, ws: WebSocket, state: JobState, progress: Progress, started: float
) -> WebSocket:
    """Handle events until the prompt is done; returns the (maybe reconnected) socket."""
    while not state.done:
        if progress.cancelled:
            _cancel(client, state)
            raise Cancelled()
        try:
            opcode, payload = ws.recv(timeout=POLL_S)
        except TimeoutError:
            if time.monotonic() - state.last_event > CHECK_S:
                _check_still_there(client, state)
                state.last_event = time.monotonic()
            continue
        except (WebSocketClosed, OSError) as exc:
            log.info("websocket to %s dropped: %s", client.config.label, exc)
            ws.close()
            ws = _reconnect(client, state, progress)
            continue
        state.last_event = time.monotonic()
        _handle(parse_event(opcode, payload), state, progress, started, client)
    if state.error:
        raise SandstormError(f"{client.config.label}: {state.error}")
    if state.interrupted:
        # Not ours (we raise Cancelled on our own cancel): someone stopped it on the server.
        raise ServerError(f"The job was interrupted on {client.config.label}.")
    return ws


def _handle(
    event: Any, state: JobState, progress: Progress, started: float, client: ComfyClient
) -> None:
    if isinstance(event, PreviewFrame):
        if not state.started:
            return
        preview = _decode_preview(event)
        if preview is not None:
            state.previews += 1
            progress.set_progress(
                StepUpdate(
                    progress.job_id,
                    max(1, state.step),
                    max(state.total, state.step, 1),
                    time.perf_counter() - started,
                    preview,
                )
            )
        return
    if not isinstance(event, dict):
        return  # malformed JSON or an unknown binary event: ignored
    kind, data = event.get("type"), event.get("data")
    if not isinstance(data, dict):
        return
    if data.get("prompt_id") not in (None, state.prompt_id):
        return
    if kind == "status":
        remaining = (data.get("status") or {}).get("exec_info", {}).get("queue_remaining")
        if not state.started and isinstance(remaining, int) and remaining > 1:
            progress.set_status(f"Queued on {client.config.label} ({remaining - 1} ahead)")
    elif kind == "execution_start":
        state.started = True
        progress.set_status(f"Running on {client.config.label}")
    elif kind == "execution_cached":
        state.started = True
    elif kind == "progress":
        state.started = True
        value, total = data.get("value"), data.get("max")
        if isinstance(value, int) and isinstance(total, int) and total > 0:
            state.step, state.total = value, total
            progress.set_progress(
                StepUpdate(progress.job_id, value, total, time.perf_counter() - started, None)
            )
    elif kind == "executed":
        node, output = data.get("node"), data.get("output")
        if isinstance(node, str) and isinstance(output, dict):
            state.outputs[node] = output
    elif kind == "execution_success":
        state.done = True
    elif kind == "executing":
        if data.get("node") is None and data.get("prompt_id") == state.prompt_id:
            state.done = True
        else:
            state.started = True
    elif kind == "execution_error":
        message = str(data.get("exception_message") or "the job failed").strip()
        node = data.get("node_type") or data.get("node_id") or ""
        state.error = f"the server's {node} node failed: {message}" if node else message
        state.done = True
    elif kind == "execution_interrupted":
        state.interrupted = True
        state.done = True


def _decode_preview(frame: PreviewFrame) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(frame.data))
        if image.width * image.height > MAX_PREVIEW_PIXELS:
            return None
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _cancel(client: ComfyClient, state: JobState) -> None:
    """Stop only this prompt: out of the queue if it waits, interrupted if it runs."""
    try:
        client.delete_queued([state.prompt_id])
        running, _pending = _queue_ids(client)
        if state.prompt_id in running:
            client.interrupt(state.prompt_id)
    except SandstormError as exc:  # the server is gone: nothing left to stop there
        log.info("cancel on %s: %s", client.config.label, exc)


def _queue_ids(client: ComfyClient) -> tuple[set[str], set[str]]:
    """The prompt ids running and waiting on the server."""
    queue = client.queue()

    def ids(key: str) -> set[str]:
        found = set()
        for item in queue.get(key) or []:
            if isinstance(item, (list, tuple)) and len(item) > 1:
                found.add(str(item[1]))
            elif isinstance(item, str):
                found.add(item)
        return found

    return ids("queue_running"), ids("queue_pending")


def _check_still_there(client: ComfyClient, state: JobState) -> None:
    """Raise ``ServerError`` when the prompt is neither queued, running nor finished."""
    for attempt in range(2):
        running, pending = _queue_ids(client)
        if state.prompt_id in running or state.prompt_id in pending:
            return
        if _recover_from_history(client, state):
            return
        if attempt == 0:  # a prompt that just ended is in neither for a moment
            time.sleep(HISTORY_GRACE_S)
    raise ServerError(f"{client.config.label} no longer knows the job (it was probably restarted).")


def _recover_from_history(client: ComfyClient, state: JobState) -> bool:
    """Fill ``state`` from ``/history`` when the prompt finished meanwhile."""
    entry = client.history(state.prompt_id)
    if not entry:
        return False
    outputs = entry.get("outputs")
    if isinstance(outputs, dict):
        for node, output in outputs.items():
            if isinstance(output, dict):
                state.outputs[str(node)] = output
    status = entry.get("status") or {}
    if isinstance(status, dict) and status.get("status_str") == "error":
        messages = status.get("messages") or []
        detail = next(
            (
                m[1].get("exception_message")
                for m in messages
                if isinstance(m, (list, tuple))
                and len(m) > 1
                and m[0] == "execution_error"
                and isinstance(m[1], dict)
            ),
            None,
        )
        state.error = str(detail or "the job failed on the server")
    state.done = True
    return True


def _reconnect(client: ComfyClient, state: JobState, progress: Progress) -> WebSocket:
    """A new socket after a drop, with backoff; what was missed comes from the history."""
    problem: Exception | None = None
    for delay in BACKOFF_S:
        if progress.cancelled:
            _cancel(client, state)
            raise Cancelled()
        progress.set_status(f"Reconnecting to {client.config.label}…")
        time.sleep(delay)
        try:
            ws = client.open_websocket(state.prompt_id, timeout=client.timeout)
        except SandstormError as exc:
            problem = exc
            continue
        try:
            _check_still_there(client, state)
        except Exception:
            ws.close()
            raise
        progress.set_status(f"Running on {client.config.label}")
        return ws
    raise ServerError(f"Lost the connection to {client.config.label}: {problem}")


# -- results ------------------------------------------------------------------------------------
def _fetch_images(client: ComfyClient, state: JobState, output_node: str) -> list[Image.Image]:
    output = state.outputs.get(output_node)
    if output is None and _recover_from_history(client, state):
        output = state.outputs.get(output_node)
    if state.error:
        raise SandstormError(f"{client.config.label}: {state.error}")
    files = (output or {}).get("images") if isinstance(output, dict) else None
    if not files:
        raise ServerError(f"{client.config.label} finished the job but sent no image.")
    images = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            raise ServerError(f"{client.config.label} described its output oddly: {item!r:.80}")
        # The server's file name goes back to the server only, never onto a local path.
        data = client.view(
            item["filename"], str(item.get("subfolder") or ""), str(item.get("type") or "temp")
        )
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ServerError(
                f"{client.config.label} sent an image that cannot be read ({exc})."
            ) from exc
        images.append(image.convert("RGB"))
    return images
