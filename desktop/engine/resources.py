"""The LoRAs and embeddings a request uses, and their hashes as AUTOMATIC1111 writes them.

A request names LoRAs in two ways: ``<lora:name:te:unet>`` tags in its prompts (what users
type and paste) and its ``loras`` list (the command line, programs). Both count; a LoRA named
twice is applied once, with the first strengths.

The infotext carries ``Lora hashes: "name: 0123456789ab, …"`` and
``TI hashes: "name: 0123456789ab, …"``: the first 12 hex digits of each file's sha256, which
model sites use to link the resources an image was made with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from desktop.engine.prompt_syntax import extract_tags
from desktop.engine.request import GenerationRequest

#: Tag kinds that name a LoRA (A1111 accepted ``lyco`` for LyCORIS files).
LORA_KINDS = ("lora", "lyco")
RESOURCE_HASH_LENGTH = 12


def used_loras(request: GenerationRequest) -> list[tuple[str, float, float]]:
    """(name, UNet strength, text strength) of each LoRA the request uses, in order."""
    found: list[tuple[str, float, float]] = []
    seen: set[str] = set()

    def add(name: str, unet: float, text: float) -> None:
        if name and name.lower() not in seen:
            seen.add(name.lower())
            found.append((name, unet, text))

    for text in (request.prompt, request.negative_prompt or ""):
        _, tags, _ = extract_tags(text)
        for tag in tags:
            if tag.kind in LORA_KINDS:
                add(tag.name, tag.unet, tag.te)
    for lora in request.loras:
        add(lora.name, lora.unet_strength, lora.text_strength)
    return found


@dataclass(frozen=True)
class Resources:
    """What one image was made with beyond its request: the hashed LoRAs and embeddings
    ((name, short hash) pairs) and, for an image made on a ComfyUI server, the server's name
    (never its access token) and the API graph it ran (JSON, saved as ComfyUI's ``prompt``
    chunk, so ComfyUI opens the image as that graph)."""

    loras: tuple[tuple[str, str], ...] = ()
    embeddings: tuple[tuple[str, str], ...] = ()
    server: str = ""
    graph: str = ""

    def infotext_items(self) -> list[tuple[str, str]]:
        pairs = []
        if self.loras:
            pairs.append(("Lora hashes", format_hash_list(self.loras)))
        if self.embeddings:
            pairs.append(("TI hashes", format_hash_list(self.embeddings)))
        if self.server:
            pairs.append(("Server", self.server))
        return pairs


def format_hash_list(pairs: Sequence[tuple[str, str]]) -> str:
    """``name: hash, name: hash`` (the infotext writer quotes it)."""
    return ", ".join(f"{name}: {digest}" for name, digest in pairs)


_HASH_ITEM = re.compile(r"\s*([^,:]+?)\s*:\s*([0-9a-fA-F]{8,64})\s*(?:,|$)")


def parse_hash_list(text: str) -> list[tuple[str, str]]:
    """The (name, hash) pairs of a ``Lora hashes`` / ``TI hashes`` value."""
    text = text.strip().strip('"')
    return [(m.group(1), m.group(2).lower()) for m in _HASH_ITEM.finditer(text)]


def short_file_hash(path: Path) -> str | None:
    """The first 12 hex digits of a file's sha256 (cached), or None when it cannot be read."""
    from desktop.engine import hashing
    from desktop.engine.errors import ModelError

    try:
        return hashing.model_sha256(path)[:RESOURCE_HASH_LENGTH]
    except (ModelError, OSError):
        return None


def hash_resources(
    loras: Iterable[tuple[str, Path]], embeddings: Iterable[tuple[str, Path]]
) -> Resources:
    """``Resources`` for the LoRA and embedding files a job used: (name as the prompt wrote
    it, file) pairs, each hashed once (cached by file); unreadable files are left out."""

    def hashed(items: Iterable[tuple[str, Path]]) -> tuple[tuple[str, str], ...]:
        pairs: dict[str, tuple[str, str]] = {}
        for name, path in items:
            digest = short_file_hash(Path(path))
            if digest and name.lower() not in pairs:
                pairs[name.lower()] = (name, digest)
        return tuple(pairs.values())

    return Resources(hashed(loras), hashed(embeddings))
