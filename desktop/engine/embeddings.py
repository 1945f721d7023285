"""Textual-inversion embeddings: files read safely, and the vectors a prompt's triggers use.

An embedding is triggered by its file name in a prompt (AUTOMATIC1111: ``easynegative``) or
by ``embedding:name`` (ComfyUI). Its vectors take the place of the trigger's tokens: the
tokenizer puts placeholders there (``prompt_tokens.tokenize``) and the prompt encoder swaps
the token embeddings at those positions for the file's vectors, so the tokenizer and the
text encoder's weights are never changed and nothing is left behind after a job.

Formats: AUTOMATIC1111 ``.pt`` (``string_to_param``), ``.safetensors`` (``emb_params``),
diffusers ``.bin`` (``{token: vector}``) and SDXL files with ``clip_l`` and ``clip_g``.
``.pt`` and ``.bin`` files are read with ``torch.load(weights_only=True)``, which cannot run
code; a file that needs more is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine.errors import ModelError

if TYPE_CHECKING:
    import torch

SUFFIXES = (".safetensors", ".pt", ".bin")
_COMFY_TRIGGER = re.compile(r"\bembedding:([^\s,()\[\]:|<>]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Embedding:
    """One embedding's vectors per text encoder ("text_encoder", "text_encoder_2")."""

    name: str
    path: Path
    vectors: Mapping[str, torch.Tensor]

    @property
    def count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])


def _tensors(path: Path) -> dict[str, Any]:
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelError(
                f"The embedding {path.name} holds more than tensors, and reading it could run "
                "code, so Sandstorm does not open it; use its .safetensors version."
            ) from exc
        raise ModelError(
            f"The embedding file {path.name} is damaged or cannot be read ({detail[:160]})."
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"The embedding file {path.name} is not in a known format.")
    return data


def _as_matrix(value: Any, path: Path) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or value.numel() == 0:
        raise ModelError(f"The embedding file {path.name} is not in a known format.")
    return value.detach().to(torch.float32).reshape(-1, value.shape[-1])


def read_embedding(path: Path, name: str) -> Embedding:
    """Read an embedding file; ``ModelError`` with a clear message when it is unusable."""
    import torch

    data = _tensors(path)
    if "clip_l" in data or "clip_g" in data:
        vectors = {}
        if "clip_l" in data:
            vectors["text_encoder"] = _as_matrix(data["clip_l"], path)
        if "clip_g" in data:
            vectors["text_encoder_2"] = _as_matrix(data["clip_g"], path)
        return Embedding(name, path, vectors)
    params = data.get("string_to_param")
    if isinstance(params, dict) and params:
        return Embedding(
            name, path, {"text_encoder": _as_matrix(next(iter(params.values())), path)}
        )
    if "emb_params" in data:
        return Embedding(name, path, {"text_encoder": _as_matrix(data["emb_params"], path)})
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers' {token: vector}
        return Embedding(name, path, {"text_encoder": _as_matrix(tensors[0], path)})
    raise ModelError(f"The embedding file {path.name} is not in a known format.")


def comfy_triggers(text: str) -> list[str]:
    """The names in ``embedding:name`` triggers (file suffixes dropped)."""
    names = []
    for match in _COMFY_TRIGGER.finditer(text or ""):
        name = match.group(1)
        for suffix in SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        names.append(name)
    return names


