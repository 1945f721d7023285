"""Model hashes as AUTOMATIC1111 and Civitai know them ("AutoV2": sha256, first 10 hex digits).

Hashing a multi-gigabyte checkpoint takes seconds, so every result is cached on disk in
``paths.cache_dir()/model_hashes.json``, keyed by path, size and modification time: a model
is hashed once, and again only when the file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from desktop.engine import paths
from desktop.engine.errors import ModelError

CHUNK_SIZE = 4 * 1024 * 1024
SHORT_HASH_LENGTH = 10
CACHE_VERSION = 1

#: Where a diffusers folder keeps its UNet weights, most common first.
UNET_WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
)

_lock = threading.Lock()


def default_cache_path() -> Path:
    return paths.cache_dir() / "model_hashes.json"


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Full sha256 hex digest of a file, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def hash_target(model_path: Path | str) -> Path:
    """The file whose hash identifies a model: the file itself, or a diffusers folder's UNet.

    Raises:
        ModelError: the path does not exist or the folder has no UNet weights.
    """
    path = Path(model_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for relative in UNET_WEIGHT_FILES:
            candidate = path / relative
            if candidate.is_file():
                return candidate
        raise ModelError(f"{path} has no UNet weights file to hash.")
    raise ModelError(f"The model {path} does not exist.")


def _cache_key(target: Path) -> tuple[str, int, int]:
    stat = target.stat()
    return str(target.resolve()), stat.st_size, stat.st_mtime_ns


def _load_cache(cache_path: Path) -> dict[str, dict]:
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("files")
    return entries if isinstance(entries, dict) else {}


def _store_cache(cache_path: Path, entries: dict[str, dict]) -> None:
    # Written to a temporary file and renamed so a crash never leaves half a JSON file;
    # the cache is disposable, so a failure to write it is not an error.
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"version": CACHE_VERSION, "files": entries}, indent=1), encoding="utf-8"
        )
        os.replace(tmp, cache_path)
    except OSError:
        pass


def cached_sha256(model_path: Path | str, cache_path: Path | None = None) -> str | None:
    """The full sha256 of a model if it is already cached and the file is unchanged; no hashing."""
    try:
        target = hash_target(model_path)
        key, size, mtime = _cache_key(target)
    except (ModelError, OSError):
        return None
    with _lock:
        entry = _load_cache(cache_path or default_cache_path()).get(key)
    if isinstance(entry, dict) and entry.get("size") == size and entry.get("mtime_ns") == mtime:
        value = entry.get("sha256")
        return value if isinstance(value, str) else None
    return None


def model_sha256(model_path: Path | str, cache_path: Path | None = None) -> str:
    """Full sha256 of a model's identifying file, from the cache when the file is unchanged.

    Raises:
        ModelError: the model is missing or cannot be read.
    """
    cache_path = cache_path or default_cache_path()
    cached = cached_sha256(model_path, cache_path)
    if cached is not None:
        return cached
    target = hash_target(model_path)
    try:
        key, size, mtime = _cache_key(target)
        digest = sha256_file(target)
    except OSError as exc:
        raise ModelError(f"Could not read {target} to hash it: {exc.strerror or exc}.") from exc
    with _lock:
        # Re-read under the lock so two threads hashing different models keep both entries.
        entries = _load_cache(cache_path)
        entries[key] = {"size": size, "mtime_ns": mtime, "sha256": digest}
        _store_cache(cache_path, entries)
    return digest


def model_hash(model_path: Path | str, cache_path: Path | None = None) -> str:
    """AUTOMATIC1111's "AutoV2" model hash: the first 10 hex digits of the sha256."""
    return model_sha256(model_path, cache_path)[:SHORT_HASH_LENGTH]
