"""The queue file: round trip, atomic writes, damaged files set aside, interrupted jobs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from desktop.engine import queue_store
from desktop.engine.parts import HiresSpec, LoraRef
from desktop.engine.queue_store import QUEUE_VERSION, QueueStore
from desktop.engine.request import GenerationRequest


def _request(prompt: str = "a cat", **changes) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="m", width=64, height=64, **changes)


def _rich() -> GenerationRequest:
    return _request(
        "a lighthouse, ünïcode ✓\nsecond line",
        negative_prompt="blurry",
        seed=42,
        steps=7,
        sampler="DPM++ 2M",
        schedule="Karras",
        loras=(LoraRef("style", unet_strength=0.5, text_strength=0.25),),
        hires=HiresSpec(scale=1.5, steps=3),
    )


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(tmp_path / "q" / "queue.json")


def _aside(path: Path, tag: str = "corrupt") -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.{tag}-*"))


def test_default_path_is_in_the_data_folder(sandstorm_home: Path):
    assert QueueStore().path == sandstorm_home / "data" / "queue.json"


def test_missing_file_is_an_empty_queue_without_a_problem(store: QueueStore):
    restored = store.load()
    assert restored.waiting == [] and restored.interrupted == []
    assert restored.problem is None and not restored


def test_round_trip_keeps_order_requests_and_times(store: QueueStore):
    requests = [_rich(), _request("b"), _request("c", seed=3)]
    store.save(
        [("job-1", requests[0], 100.5), ("job-2", requests[1], 101.0), ("job-3", requests[2])],
        ("job-0", _request("running")),
    )
    data = json.loads(store.path.read_text(encoding="utf-8"))
    assert data["version"] == QUEUE_VERSION
    assert {e["state"] for e in data["jobs"]} == {"waiting", "running"}
    restored = QueueStore(store.path).load()
    assert restored.problem is None
    assert [j.job_id for j in restored.waiting] == ["job-1", "job-2", "job-3"]
    assert [j.request for j in restored.waiting] == requests
    assert restored.waiting[0].created == 100.5
    assert abs(restored.waiting[2].created - time.time()) < 60


def test_creation_time_of_a_two_tuple_is_kept_across_saves(store: QueueStore):
    store.save([("job-1", _request())])
    first = store.load().waiting[0].created
    store.save([("job-1", _request()), ("job-2", _request("x"))])
    assert store.load().waiting[0].created == first


def test_running_job_comes_back_interrupted_not_waiting(store: QueueStore):
    store.save([("job-2", _request("next"))], ("job-1", _request("crashy")))
    restored = store.load()
    assert [j.job_id for j in restored.waiting] == ["job-2"]
    assert [(j.job_id, j.state) for j in restored.interrupted] == [("job-1", "interrupted")]
    assert restored.interrupted[0].request.prompt == "crashy"


def test_interrupted_jobs_stay_interrupted(store: QueueStore):
    store.save([], None, [("job-1", _request("crashy"), 5.0)])
    restored = store.load()
    assert restored.waiting == [] and [j.job_id for j in restored.interrupted] == ["job-1"]


def test_clear_deletes_the_file(store: QueueStore):
    store.save([("job-1", _request())])
    store.clear()
    assert not store.path.exists()
    store.clear()  # twice is fine
    assert store.load().waiting == []


def test_a_crash_mid_write_leaves_the_old_file(store: QueueStore, monkeypatch):
    store.save([("job-1", _request("old"))])
    before = store.path.read_bytes()

    def crash(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue_store.os, "replace", crash)
    with pytest.raises(OSError):
        store.save([("job-1", _request("old")), ("job-2", _request("new"))])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in store.path.parent.iterdir()] == ["queue.json"]
    assert [j.request.prompt for j in store.load().waiting] == ["old"]


def test_a_crash_before_replace_leaves_a_temporary_that_load_removes(store: QueueStore):
    store.save([("job-1", _request("old"))])
    stale = store.path.parent / ".queue-abc.tmp"
    stale.write_text('{"version": 1, "jobs": [', encoding="utf-8")  # half written
    restored = store.load()
    assert [j.request.prompt for j in restored.waiting] == ["old"] and not stale.exists()


def test_the_new_file_is_complete_after_save(store: QueueStore, monkeypatch):
    replaced: list[str] = []
    real = os.replace

    def spy(src, dst):
        replaced.append(Path(src).read_text(encoding="utf-8"))
        real(src, dst)

    monkeypatch.setattr(queue_store.os, "replace", spy)
    store.save([("job-1", _request())])
    assert json.loads(replaced[0])["jobs"][0]["id"] == "job-1"


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1, "jobs": [{"id": "job-1", "state": "waiting", "requ',  # truncated
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'{"version": "one", "jobs": []}',
        b'{"version": 1, "jobs": {}}',
        b"null",
    ],
    ids=["truncated", "empty", "binary", "list", "bad-version", "jobs-not-list", "null"],
)
def test_damaged_file_is_moved_aside_and_never_raises(store: QueueStore, content: bytes):
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(content)
    restored = store.load()
    assert restored.waiting == [] and restored.interrupted == []
    assert restored.problem and "no jobs were restored" in restored.problem
    aside = _aside(store.path)
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert restored.moved_to == aside[0] and str(aside[0]) in restored.problem
    assert not store.path.exists()
    # The next save starts a fresh file; the damaged one stays where it was put.
    store.save([("job-1", _request())])
    assert [j.job_id for j in store.load().waiting] == ["job-1"] and aside[0].exists()


def test_newer_version_is_moved_aside_not_misread(store: QueueStore):
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"version": QUEUE_VERSION + 1, "jobs": []}))
    restored = store.load()
    assert "newer Sandstorm" in (restored.problem or "")
    assert len(_aside(store.path)) == 1


def test_two_damaged_files_in_one_second_do_not_overwrite_each_other(store: QueueStore):
    store.path.parent.mkdir(parents=True)
    for text in ("one{", "two{"):
        store.path.write_text(text)
        store.load()
    assert sorted(p.read_text() for p in _aside(store.path)) == ["one{", "two{"]


def test_unreadable_file_is_reported(store: QueueStore, monkeypatch):
    store.save([("job-1", _request())])

    def unreadable(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    restored = store.load()
    assert restored.waiting == [] and "could not be read" in (restored.problem or "")


def test_invalid_entry_is_skipped_and_named_others_load(store: QueueStore):
    store.save([("job-1", _request("good")), ("job-2", _request("bad")), ("job-3", _request("ok"))])
    data = json.loads(store.path.read_text(encoding="utf-8"))
    data["jobs"][1]["request"]["width"] = 65  # no longer validates
    data["jobs"].append({"id": "job-4", "state": "sleeping", "request": {"prompt": "x"}})
    data["jobs"].append("not an entry")
    data["jobs"].append(data["jobs"][0])  # a duplicate id
    data["jobs"].append(
        {"id": "job-5", "state": "waiting", "request": {"prompt": "x", "version": 99}}
    )
    store.path.write_text(json.dumps(data), encoding="utf-8")
    restored = store.load()
    assert [j.job_id for j in restored.waiting] == ["job-1", "job-3"]
    problem = restored.problem or ""
    assert "job-2 (“bad”)" in problem and "multiple of 8" in problem
    assert "job-4" in problem and "unknown state" in problem
    assert "job #5" in problem and "job-1 (“good”): its id is used twice" in problem
    assert "job-5" in problem and "newer" in problem
    # Nothing is silently lost: the original file is kept beside the queue.
    kept = _aside(store.path, "skipped")
    assert len(kept) == 1 and json.loads(kept[0].read_text(encoding="utf-8")) == data
    assert str(kept[0]) in problem


def test_saving_reuses_the_encoding_of_unchanged_requests(store: QueueStore, monkeypatch):
    request = _request()
    store.save([("job-1", request)])
    calls: list[int] = []
    real = GenerationRequest.to_dict
    monkeypatch.setattr(GenerationRequest, "to_dict", lambda self: calls.append(1) or real(self))
    store.save([("job-1", request), ("job-2", _request("b"))])
    assert len(calls) == 1
    # A different request under the same id is encoded again.
    store.save([("job-1", _request("changed"))])
    assert len(calls) == 2 and store.load().waiting[0].request.prompt == "changed"


def test_save_with_100_waiting_jobs_is_cheap(store: QueueStore):
    jobs = [(f"job-{i}", _rich().replace(prompt=f"prompt {i} " * 20)) for i in range(100)]
    store.save(jobs)  # first save encodes every request
    rounds = 20
    start = time.perf_counter()
    for i in range(rounds):
        store.save(jobs[i:], (f"job-{i - 1}", jobs[i - 1][1]) if i else None)
    per_save = (time.perf_counter() - start) / rounds
    print(f"queue save with ~100 waiting jobs: {per_save * 1000:.2f} ms")
    # fsync dominates; generous so a slow CI disk does not fail it.
    assert per_save < 0.25
    assert len(store.load().waiting) == 100 - rounds + 1
