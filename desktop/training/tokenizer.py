"""A word-level ``CLIPTokenizer`` for the built-in model's small vocabulary.

``CLIPTokenizer`` is a byte-pair encoder: it splits a word into characters (the last one
marked ``</w>``) and applies merges in rank order. Writing a vocabulary of whole words plus,
for each word, the merges that join its pieces from left to right makes every domain word a
single token, while any other text still falls back to single characters.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 32


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (as in the original BPE code)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encode ``pieces`` the way CLIP does: lowest-ranked pair first."""
    while len(pieces) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(itertools.pairwise(pieces))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges that make each of ``words`` one token.

    Merges for a word are appended after all earlier ones, so they only act once the
    earlier merges are exhausted and never change how an earlier word is split.
    """
    base = list(bytes_to_unicode().values())
    tokens: list[str] = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(words)):
        pieces = _apply_merges([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
            pieces = [pair[0] + pair[1], *pieces[2:]]
    vocab: dict[str, int] = {}
    for token in [*tokens, BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_tokenizer(folder: Path, words: Iterable[str], max_length: int = MAX_LENGTH) -> Path:
    """Write a ``CLIPTokenizer`` folder (vocab.json, merges.txt, configs) for ``words``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")
    return folder


def load_tokenizer(folder: Path):
    """Load the tokenizer written by :func:`write_tokenizer`."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
