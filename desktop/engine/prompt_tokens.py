"""Prompt pieces to CLIP token chunks, by AUTOMATIC1111's rules (no torch: the prompt box
counts tokens with this while the user types).

Each piece is tokenized on its own and every token carries its piece's weight; chunks hold
75 tokens (77 less BOS and EOS); a full chunk ends after a comma among its last 20 tokens;
``BREAK`` ends a chunk. A tokenizer whose window is not 77 (the built-in model's 32) gets
one chunk, and what does not fit is counted as dropped.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.engine import paths
from desktop.engine.prompt_syntax import Piece

#: Tokens per chunk between BOS and EOS for CLIP's 77-position window.
CHUNK = 75
#: A full chunk ends after a comma when one is among its last this many tokens.
COMMA_BACKTRACK = 20
STANDARD_LENGTH = 77


@dataclass
class Chunk:
    """Up to ``CHUNK`` token ids and their weights (no BOS/EOS yet)."""

    ids: list[int]
    weights: list[float]
    #: Embedding vectors that replace placeholder tokens: (position, trigger, vector index).
    slots: list[tuple[int, str, int]] = field(default_factory=list)


@dataclass
class Tokenized:
    chunks: list[Chunk]
    #: Tokens dropped because the model reads one chunk only (the built-in model).
    dropped: int = 0
    kept_text: str = ""


def _comma_id(tokenizer: Any) -> int | None:
    ids = tokenizer(",", add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 else None


def chunk_size(tokenizer: Any) -> tuple[int, bool]:
    """(tokens per chunk, whether several chunks may be used) for ``tokenizer``."""
    limit = int(getattr(tokenizer, "model_max_length", STANDARD_LENGTH))
    if limit > 10_000:  # tokenizers without a real limit report a huge sentinel
        limit = STANDARD_LENGTH
    return limit - 2, limit == STANDARD_LENGTH


def _placeholder_id(tokenizer: Any) -> int:
    """An ordinary token id to stand where an embedding's vectors go (never EOS: CLIP's
    pooled output is read at the first EOS)."""
    ids = tokenizer("*", add_special_tokens=False).input_ids
    eos = getattr(tokenizer, "eos_token_id", None)
    if len(ids) == 1 and ids[0] != eos:
        return int(ids[0])
    return int(getattr(tokenizer, "bos_token_id", 0) or 0)


def _trigger_pattern(triggers: Mapping[str, int]) -> re.Pattern[str] | None:
    if not triggers:
        return None
    names = "|".join(re.escape(name) for name in sorted(triggers, key=len, reverse=True))
    return re.compile(
        rf"(?<![\w])(?:embedding:)?({names})(?:\.(?:safetensors|pt|bin))?(?![\w])",
        re.IGNORECASE,
    )


def _segments(text: str, pattern: re.Pattern[str] | None) -> list[tuple[str, bool]]:
    """``text`` split into (text, False) and (embedding trigger, True) parts."""
    if pattern is None:
        return [(text, False)]
    parts: list[tuple[str, bool]] = []
    at = 0
    for match in pattern.finditer(text):
        if match.start() > at:
            parts.append((text[at : match.start()], False))
        parts.append((match.group(1).lower(), True))
        at = match.end()
    if at < len(text):
        parts.append((text[at:], False))
    return parts


def tokenize(
    tokenizer: Any, pieces: Sequence[Piece], triggers: Mapping[str, int] | None = None
) -> Tokenized:
    """Split ``pieces`` into weighted chunks by the rules in the module docstring.

    ``triggers``: embedding trigger words (lower case) and how many vectors each stands
    for; each occurrence becomes that many placeholder tokens, recorded in ``Chunk.slots``
    and kept together in one chunk.
    """
    size, many = chunk_size(tokenizer)
    comma = _comma_id(tokenizer)
    pattern = _trigger_pattern(triggers or {})
    placeholder = _placeholder_id(tokenizer) if pattern is not None else 0
    chunks: list[Chunk] = []
    current = Chunk([], [])
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current = Chunk([], [])
        last_comma = -1

    def add_tokens(ids: list[int], weight: float) -> None:
        nonlocal current, last_comma
        for token in ids:
            if len(current.ids) == size:
                if last_comma >= 0 and len(current.ids) - last_comma - 1 <= COMMA_BACKTRACK:
                    # The chunk ends after its last comma; the words after it move on.
                    cut = last_comma + 1
                    moved = [(p - cut, n, i) for p, n, i in current.slots if p >= cut]
                    kept = [slot for slot in current.slots if slot[0] < cut]
                    rest = Chunk(current.ids[cut:], current.weights[cut:], moved)
                    current = Chunk(current.ids[:cut], current.weights[:cut], kept)
                    close()
                    current = rest
                else:
                    close()
            if token == comma:
                last_comma = len(current.ids)
            current.ids.append(token)
            current.weights.append(weight)

    def add_embedding(name: str, weight: float) -> None:
        count = (triggers or {})[name]
        if len(current.ids) + count > size and current.ids and count <= size:
            close()
        for index in range(count):
            if len(current.ids) == size:
                close()
            current.slots.append((len(current.ids), name, index))
            current.ids.append(placeholder)
            current.weights.append(weight)

    for piece in pieces:
        if piece.brk:
            close()
            continue
        for text, is_embedding in _segments(piece.text, pattern) if piece.text else []:
            if is_embedding:
                add_embedding(text, piece.weight)
            else:
                add_tokens(tokenizer(text, add_special_tokens=False).input_ids, piece.weight)
    if current.ids or not chunks:
        chunks.append(current)
    if many or len(chunks) == 1:
        return Tokenized(chunks)
    dropped = sum(len(c.ids) for c in chunks[1:])
    return Tokenized(chunks[:1], dropped=dropped, kept_text=tokenizer.decode(chunks[0].ids))


def token_count(
    tokenizer: Any, pieces: Sequence[Piece], triggers: Mapping[str, int] | None = None
) -> tuple[int, int]:
    """(tokens used, capacity of the chunks they fill): A1111's "31/75", "80/150"; an
    embedding in ``triggers`` counts as its vectors."""
    tokenized = tokenize(tokenizer, pieces, triggers)
    size, _ = chunk_size(tokenizer)
    used = sum(len(c.ids) for c in tokenized.chunks) + tokenized.dropped
    return used, size * max(1, len(tokenized.chunks))


# -- counting while the user types ----------------------------------------------------------


@dataclass
class _Encoding:
    input_ids: list[int]


class TextTokenizer:
    """A CLIP tokenizer read from a ``tokenizer.json`` with the ``tokenizers`` library only
    (fast to load, no torch, no transformers), for counting tokens in the prompt box."""

    def __init__(self, path: Path, model_max_length: int = STANDARD_LENGTH) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        # A saved tokenizer.json may carry padding/truncation settings; counting needs neither.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.model_max_length = model_max_length

    def __call__(self, text: str, add_special_tokens: bool = False) -> _Encoding:
        ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return _Encoding(list(ids))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids))


#: The CLIP ViT-L/14 vocabulary that SD1.5, SD2 and both SDXL encoders share.
CLIP_TOKENIZER = paths.RESOURCES / "tokenizers" / "clip"


def counting_tokenizer(model_folder: Path | None = None) -> TextTokenizer:
    """The tokenizer to count a model's prompt with: its own ``tokenizer/tokenizer.json``
    when it has one (the built-in model's 32-token window), else the shared CLIP one."""
    folder = CLIP_TOKENIZER
    if model_folder is not None and (model_folder / "tokenizer" / "tokenizer.json").is_file():
        folder = model_folder / "tokenizer"
    limit = STANDARD_LENGTH
    config = folder / "tokenizer_config.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        limit = int(json.loads(config.read_text(encoding="utf-8"))["model_max_length"])
    return TextTokenizer(folder / "tokenizer.json", limit if limit < 10_000 else STANDARD_LENGTH)


@dataclass(frozen=True)
class TokenCount:
    """What the prompt box shows: "31/75", and whether the model will cut the prompt."""

    used: int
    capacity: int
    cut: bool = False

    @property
    def text(self) -> str:
        return f"{self.used}/{self.capacity}"


def count_prompt(
    tokenizer: Any, text: str, triggers: Mapping[str, int] | None = None
) -> TokenCount:
    """Tokens of ``text`` as it will be encoded (tags removed, weights parsed, embeddings in
    ``triggers`` as their vectors; the longest step when the prompt is edited during
    sampling)."""
    from desktop.engine.prompt_syntax import parse_prompt

    best = TokenCount(0, chunk_size(tokenizer)[0])
    for _, pieces in parse_prompt(text, steps=20).schedule:
        used, capacity = token_count(tokenizer, pieces, triggers)
        # A one-chunk model drops what does not fit, and everything after a BREAK.
        cut = tokenize(tokenizer, pieces, triggers).dropped > 0
        count = TokenCount(used, capacity, cut=cut)
        if count.used > best.used:
            best = count
    return best
