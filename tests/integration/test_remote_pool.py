"""Sandstorm's remote backend against the real ComfyUI: a request runs end to end through
the server pool (graph, websocket previews, results, our metadata plus the server's graph
and name in the saved PNG), and cancel stops only that job."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from desktop.engine.metadata import read_metadata
from desktop.engine.progress import RecordingProgress
from desktop.engine.remote.comfy_client import ServerConfig
from desktop.engine.remote.pool import RemoteJob, ServerPool
from desktop.engine.request import GenerationRequest
from desktop.engine.results import save_results
from tests.helpers.comfy_server import ComfyProcess
from tests.integration.conftest import TEST_CHECKPOINT

JOB_TIMEOUT = 600.0


@dataclass
class Outcome:
    """What became of one job in the pool."""

    done: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    result: object = None
    server: str = ""
    failed: str = ""
    cancelled: bool = False


def _job(job_id: str, request: GenerationRequest) -> tuple[RemoteJob, Outcome, RecordingProgress]:
    outcome = Outcome()
    progress = RecordingProgress(job_id)

    def done(result, label):
        outcome.result, outcome.server = result, label
        outcome.done.set()

    def failed(message):
        outcome.failed = message
        outcome.done.set()

    def cancelled():
        outcome.cancelled = True
        outcome.done.set()

    job = RemoteJob(
        job_id,
        request,
        progress,
        on_started=lambda _label: outcome.started.set(),
        on_done=done,
        on_failed=failed,
        on_cancelled=cancelled,
    )
    return job, outcome, progress


def _request(**changes) -> GenerationRequest:
    values = dict(
        prompt="a red circle",
        model=TEST_CHECKPOINT,
        sampler="Euler",
        steps=2,
        width=64,
        height=64,
        seed=11,
        cfg_scale=7.0,
    )
    values.update(changes)
    return GenerationRequest(**values)


@pytest.fixture
def pool(comfyui: ComfyProcess):
    pool = ServerPool([ServerConfig(comfyui.url, name="test server")])
    yield pool
    assert pool.close(30.0)


def test_a_job_runs_end_to_end_with_previews_and_our_metadata(pool, tmp_path: Path) -> None:
    job, outcome, progress = _job("job-1", _request())
    pool.submit(job)
    assert outcome.done.wait(JOB_TIMEOUT)
    assert not outcome.failed and not outcome.cancelled, outcome.failed
    assert outcome.server == "test server"
    assert any(update.preview is not None for update in progress.updates)
    assert max(update.total for update in progress.updates) == 2
    result = outcome.result
    (image,) = result.images
    assert image.image.size == (64, 64)

    (saved,) = save_results(result.images, result.model, tmp_path)
    meta = read_metadata(saved.path)
    assert meta.source == "sandstorm"
    assert meta.request.seed == 11 and meta.request.model.endswith(TEST_CHECKPOINT)
    parameters = meta.raw["parameters"]
    assert "Server: test server" in parameters and "Seed: 11" in parameters
    graph = json.loads(meta.raw["prompt"])  # ComfyUI's own chunk: the graph it ran
    assert any(node["class_type"] == "KSampler" for node in graph.values())
    with Image.open(saved.path) as png:
        assert png.size == (64, 64)


def test_cancel_stops_only_that_job_and_the_next_runs(pool) -> None:
    long_job, long_outcome, long_progress = _job("job-long", _request(steps=60, seed=12))
    pool.submit(long_job)
    assert long_outcome.started.wait(JOB_TIMEOUT)
    # Cancel once it really runs on the server (a first step was reported).
    deadline = threading.Event()
    for _ in range(600):
        if long_progress.updates or long_outcome.done.is_set():
            break
        deadline.wait(0.5)
    assert long_progress.updates, "the long job never reported a step"
    assert pool.cancel("job-long")
    assert long_outcome.done.wait(60)
    assert long_outcome.cancelled
    next_job, next_outcome, _ = _job("job-next", _request(seed=13))
    pool.submit(next_job)
    assert next_outcome.done.wait(JOB_TIMEOUT)
    assert next_outcome.result is not None, next_outcome.failed
