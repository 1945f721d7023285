"""Many servers, one queue, nothing lost: the server pool against fake ComfyUI servers.

Each fault of the issue's list is injected into a ``FakeComfy``; the job must finish (on
another server, or on the same one once it is back), never be lost, and the pool must keep
running. Probe delays are shortened so a test takes well under a second or two.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from desktop.engine.metadata import read_metadata
from desktop.engine.progress import RecordingProgress
from desktop.engine.remote.comfy_client import ComfyClient, ServerConfig
from desktop.engine.remote.pool import RemoteJob, ServerPool
from desktop.engine.request import GenerationRequest
from desktop.engine.results import save_results
from tests.helpers.fake_comfy import FakeComfy

WAIT = 20.0
FAST_RETRY = (0.05, 0.1, 0.2)


@dataclass
class Outcome:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    server: str = ""
    failed: str = ""
    cancelled: bool = False
    placed: list[str] = field(default_factory=list)


def make_job(job_id: str, request: GenerationRequest) -> tuple[RemoteJob, Outcome]:
    outcome = Outcome()

    def done(result: Any, label: str) -> None:
        outcome.result, outcome.server = result, label
        outcome.done.set()

    def failed(message: str) -> None:
        outcome.failed = message
        outcome.done.set()

    def cancelled() -> None:
        outcome.cancelled = True
        outcome.done.set()

    job = RemoteJob(
        job_id,
        request,
        RecordingProgress(job_id),
        on_started=outcome.placed.append,
        on_done=done,
        on_failed=failed,
        on_cancelled=cancelled,
    )
    return job, outcome


def request(model: str = "sd15.safetensors", **changes: Any) -> GenerationRequest:
    values: dict[str, Any] = dict(
        prompt="a red circle", model=model, steps=4, width=64, height=64, seed=5
    )
    values.update(changes)
    return GenerationRequest(**values)


@pytest.fixture
def servers() -> Iterator[list[FakeComfy]]:
    fakes = [
        FakeComfy(checkpoints=["sd15.safetensors", "other.safetensors"], step_delay=0.02)
        for _ in range(2)
    ]
    for fake in fakes:
        fake.start()
    yield fakes
    for fake in fakes:
        fake.stop()


def make_pool(fakes: list[FakeComfy], timeout: float = 2.0, **kwargs: Any) -> ServerPool:
    configs = [ServerConfig(f.url, name=f"server{i}") for i, f in enumerate(fakes)]
    return ServerPool(
        configs,
        client_factory=partial(ComfyClient, timeout=timeout),
        retry_s=FAST_RETRY,
        **kwargs,
    )


@pytest.fixture
def closing() -> Iterator[list[ServerPool]]:
    pools: list[ServerPool] = []
    yield pools
    for pool in pools:
        assert pool.close(10.0)


def wait_online(pool: ServerPool) -> None:
    """Until every server of ``pool`` has answered its first probe."""
    ready = threading.Event()
    for _ in range(400):
        if all(status.online for status in pool.servers()):
            return
        ready.wait(0.01)
    raise AssertionError(f"servers not online: {pool.servers()}")


def run(pool: ServerPool, job_id: str = "job", **changes: Any) -> Outcome:
    job, outcome = make_job(job_id, request(**changes))
    pool.submit(job)
    assert outcome.done.wait(WAIT), f"{job_id} did not end"
    return outcome


def test_a_job_runs_and_saves_our_metadata_with_the_servers_name(servers, closing, tmp_path):
    servers[0].token = "s3cret-token"
    pool = make_pool(servers[:1])
    pool._servers[0].client = ComfyClient(
        ServerConfig(servers[0].url, token="s3cret-token", name="server0")
    )
    closing.append(pool)
    outcome = run(pool, batch_size=2, seed=40)
    assert not outcome.failed, outcome.failed
    assert outcome.server == "server0"
    images = outcome.result.images
    assert [img.image.size for img in images] == [(64, 64), (64, 64)]
    assert [img.request.seed for img in images] == [40, 41]
    saved = save_results(images, outcome.result.model, tmp_path)
    meta = read_metadata(saved[0].path)
    assert meta.source == "sandstorm" and meta.request.seed == 40
    assert "Server: server0" in meta.raw["parameters"]
    assert "KSampler" in meta.raw["prompt"]
    raw = Path(saved[0].path).read_bytes()
    assert b"s3cret-token" not in raw  # the token never reaches the metadata
    assert "s3cret" not in repr(pool._servers[0].config)


def test_previews_and_steps_are_reported_with_the_job_id(servers, closing):
    pool = make_pool(servers[:1])
    closing.append(pool)
    job, outcome = make_job("job-7", request(steps=5))
    pool.submit(job)
    assert outcome.done.wait(WAIT) and not outcome.failed, outcome.failed
    updates = job.progress.updates
    assert {u.job_id for u in updates} == {"job-7"}
    assert [u.step for u in updates if u.preview is None] == [1, 2, 3, 4, 5]
    assert sum(u.preview is not None for u in updates) == 5
    assert max(u.total for u in updates) == 5


# -- the fault matrix --------------------------------------------------------------------------
def test_refused_connections_send_the_job_to_the_other_server(servers, closing):
    servers[0].fail("refuse")
    pool = make_pool(servers)
    closing.append(pool)
    outcome = run(pool)
    assert outcome.server == "server1" and not outcome.failed
    servers[0].recover()  # reconnection is automatic: the server takes jobs again
    servers[1].fail("refuse")
    assert run(pool, "again").server == "server0"


def test_a_server_that_hangs_times_out_and_the_job_runs_elsewhere(servers, closing):
    pool = make_pool(servers, timeout=0.5)
    closing.append(pool)
    run(pool, "warm")  # both known and online
    servers[0].fail("hang")
    outcomes = [run(pool, f"job{i}", seed=i) for i in range(2)]
    assert all(o.result is not None for o in outcomes)
    assert {o.server for o in outcomes} == {"server1"}
    servers[0].recover()


def test_a_restart_mid_job_puts_the_job_back_and_it_runs_on_the_other(servers, closing):
    servers[0].step_delay = servers[1].step_delay = 0.05
    pool = make_pool(servers)
    closing.append(pool)
    wait_online(pool)  # both idle, nothing loaded: the first in the list takes it
    job, outcome = make_job("job", request(steps=20))
    pool.submit(job)
    servers[0].wait_until(lambda: servers[0]._running is not None and servers[0]._running.step)
    servers[0].fail("restart")  # queue and history forgotten: the job is gone there
    assert outcome.done.wait(WAIT)
    assert outcome.result is not None, outcome.failed
    assert outcome.placed == ["server0", "server1"] and outcome.server == "server1"
    assert job.failures == ["server0"]
    assert any("server0 failed" in s for s in job.progress.statuses)


def test_a_dropped_websocket_is_reconnected_and_the_result_read_from_history(servers, closing):
    pool = make_pool(servers[:1])
    closing.append(pool)
    servers[0].fail("drop_ws", count=2)
    outcome = run(pool, steps=6)
    assert outcome.result is not None, outcome.failed
    assert outcome.placed == ["server0"]  # not rerun: followed on a new socket
    assert len(servers[0].prompts) == 1


def test_http_500_and_garbage_json_never_lose_the_job(servers, closing):
    pool = make_pool(servers[:1])
    closing.append(pool)
    run(pool, "warm")
    for fault in ("http500", "garbage_json"):
        servers[0].fail(fault)
        outcome = run(pool, f"after-{fault}", seed=9)
        assert outcome.result is not None, (fault, outcome.failed)
        assert outcome.server == "server0"


def test_a_truncated_image_is_fetched_again_by_rerunning_the_job(servers, closing):
    pool = make_pool(servers)
    closing.append(pool)
    run(pool, "warm")
    servers[0].fail("truncated_image")
    servers[1].fail("truncated_image")
    outcome = run(pool, "job", seed=3)
    assert outcome.result is not None, outcome.failed
    assert len(outcome.placed) >= 2  # the broken answer sent it round again


def test_an_oversized_preview_frame_is_skipped_and_the_job_finishes(servers, closing):
    pool = make_pool(servers[:1])
    closing.append(pool)
    servers[0].fail("oversized_preview", size=20 * 2**20)
    job, outcome = make_job("job", request(steps=3))
    pool.submit(job)
    assert outcome.done.wait(WAIT) and outcome.result is not None, outcome.failed
    assert outcome.placed == ["server0"]
    assert sum(u.preview is not None for u in job.progress.updates) == 2  # one was skipped


def test_with_no_server_left_the_job_waits_saying_so_and_runs_when_one_is_back(servers, closing):
    servers[0].fail("refuse")
    pool = make_pool(servers[:1])
    closing.append(pool)
    job, outcome = make_job("job", request())
    pool.submit(job)
    assert not outcome.done.wait(0.5)  # waiting, not failed
    assert any("none is reachable" in s for s in job.progress.statuses), job.progress.statuses
    servers[0].recover()
    assert outcome.done.wait(WAIT) and outcome.result is not None, outcome.failed


# -- jobs a server cannot run --------------------------------------------------------------------
def test_an_error_while_executing_fails_the_job_with_the_servers_message(servers, closing):
    pool = make_pool(servers[:1])
    closing.append(pool)
    servers[0].fail("node_error")
    outcome = run(pool)
    assert outcome.result is None and "server0" in outcome.failed
    assert run(pool, "next", seed=8).result is not None  # the pool keeps going


def test_a_model_no_server_has_fails_naming_it_and_one_only_b_has_goes_to_b(closing):
    with (
        FakeComfy(checkpoints=["a.safetensors"]) as a,
        FakeComfy(checkpoints=["a.safetensors", "b.safetensors"]) as b,
    ):
        pool = make_pool([a, b])
        outcome = run(pool, model="missing.safetensors")
        assert outcome.result is None
        assert "The model missing is not on" in outcome.failed
        assert "any of the servers" in outcome.failed
        assert run(pool, "b", model="b.safetensors").server == "server1"
        outcome = run(pool, "plms", sampler="PLMS")
        assert "PLMS" in outcome.failed
        assert pool.close(10.0)


# -- scheduling ------------------------------------------------------------------------------
def test_the_server_with_the_checkpoint_loaded_is_preferred(servers, closing):
    pool = make_pool(servers, slots=1)
    closing.append(pool)
    wait_online(pool)
    first, first_out = make_job("first", request("sd15.safetensors"))
    second, second_out = make_job("second", request("other.safetensors", seed=6))
    pool.submit(first)
    pool.submit(second)
    assert first_out.done.wait(WAIT) and second_out.done.wait(WAIT)
    assert (first_out.server, second_out.server) == ("server0", "server1")
    # Both idle now: each checkpoint goes back where it is loaded.
    assert run(pool, "other", model="other.safetensors", seed=7).server == "server1"
    assert run(pool, "sd15", model="sd15.safetensors", seed=8).server == "server0"


def test_each_server_takes_at_most_two_jobs_and_eight_jobs_use_both(servers, closing):
    pool = make_pool(servers)
    closing.append(pool)
    peak = {0: 0, 1: 0}
    jobs = []
    for i in range(8):
        job, outcome = make_job(f"job{i}", request(seed=100 + i))
        jobs.append(outcome)
        pool.submit(job)
    while not all(o.done.is_set() for o in jobs):
        for index, status in enumerate(pool.servers()):
            peak[index] = max(peak[index], status.in_flight)
        jobs[0].done.wait(0.01)
    assert all(o.result is not None for o in jobs)
    assert {o.server for o in jobs} == {"server0", "server1"}
    assert max(peak.values()) <= 2


def test_cancel_stops_only_our_job_waiting_or_running(servers, closing):
    servers[0].step_delay = 0.05
    pool = make_pool(servers[:1], slots=1)
    closing.append(pool)
    running, running_out = make_job("running", request(steps=40))
    waiting, waiting_out = make_job("waiting", request(seed=9))
    pool.submit(running)
    pool.submit(waiting)
    servers[0].wait_until(lambda: servers[0]._running is not None and servers[0]._running.step)
    assert pool.cancel("waiting") and waiting_out.cancelled  # never sent
    assert pool.cancel("running")
    assert running_out.done.wait(WAIT) and running_out.cancelled
    prompt_id = servers[0].prompts[0]["prompt_id"]
    servers[0].wait_until(lambda: prompt_id in servers[0].interrupts)
    assert None not in servers[0].interrupts  # never the whole server
    assert len(servers[0].prompts) == 1
    assert run(pool, "next", seed=10).result is not None


def test_close_reports_waiting_jobs_cancelled_and_stops_every_thread(servers):
    servers[0].fail("refuse")
    pool = make_pool(servers[:1])
    job, outcome = make_job("job", request())
    pool.submit(job)
    assert pool.close(10.0)
    assert outcome.cancelled
    with pytest.raises(RuntimeError):
        pool.submit(make_job("late", request())[0])