@dataclass
class EmbeddingSet:
    """The embeddings a job's prompts trigger, by lower-cased name."""

    items: dict[str, Embedding] = field(default_factory=dict)

    def triggers(self) -> dict[str, int]:
        """Trigger word (lower case) → how many vectors it stands for."""
        return {name: embedding.count for name, embedding in self.items.items()}

    def vector(self, name: str, index: int, encoder: str) -> torch.Tensor | None:
        embedding = self.items.get(name.lower())
        if embedding is None:
            return None
        vectors = embedding.vectors.get(encoder)
        return None if vectors is None else vectors[index]

    def check_widths(self, widths: Mapping[str, int], family: str) -> None:
        """Refuse an embedding made for another model (its vectors' width differs)."""
        for embedding in self.items.values():
            for encoder, width in widths.items():
                vectors = embedding.vectors.get(encoder)
                if vectors is None:
                    if encoder == "text_encoder":
                        raise ModelError(
                            f"The embedding {embedding.path.name} has no vectors for this "
                            f"model's text encoder; it is probably made for another kind of "
                            f"model than {family or 'this one'}."
                        )
                    continue
                if vectors.shape[-1] != width:
                    made_for = {768: "SD 1.x", 1024: "SD 2.x"}.get(int(vectors.shape[-1]))
                    hint = f"made for {made_for} models" if made_for else "made for another model"
                    raise ModelError(
                        f"The embedding {embedding.path.name} is {hint} (its vectors are "
                        f"{vectors.shape[-1]} wide; this model's are {width}); remove "
                        f"“{embedding.name}” from the prompt or pick a matching model."
                    )


class EmbeddingLibrary:
    """Reads the embeddings a job needs from the installed files (cached by file)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Embedding] = {}

    def for_prompts(
        self, prompts: Sequence[str], extra_sources: Sequence[Any] = ()
    ) -> EmbeddingSet:
        """The embeddings ``prompts`` trigger. Raises ``ModelError`` for an ``embedding:name``
        that is not installed and for a file that cannot be read."""
        from desktop.engine.extra_networks import find_network, list_embeddings, missing_message

        text = "\n".join(prompts)
        found: dict[str, Any] = {}
        for name in comfy_triggers(text):
            item = find_network("embedding", name, extra_sources)
            if item is None:
                raise ModelError(missing_message("embedding", name, extra_sources))
            found[item.name.lower()] = item
        lowered = text.lower()
        for item in list_embeddings(extra_sources):
            key = item.name.lower()
            if key in found or key not in lowered:
                continue
            if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", lowered):
                found[key] = item
        result = EmbeddingSet()
        for key, item in found.items():
            if item.problem:
                raise ModelError(f"The embedding {item.path.name} cannot be used: {item.problem}.")
            result.items[key] = self._read(Path(item.path), item.name)
        return result

    def _read(self, path: Path, name: str) -> Embedding:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = read_embedding(path, name)
        return self._cache[key]


def installed_triggers(extra_sources: Sequence[Any] = ()) -> dict[str, int]:
    """Trigger word (lower case) → vector count of every installed embedding that can be
    read: what the prompt box's token counter needs to count an embedding as A1111 does."""
    from desktop.engine.extra_networks import list_embeddings

    library = EmbeddingLibrary()
    triggers: dict[str, int] = {}
    for item in list_embeddings(extra_sources):
        if item.problem:
            continue
        try:
            path = Path(item.path)
            count = _safetensors_count(path)
            if count is None:
                count = library._read(path, item.name).count
            triggers[item.name.lower()] = count
        except (ModelError, OSError):
            continue  # a job using it says why; counting must not fail on it
    return triggers


def _safetensors_count(path: Path) -> int | None:
    """An embedding's vector count read from a ``.safetensors`` header alone (no torch, so
    the window can count tokens before any model library is imported); None when the
    header does not say (the file is then read in full)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 16 * 1024 * 1024:
                return None
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return None
    shapes = {
        key: value.get("shape")
        for key, value in header.items()
        if key != "__metadata__" and isinstance(value, dict)
    }
    for key in ("clip_l", "clip_g", "emb_params"):
        if key in shapes:
            break
    else:
        if len(shapes) != 1:
            return None
        key = next(iter(shapes))
    shape = shapes[key]
    if (
        not isinstance(shape, list)
        or len(shape) not in (1, 2)
        or not all(isinstance(n, int) and n > 0 for n in shape)
    ):
        return None
    return 1 if len(shape) == 1 else shape[0]
