"""Atomic saving, the SQLite index, search, and the cached model hash."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from desktop.engine import gallery as gallery_module
from desktop.engine import hashing
from desktop.engine.errors import ModelError, RequestError, SandstormError
from desktop.engine.gallery import Gallery, GalleryItem, SaveError, save_png_with_metadata
from desktop.engine.metadata import read_metadata
from desktop.engine.models import ModelInfo
from desktop.engine.request import GenerationRequest, request_fields


@pytest.fixture
def gallery(tmp_path: Path):
    with Gallery(tmp_path / "out", tmp_path / "index" / "gallery.sqlite3") as opened:
        yield opened


def _request(prompt: str = "a red fox in the snow", seed: int = 42, **changes) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, seed=seed, **changes)


def _image(color: str = "orange") -> Image.Image:
    return Image.new("RGB", (32, 32), color)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- saving -----------------------------------------------------------------------------------


def test_save_writes_dated_unique_png_with_metadata(gallery: Gallery, tmp_path: Path) -> None:
    first = gallery.save(_image(), _request(seed=7))
    second = gallery.save(_image("blue"), _request(seed=7))
    today = dt.date.today().isoformat()
    assert first.path.parent == gallery.root / today
    assert (first.path.name, second.path.name) == ("00001-7.png", "00002-7.png")
    assert read_metadata(first.path).request == _request(seed=7)
    assert [item.path for item in gallery.search()] == [second.path, first.path]
    assert _files(gallery.root) == [f"{today}/00001-7.png", f"{today}/00002-7.png"]


def test_numbering_continues_after_existing_files(tmp_path: Path) -> None:
    root = tmp_path / "out"
    folder = root / dt.date.today().isoformat()
    folder.mkdir(parents=True)
    (folder / "00041-3.png").write_bytes(b"")
    with Gallery(root, tmp_path / "g.sqlite3") as opened:
        assert opened.save(_image(), _request(seed=9)).path.name == "00042-9.png"


def test_save_refuses_unresolved_seed(gallery: Gallery) -> None:
    with pytest.raises(RequestError, match="seed"):
        gallery.save(_image(), GenerationRequest(prompt="x"))


def test_save_records_model_name_and_cached_hash(gallery: Gallery, tmp_path: Path) -> None:
    weights = tmp_path / "models" / "dreamshaper_8.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights" * 1000)
    model = ModelInfo("dreamshaper_8", weights, "safetensors", "sd1")
    item = gallery.save(_image(), _request(model=str(weights)), model)
    meta = read_metadata(item.path)
    assert meta.model_name == item.model == "dreamshaper_8"
    assert meta.model_hash == hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    assert gallery.models() == ["dreamshaper_8"]


def test_save_elsewhere_keeps_both_chunks(tmp_path: Path) -> None:
    target = tmp_path / "exports" / "keep me.png"
    save_png_with_metadata(_image().convert("P"), _request(), target)
    with Image.open(target) as image:
        assert {"parameters", "sandstorm"} <= set(image.info)
        assert image.mode == "RGB"
    assert read_metadata(target).request == _request()


# -- failures leave nothing behind ------------------------------------------------------------


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_crash_between_write_and_rename_leaves_nothing(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    def crash(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(gallery_module.os, fail_at, crash)
    with pytest.raises(SaveError, match="Could not save the image to") as info:
        gallery.save(_image(), _request())
    assert isinstance(info.value, SandstormError)
    monkeypatch.undo()
    assert _files(gallery.root) == []
    assert gallery.count() == 0
    assert gallery.sync() == (0, 0)


def test_interrupt_during_write_leaves_no_partial_file(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = Image.Image.save

    def killed(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        gallery.save(_image(), _request())
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert _files(gallery.root) == []
    assert gallery.count() == 0


def test_disk_full_gives_clear_save_error(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(SaveError) as info:
        gallery.save(_image(), _request())
    message = str(info.value)
    assert message == f"Could not save the image to {gallery.folder_for()}: the disk is full."
    assert _files(gallery.root) == []
    assert gallery.count() == 0


def test_read_only_folder_gives_clear_save_error(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chmod cannot stop root (CI containers), so the refusal the OS would give is simulated.
    real_open = open

    def refuse(path, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(SaveError, match=r"permission denied \(the folder is read-only\)\.$"):
        gallery.save(_image(), _request())
    monkeypatch.undo()
    assert _files(gallery.root) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_real_read_only_folder(tmp_path: Path) -> None:
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0o555)
    try:
        with Gallery(root, tmp_path / "g.sqlite3") as opened, pytest.raises(SaveError):
            opened.save(_image(), _request())
    finally:
        root.chmod(0o755)


def test_stale_temp_files_are_cleaned_and_never_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "2024-01-01"
    folder.mkdir(parents=True)
    stale = folder / ".tmp-dead.png.part"
    fresh = folder / ".tmp-live.png.part"
    stale.write_bytes(b"\x89PNG partial")
    fresh.write_bytes(b"\x89PNG partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    with Gallery(tmp_path / "out", tmp_path / "g.sqlite3") as opened:
        assert stale.exists()  # opening walks nothing: it must stay cheap
        assert opened.sync() == (0, 0)  # the sync's walk removes leftovers on the way
        assert not stale.exists()
        assert fresh.exists()  # may belong to a save running in another window
        assert opened.count() == 0
        os.utime(fresh, (old, old))
        assert opened.clean_temp_files() == 1
        assert not fresh.exists()


def test_opening_a_gallery_walks_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # save_results opens a Gallery per job: that must not cost a walk of a large folder.
    walked: list[object] = []
    real_walk = os.walk
    monkeypatch.setattr(
        gallery_module.os, "walk", lambda *a, **k: walked.append(a) or real_walk(*a, **k)
    )
    with Gallery(tmp_path / "out", tmp_path / "g.sqlite3") as opened:
        opened.save(_image(), _request())
        assert walked == []
        opened.sync()
        assert len(walked) == 1


# -- index ------------------------------------------------------------------------------------


def _write_foreign(path: Path, parameters: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    path.parent.mkdir(parents=True, exist_ok=True)
    _image("green").save(path, "PNG", pnginfo=info)


def test_sync_adds_hand_copied_and_drops_deleted_files(gallery: Gallery, tmp_path: Path) -> None:
    saved = gallery.save(_image(), _request("a lighthouse at dusk", seed=1))
    copied = gallery.root / "imports" / "from-a1111.png"
    _write_foreign(
        copied,
        "Castle On A Hill\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, "
        "Model: anything-v3",
    )
    plain = gallery.root / "imports" / "photo.jpg"
    _image().save(plain, "JPEG")
    (gallery.root / "imports" / "notes.txt").write_text("not an image")
    hidden = gallery.root / ".thumbnails" / "x.png"
    _write_foreign(hidden, "ignored\nSteps: 1, Sampler: Euler, Seed: 1")

    assert gallery.sync() == (2, 0)
    assert gallery.sync() == (0, 0)  # unchanged files are not read again
    item = gallery.get(copied)
    assert item is not None
    assert (item.prompt, item.model, item.seed, item.source) == (
        "Castle On A Hill",
        "anything-v3",
        5,
        "a1111",
    )
    assert gallery.count() == 3
    assert gallery.models() == ["anything-v3"]

    gallery.set_favourite(saved.path, True)
    saved.path.unlink()
    shutil.rmtree(gallery.root / "imports")
    assert gallery.sync() == (0, 3)
    assert gallery.count() == 0


def test_sync_rereads_changed_files_and_keeps_favourites(gallery: Gallery) -> None:
    path = gallery.root / "x.png"
    _write_foreign(path, "first prompt\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512")
    assert gallery.sync() == (1, 0)
    gallery.set_favourite(path, True)
    _write_foreign(path, "second prompt\nSteps: 20, Sampler: Euler, Seed: 2, Size: 512x512")
    later = time.time() + 5
    os.utime(path, (later, later))
    assert gallery.sync() == (1, 0)
    item = gallery.get(path)
    assert item is not None
    assert (item.prompt, item.seed, item.favourite) == ("second prompt", 2, True)


def test_missing_or_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    root, index = tmp_path / "out", tmp_path / "g.sqlite3"
    with Gallery(root, index) as first:
        first.save(_image(), _request("kept across rebuilds", seed=3))
    index.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    with Gallery(root, index) as second:
        assert second.count() == 0
        assert second.sync() == (1, 0)
        assert second.search("kept")[0].seed == 3
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    with Gallery(root, index) as third:
        assert third.sync() == (1, 0)
    assert list(tmp_path.glob("g.sqlite3.broken-*"))


def test_one_index_serves_several_roots(tmp_path: Path) -> None:
    index = tmp_path / "g.sqlite3"
    with Gallery(tmp_path / "a", index) as a, Gallery(tmp_path / "b", index) as b:
        a.save(_image(), _request("only in a"))
        b.save(_image(), _request("only in b"))
        assert [i.prompt for i in a.search()] == ["only in a"]
        assert b.count() == 1
        assert b.sync() == (0, 0)
        assert a.count() == 1


# -- search -----------------------------------------------------------------------------------


@pytest.fixture
def filled(gallery: Gallery) -> list[GalleryItem]:
    prompts = [
        ("A Red Fox in the snow", "foxnet"),
        ("a blue fox, night", "foxnet"),
        ("red panda eating bamboo", "pandamix"),
        ("Ÿellow ÉCLAIR on a plate", "pandamix"),
        ("portrait of a fox", ""),
    ]
    items = []
    for index, (prompt, model) in enumerate(prompts):
        items.append(gallery.save(_image(), _request(prompt, seed=index, model=model)))
    # Spread the creation times over five days so date filters have something to cut.
    base = time.time() - 5 * 86400
    with gallery._lock:
        for index, item in enumerate(items):
            gallery._conn.execute(
                "UPDATE images SET created = ? WHERE path = ?",
                (base + index * 86400, str(item.path)),
            )
        gallery._conn.commit()
    return [gallery.get(item.path) for item in items]


def test_search_words_all_match_case_insensitive(gallery: Gallery, filled) -> None:
    assert [i.prompt for i in gallery.search("fox")] == [
        "portrait of a fox",
        "a blue fox, night",
        "A Red Fox in the snow",
    ]
    assert [i.prompt for i in gallery.search("RED fox")] == ["A Red Fox in the snow"]
    assert [i.prompt for i in gallery.search("fox snow red")] == ["A Red Fox in the snow"]
    assert [i.prompt for i in gallery.search("éclair ÿellow")] == ["Ÿellow ÉCLAIR on a plate"]
    assert gallery.search("fox zebra") == []
    assert gallery.search("100%_") == []
    assert gallery.count("fox") == 3


def test_search_by_model_favourites_and_dates(gallery: Gallery, filled) -> None:
    assert gallery.models() == ["foxnet", "pandamix"]
    assert {i.prompt for i in gallery.search(model="pandamix")} == {
        "red panda eating bamboo",
        "Ÿellow ÉCLAIR on a plate",
    }
    assert gallery.count("red", model="pandamix") == 1

    assert gallery.set_favourite(filled[1].path, True)
    assert gallery.set_favourite(filled[3].path, True)
    assert not gallery.set_favourite(gallery.root / "missing.png", True)
    assert [i.prompt for i in gallery.search(favourites=True)] == [
        "Ÿellow ÉCLAIR on a plate",
        "a blue fox, night",
    ]
    gallery.set_favourite(filled[3].path, False)
    assert gallery.count(favourites=True) == 1

    day = filled[2].created_at.date()
    assert [i.prompt for i in gallery.search(since=day, until=day)] == ["red panda eating bamboo"]
    assert gallery.count(since=filled[3].created) == 2
    assert gallery.count(until=filled[1].created_at) == 2


def test_search_pages_newest_first(gallery: Gallery, filled) -> None:
    everything = gallery.search()
    assert [i.seed for i in everything] == [4, 3, 2, 1, 0]
    assert gallery.search(limit=2, offset=0) == everything[:2]
    assert gallery.search(limit=2, offset=2) == everything[2:4]
    assert gallery.search(limit=2, offset=4) == everything[4:]
    assert gallery.count() == 5


def test_day_counts_follow_the_search_order(gallery: Gallery, filled) -> None:
    days = gallery.day_counts()
    assert [count for _day, count in days] == [1, 1, 1, 1, 1]
    assert [day for day, _count in days] == [i.created_at.date() for i in reversed(filled)]
    # A second image on the newest day joins its count; filters apply as in search.
    newest = filled[-1]
    extra = gallery.save(_image(), _request("another fox", seed=9))
    with gallery._lock:
        gallery._conn.execute(
            "UPDATE images SET created = ? WHERE path = ?", (newest.created - 1, str(extra.path))
        )
        gallery._conn.commit()
    assert gallery.day_counts()[0] == (newest.created_at.date(), 2)
    assert sum(count for _day, count in gallery.day_counts("fox")) == gallery.count("fox") == 4
    assert gallery.day_counts(model="nothing") == []


def test_position_is_the_rank_in_search_order(gallery: Gallery, filled) -> None:
    everything = gallery.search()
    assert [gallery.position(item.path) for item in everything] == [0, 1, 2, 3, 4]
    fox = gallery.search("fox")
    assert [gallery.position(item.path, "fox") for item in fox] == [0, 1, 2]
    assert gallery.position(filled[2].path, "fox") is None  # the panda is filtered out
    assert gallery.position(gallery.root / "missing.png") is None
    assert gallery.paths() == [str(item.path) for item in everything]
    assert gallery.paths("fox", limit=2, offset=1) == [str(item.path) for item in fox[1:3]]


def test_forget_removes_only_the_index_row(gallery: Gallery, filled) -> None:
    target = filled[0].path
    assert gallery.forget(target)
    assert not gallery.forget(target)
    assert target.exists()
    assert gallery.count() == 4


def test_gui_thread_searches_while_worker_saves(gallery: Gallery) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def worker() -> None:
        try:
            for seed in range(15):
                gallery.save(_image(), _request("threaded fox", seed=seed))
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    counts = []
    while not done.is_set():
        counts.append(gallery.count("fox"))
        gallery.search("threaded", limit=5)
    thread.join()
    assert errors == []
    assert counts == sorted(counts)  # every read saw a consistent, growing index
    assert gallery.count("threaded fox") == 15
    assert len({i.path for i in gallery.search(limit=100)}) == 15


# -- model hash -------------------------------------------------------------------------------


def test_model_hash_is_cached_by_path_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    cache = tmp_path / "hashes.json"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    calls = []
    real = hashing.sha256_file

    def counting(path, chunk_size=hashing.CHUNK_SIZE):
        calls.append(path)
        return real(path, chunk_size=1024 * 1024)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    assert hashing.model_hash(weights, cache) == expected[:10]
    assert hashing.model_hash(weights, cache) == expected[:10]
    assert len(calls) == 1
    assert json.loads(cache.read_text())["files"][str(weights.resolve())]["sha256"] == expected

    weights.write_bytes(b"changed")
    assert hashing.cached_sha256(weights, cache) is None
    assert hashing.model_hash(weights, cache) == hashlib.sha256(b"changed").hexdigest()[:10]
    assert len(calls) == 2


def test_diffusers_folder_hashes_its_unet(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"unet weights")
    cache = tmp_path / "hashes.json"
    assert hashing.model_hash(folder, cache) == hashlib.sha256(b"unet weights").hexdigest()[:10]
    with pytest.raises(ModelError, match="no UNet weights"):
        hashing.model_hash(tmp_path, cache)
    with pytest.raises(ModelError, match="does not exist"):
        hashing.model_hash(tmp_path / "nope.safetensors", cache)


def test_corrupt_hash_cache_is_ignored(tmp_path: Path) -> None:
    weights = tmp_path / "m.ckpt"
    weights.write_bytes(b"abc")
    cache = tmp_path / "hashes.json"
    cache.write_text("{ not json")
    assert hashing.model_hash(weights, cache) == hashlib.sha256(b"abc").hexdigest()[:10]
    assert json.loads(cache.read_text())["version"] == hashing.CACHE_VERSION


def test_unreadable_model_does_not_block_saving(gallery: Gallery, tmp_path: Path) -> None:
    model = ModelInfo("gone", tmp_path / "gone.safetensors", "safetensors", "sd1")
    item = gallery.save(_image(), _request(), model)
    meta = read_metadata(item.path)
    assert (meta.model_name, meta.model_hash) == ("gone", "")


def test_name_taken_by_another_window_moves_to_the_next(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gallery_module.save_png_with_metadata
    taken: list[Path] = []

    def other_window_first(image, request, path, *args, **kwargs):
        if not taken:
            # Another process writes the same name between our check and our rename.
            Path(path).write_bytes(b"someone else's image")
            taken.append(Path(path))
        return real(image, request, path, *args, **kwargs)

    monkeypatch.setattr(gallery_module, "save_png_with_metadata", other_window_first)
    item = gallery.save(_image(), _request(seed=5))
    assert taken[0].read_bytes() == b"someone else's image"
    assert item.path.name == "00002-5.png"
    assert read_metadata(item.path).request == _request(seed=5)
    assert sorted(p.name for p in item.path.parent.iterdir()) == ["00001-5.png", "00002-5.png"]


def test_index_from_another_schema_version_is_rebuilt(tmp_path: Path) -> None:
    root, index = tmp_path / "out", tmp_path / "g.sqlite3"
    with Gallery(root, index) as first:
        first.save(_image(), _request())
        with first._lock:
            first._conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema'")
            first._conn.commit()
    with Gallery(root, index) as second:
        assert second.count() == 0
        assert second.sync() == (1, 0)


# -- columns follow the declarations ----------------------------------------------------------


def _columns(gallery: Gallery) -> dict[str, str]:
    with gallery._lock:
        rows = gallery._conn.execute("PRAGMA table_info(images)").fetchall()
    return {row["name"]: row["type"] for row in rows}


def test_every_indexed_setting_has_a_column_of_its_kind(gallery: Gallery) -> None:
    columns = _columns(gallery)
    indexed = [info for info in request_fields() if info.spec.index]
    assert indexed, "the request declares no indexed setting"
    types = {"int": "INTEGER", "float": "REAL", "text": "TEXT"}
    for info in indexed:
        column = next(c.column for c in gallery_module.setting_columns() if c.name == info.name)
        assert columns[column] == types[info.kind], info.name
    for name in ("path", "root", "mtime_ns", "size", "source", "created", "favourite"):
        assert name in columns
    assert {"model", "prompt_fold", "request"} <= set(columns)
    # Nothing else: a setting without index=True has no column.
    unindexed = {info.name for info in request_fields() if not info.spec.index}
    assert not (unindexed - {"model"}) & set(columns)


def _distinct_value(info):
    """A valid value for ``info`` that differs from its default."""
    if info.name == "sampler":
        return "DPM++ 2M"
    if info.name == "schedule":
        return "Karras"
    if info.kind == "int":
        return int(info.default if info.default not in (None, -1) else 0) + 8
    if info.kind == "float":
        return float(info.default or 0) + 1.5
    return f"{info.name} text Ünïcode"


def test_indexed_settings_round_trip_through_save_and_search(gallery: Gallery) -> None:
    values = {info.name: _distinct_value(info) for info in request_fields() if info.spec.index}
    request = GenerationRequest(**values)
    saved = gallery.save(_image(), request)
    (found,) = gallery.search(request.prompt.split()[0].upper())
    assert found == saved
    assert found.request == request
    for name, value in values.items():
        assert found.value(name) == value, name
        assert getattr(found, name) == value, name
    # The same item comes back from a sync that reads the file again.
    with gallery._lock:
        gallery._conn.execute("DELETE FROM images")
        gallery._conn.commit()
    assert gallery.sync() == (1, 0)
    resynced = gallery.get(saved.path)
    assert resynced is not None
    assert resynced.request == request
    assert {name: resynced.value(name) for name in values} == values


def test_item_without_a_request_reads_empty_settings(gallery: Gallery) -> None:
    plain = gallery.root / "photo.png"
    plain.parent.mkdir(parents=True)
    _image().save(plain)
    assert gallery.sync() == (1, 0)
    item = gallery.get(plain)
    assert item is not None and item.request is None
    assert (item.prompt, item.negative_prompt, item.sampler) == ("", "", "")
    assert (item.seed, item.steps, item.cfg_scale, item.width, item.height) == (None,) * 5
    assert item.value("strength") is None  # declared but not indexed: from the request
    with pytest.raises(AttributeError):
        _ = item.not_a_setting
    with pytest.raises(KeyError):
        item.value("not_a_setting")


def test_changed_declarations_rebuild_the_index_and_keep_favourites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, index = tmp_path / "out", tmp_path / "g.sqlite3"
    with Gallery(root, index) as first:
        kept = first.save(_image(), _request("a favourite", seed=1))
        first.save(_image(), _request("another", seed=2))
        first.set_favourite(kept.path, True)
    # The same declarations open the index as it is.
    with Gallery(root, index) as same:
        assert same.count() == 2
    # A new signature (as when a setting gains or loses index=True) drops the table.
    monkeypatch.setattr(gallery_module, "schema_signature", lambda: "changed columns")
    with Gallery(root, index) as rebuilt:
        assert rebuilt.count() == 0
        with rebuilt._lock:
            signature = rebuilt._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema'"
            ).fetchone()[0]
        assert signature == "changed columns"
        assert rebuilt.sync() == (2, 0)
        assert [i.prompt for i in rebuilt.search(favourites=True)] == ["a favourite"]


def test_index_with_other_columns_is_rebuilt(tmp_path: Path) -> None:
    # An index made by an older Sandstorm: other columns, another signature.
    root, index = tmp_path / "out", tmp_path / "g.sqlite3"
    with Gallery(root, index) as first:
        first.save(_image(), _request("old layout", seed=4))
    import sqlite3

    conn = sqlite3.connect(index)
    conn.executescript(
        "DROP TABLE images; CREATE TABLE images (path TEXT PRIMARY KEY, prompt TEXT);"
        "UPDATE meta SET value = '1' WHERE key = 'schema';"
    )
    conn.close()
    with Gallery(root, index) as second:
        assert "request" in _columns(second)
        assert second.sync() == (1, 0)
        assert second.search("layout")[0].seed == 4


def test_sync_stops_when_asked_and_continues_later(gallery: Gallery) -> None:
    for seed in range(5):
        gallery.save(_image(), _request(f"stop {seed}", seed=seed))
    with gallery._lock:
        gallery._conn.execute("DELETE FROM images")
        gallery._conn.commit()
    asked = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) > 3

    added, _ = gallery.sync(should_stop=stop_after_two)
    assert 0 < added < 5
    assert gallery.sync() == (5 - added, 0)
    assert gallery.count() == 5


def test_index_files_reads_only_those(gallery: Gallery) -> None:
    item = gallery.save(_image(), _request("restored", seed=8))
    gallery.forget(item.path)
    (found,) = gallery.index_files([item.path, gallery.root / "gone.png"])
    assert found.path == item.path and found.prompt == "restored"
    assert gallery.count() == 1


def test_closed_gallery_raises_a_clear_error(tmp_path: Path) -> None:
    opened = Gallery(tmp_path / "out", tmp_path / "g.sqlite3")
    opened.close()
    opened.close()
    assert opened.closed
    with pytest.raises(SandstormError, match="closed"):
        opened.search()


def test_the_mask_of_an_inpainting_image_is_kept_in_the_gallery(
    gallery: Gallery, tmp_path: Path
) -> None:
    from desktop.engine.parts import MaskSpec

    init, mask = tmp_path / "init.png", tmp_path / "painted.png"
    _image().save(init)
    Image.new("L", (8, 8), 255).save(mask)
    request = _request(init_image=str(init), mask=MaskSpec(image=str(mask), blur=2))
    first = gallery.save(_image(), request)
    second = gallery.save(_image("blue"), _request(seed=43, **_mask_of(request)))
    mask.unlink()  # the painted file is gone; the gallery's copy is what Reuse reads

    saved = read_metadata(first.path).request
    assert saved is not None and saved.mask is not None
    kept = Path(saved.mask.image)
    assert kept.parent == gallery.root / ".masks" and kept.is_file()
    assert (saved.mask.blur, saved.init_image) == (2, str(init))
    assert Image.open(kept).getextrema() == (255, 255)
    assert read_metadata(second.path).request.mask.image == str(kept)  # one copy per mask
    assert first.request.mask.image == str(kept)
    gallery.sync()
    assert {item.path for item in gallery.search()} == {first.path, second.path}


def _mask_of(request: GenerationRequest) -> dict:
    return {"init_image": request.init_image, "mask": request.mask}


def test_control_images_are_kept_in_the_gallery(gallery: Gallery, tmp_path: Path) -> None:
    from desktop.engine.parts import ControlUnit

    sketch = tmp_path / "sketch.png"
    Image.new("RGB", (8, 8), "white").save(sketch)
    request = _request(controls=(ControlUnit("scribble", str(sketch), strength=0.7),))
    item = gallery.save(_image(), request)
    sketch.unlink()
    saved = read_metadata(item.path).request
    assert saved is not None
    kept = Path(saved.controls[0].image)
    assert kept.parent == gallery.root / ".controls" and kept.is_file()
    assert saved.controls[0].strength == 0.7


def test_reference_images_are_kept_in_the_gallery(gallery: Gallery, tmp_path: Path) -> None:
    from desktop.engine.parts import ReferenceImage

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), "orange").save(photo)
    request = _request(references=(ReferenceImage(str(photo), weight=0.6, model="ip_sd15"),))
    first = gallery.save(_image(), request)
    second = gallery.save(_image(), request)
    photo.unlink()  # the picked file is gone; the gallery's copy is what Reuse reads
    saved = read_metadata(first.path).request
    assert saved is not None
    kept = Path(saved.references[0].image)
    assert kept.parent == gallery.root / ".references" and kept.suffix == ".jpg"
    with Image.open(kept) as copy:
        assert copy.size == (8, 8)
    assert (saved.references[0].weight, saved.references[0].model) == (0.6, "ip_sd15")
    assert read_metadata(second.path).request.references[0].image == str(kept)  # one copy
    gallery.sync()
    assert {item.path for item in gallery.search()} == {first.path, second.path}
