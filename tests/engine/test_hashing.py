"""Model hashes (AUTOMATIC1111's "AutoV2") and their on-disk cache.

test_gallery.py covers the cache's basic reuse by path, size and mtime; these cover what
is hashed, the cache's robustness and concurrent use.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from desktop.engine import hashing, paths
from desktop.engine.errors import ModelError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sha256_file_reads_in_chunks_and_matches_hashlib(tmp_path: Path):
    data = bytes(range(256)) * 1000 + b"tail"
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    assert hashing.sha256_file(path, chunk_size=1000) == _sha(data)
    assert hashing.sha256_file(path) == _sha(data)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert hashing.sha256_file(empty) == _sha(b"")


def test_model_hash_is_the_first_ten_hex_digits(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    short = hashing.model_hash(path, tmp_path / "cache.json")
    assert short == _sha(b"weights")[: hashing.SHORT_HASH_LENGTH]
    assert len(short) == 10


def test_diffusers_folder_is_identified_by_its_unet_preferring_safetensors(tmp_path: Path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    assert hashing.hash_target(folder) == folder / "unet" / "diffusion_pytorch_model.bin"
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"half")
    assert hashing.hash_target(folder).name == "diffusion_pytorch_model.fp16.safetensors"
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"full")
    assert hashing.hash_target(folder).name == "diffusion_pytorch_model.safetensors"
    assert hashing.model_sha256(folder, tmp_path / "cache.json") == _sha(b"full")


def test_missing_models_are_model_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="has no UNet weights"):
        hashing.hash_target(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        hashing.model_hash(tmp_path / "gone.safetensors", tmp_path / "cache.json")
    assert hashing.cached_sha256(tmp_path / "gone.safetensors", tmp_path / "cache.json") is None


def test_an_unreadable_file_is_a_clear_model_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "locked.safetensors"
    path.write_bytes(b"x")

    def refuse(target, chunk_size=hashing.CHUNK_SIZE):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(hashing, "sha256_file", refuse)
    with pytest.raises(
        ModelError, match=r"Could not read .*locked\.safetensors.*Permission denied"
    ):
        hashing.model_hash(path, tmp_path / "cache.json")


def test_cache_defaults_to_the_cache_folder(tmp_path: Path):
    assert hashing.default_cache_path() == paths.cache_dir() / "model_hashes.json"
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"abc")
    hashing.model_hash(path)
    stored = json.loads(hashing.default_cache_path().read_text(encoding="utf-8"))
    assert stored["files"][str(path.resolve())]["sha256"] == _sha(b"abc")


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"version": 99, "files": {}}', '{"version": 1, "files": []}'],
)
def test_a_damaged_or_foreign_cache_is_ignored_and_rewritten(tmp_path: Path, content: str):
    cache = tmp_path / "cache.json"
    cache.write_text(content, encoding="utf-8")
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"abc")
    assert hashing.cached_sha256(path, cache) is None
    assert hashing.model_sha256(path, cache) == _sha(b"abc")
    assert json.loads(cache.read_text(encoding="utf-8"))["version"] == hashing.CACHE_VERSION
    assert hashing.cached_sha256(path, cache) == _sha(b"abc")


def test_a_cache_that_cannot_be_written_is_not_an_error(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"abc")
    cache = blocker / "cache.json"
    assert hashing.model_hash(path, cache) == _sha(b"abc")[:10]
    assert hashing.cached_sha256(path, cache) is None


def test_hashing_models_from_threads_keeps_every_entry(tmp_path: Path):
    cache = tmp_path / "cache.json"
    files = []
    for i in range(8):
        path = tmp_path / f"model-{i}.safetensors"
        path.write_bytes(f"weights {i}".encode())
        files.append(path)
    results: dict[Path, str] = {}
    errors: list[BaseException] = []

    def work(path: Path) -> None:
        try:
            results[path] = hashing.model_sha256(path, cache)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert results == {path: _sha(path.read_bytes()) for path in files}
    entries = json.loads(cache.read_text(encoding="utf-8"))["files"]
    assert set(entries) == {str(path.resolve()) for path in files}
    assert not list(tmp_path.glob(".cache.json.*.tmp"))
