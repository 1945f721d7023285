"""A real crash: SIGKILL a process that holds a persisted queue, then restore in this one."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop.engine.parts import HiresSpec, LoraRef
from desktop.engine.queue_store import QueueStore
from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

# The child: a queue with three waiting jobs and a fourth running, then READY; in "busy" mode
# it keeps changing the queue (a job added and removed, over and over) until it is killed.
CHILD = r"""
import json, sys
from pathlib import Path
from desktop.engine.queue_store import QueueStore
from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue

store_path, requests_path, mode = sys.argv[1:4]
requests = [GenerationRequest.from_dict(d) for d in json.loads(Path(requests_path).read_text())]
jobs = JobQueue(QueueStore(Path(store_path)))
running = jobs.add(requests[0])
jobs.mark_started(running.job_id)
waiting = [jobs.add(r) for r in requests[1:]]
print("READY", running.job_id, *(j.job_id for j in waiting), flush=True)
if mode == "idle":
    sys.stdin.read()  # blocks until killed
else:
    n = 0
    while True:
        extra = jobs.add(requests[n % len(requests)])
        jobs.remove(extra.job_id)
        n += 1
        if n % 25 == 0:
            print("SAVES", n * 2, flush=True)
"""


def _requests() -> list[GenerationRequest]:
    base = GenerationRequest(prompt="x", model="/models/sd15.safetensors", width=64, height=64)
    return [
        base.replace(prompt="the job that crashes the app", seed=1),
        base.replace(prompt="first ✓ ünïcode\nwith a newline", seed=2, steps=9),
        base.replace(
            prompt="second",
            negative_prompt="blurry",
            sampler="DPM++ 2M",
            schedule="Karras",
            loras=(LoraRef("style", unet_strength=0.5, text_strength=0.75),),
            hires=HiresSpec(scale=1.5, steps=4),
        ),
        base.replace(prompt="third", seed=-1, batch_size=3, cfg_scale=4.5),
    ]


def _read_line(proc: subprocess.Popen, buffer: bytearray, deadline: float) -> str:
    """The child's next stdout line, waiting at most until ``deadline``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(timeout=left):
                raise AssertionError(f"the child did not answer in time; got {bytes(buffer)!r}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"the child exited early ({proc.wait(5)}): {err}")
            buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_sigkill_with_three_waiting_jobs_loses_none(tmp_path: Path, mode: str):
    requests = _requests()
    requests_path = tmp_path / "requests.json"
    requests_path.write_text(json.dumps([r.to_dict() for r in requests]), encoding="utf-8")
    store_path = tmp_path / "data" / "queue.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SANDSTORM_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store_path), str(requests_path), mode],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        buffer = bytearray()
        deadline = time.monotonic() + 60
        ready = _read_line(proc, buffer, deadline).split()
        assert ready[0] == "READY", ready
        running_id, waiting_ids = ready[1], ready[2:]
        if mode == "busy":  # kill it while it is saving, at no particular moment
            while not _read_line(proc, buffer, deadline).startswith("SAVES 100"):
                pass
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    restored = QueueStore(store_path).load()
    assert restored.problem is None
    assert [j.job_id for j in restored.waiting][:3] == waiting_ids
    assert [j.request for j in restored.waiting][:3] == requests[1:]
    # A job added and not yet removed when the kill came may be there too, never more.
    assert len(restored.waiting) <= 4
    assert [(j.job_id, j.state) for j in restored.interrupted] == [(running_id, "interrupted")]
    assert restored.interrupted[0].request == requests[0]

    # The next start: the waiting jobs run, the one that was running is not rerun.
    jobs = JobQueue(QueueStore(store_path))
    back = jobs.restore(restored, paused=False)
    assert [j.request for j in jobs.take_submittable()][:3] == requests[1:]
    assert [j.request for j in back][:3] == requests[1:]
    assert [j.job_id for j in jobs.interrupted] == [running_id]
    assert all(j.job_id != running_id for j in jobs.pending)
