"""Weighted prompts of any length to text embeddings, by AUTOMATIC1111's rules.

- Each piece of a parsed prompt (``desktop.engine.prompt_syntax``) is tokenized on its own;
  every token carries its piece's weight.
- Tokens go into chunks of 75 (the CLIP window of 77 less BOS and EOS). When a chunk fills
  up and a comma sits among its last 20 tokens, the chunk ends after that comma and the rest
  moves on (so phrases are not cut in half). ``BREAK`` ends a chunk at once.
- Each chunk is wrapped in BOS/EOS, padded with the tokenizer's pad token, encoded on its
  own, multiplied by the token weights and rescaled so its mean is the unweighted mean
  (what keeps ``(word:1.5)`` from just making the whole embedding louder). Chunks are
  concatenated along the sequence: 77, 154, 231... positions.
- The positive and negative prompts are padded with encoded empty chunks to the same
  length. SDXL encodes with both text encoders (hidden states concatenated) and takes the
  pooled embedding from the first chunk of the second; an empty SDXL negative is zeros, as
  in diffusers and AUTOMATIC1111.
- Clip skip uses AUTOMATIC1111's numbering: 1 is the last layer; N takes the N-th layer
  from the end through the final layer norm (SD1/SD2). SDXL always reads the penultimate
  layer or an earlier one.

Textual-inversion embeddings (``desktop.engine.embeddings``) take the place of their
trigger words: the tokenizer leaves placeholders and the token embeddings at those
positions are swapped for the file's vectors while each chunk is encoded.

Models whose text encoder is not 77 tokens long (the built-in model reads 32) get one chunk
and a warning when the prompt is cut, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from desktop.engine.embeddings import EmbeddingSet
from desktop.engine.prompt_syntax import Piece
from desktop.engine.prompt_tokens import STANDARD_LENGTH, Chunk, chunk_size, tokenize

__all__ = ["STANDARD_LENGTH", "Encoded", "PromptEmbeds", "PromptEncoder"]


def _ids(tokenizer: Any, chunk: Chunk, size: int) -> tuple[list[int], list[float]]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padding = size - len(chunk.ids)
    ids = [tokenizer.bos_token_id, *chunk.ids, tokenizer.eos_token_id] + [pad] * padding
    weights = [1.0, *chunk.weights, 1.0] + [1.0] * padding
    return ids, weights


def _final_norm(encoder: Any) -> Any:
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def _hidden(encoder: Any, ids: torch.Tensor, clip_skip: int, sdxl: bool) -> tuple[Any, Any]:
    """(hidden states of the chosen layer, the pooled/projected output or None)."""
    out = encoder(ids, output_hidden_states=True)
    pooled = out[0] if out[0].ndim == 2 else None
    if sdxl:
        return out.hidden_states[-max(2, clip_skip)], pooled
    if clip_skip <= 1:
        return out.last_hidden_state, pooled
    layer = out.hidden_states[-min(clip_skip, len(out.hidden_states) - 1)]
    return _final_norm(encoder)(layer), pooled


@contextlib.contextmanager
def _vectors_at(
    encoder: Any, chunk: Chunk, embeddings: EmbeddingSet | None, name: str
) -> Iterator[None]:
    """Swap the token embeddings at ``chunk``'s embedding slots for the embedding's vectors
    while ``encoder`` runs (position 0 is BOS, so slot p sits at p + 1)."""
    if not chunk.slots or embeddings is None:
        yield
        return
    vectors = [(p + 1, embeddings.vector(trigger, i, name)) for p, trigger, i in chunk.slots]

    def swap(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for position, vector in vectors:
            if vector is not None:
                output[0, position] = vector.to(output.device, output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


def _encode_chunks(
    tokenizer: Any,
    encoder: Any,
    chunks: list[Chunk],
    clip_skip: int,
    sdxl: bool,
    device: Any,
    embeddings: EmbeddingSet | None = None,
    name: str = "text_encoder",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    size, _ = chunk_size(tokenizer)
    parts, pooled_first = [], None
    for index, chunk in enumerate(chunks):
        ids, weights = _ids(tokenizer, chunk, size)
        tensor = torch.tensor([ids], device=device)
        with _vectors_at(encoder, chunk, embeddings, name):
            hidden, pooled = _hidden(encoder, tensor, clip_skip, sdxl)
        if index == 0:
            pooled_first = pooled
        if any(w != 1.0 for w in weights):
            scale = torch.tensor(weights, device=hidden.device, dtype=hidden.dtype)
            scale = scale.reshape(1, -1, 1)
            before = hidden.float().mean()
            hidden = hidden * scale
            after = hidden.float().mean()
            hidden = hidden * (before / after).to(hidden.dtype)
        parts.append(hidden)
    return torch.cat(parts, dim=1), pooled_first


@dataclass
class PromptEmbeds:
    """One prompt's conditioning: (1, window·chunks, dim) and, for SDXL, the pooled (1, dim)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    chunks: int = 1


@dataclass
class Encoded:
    embeds: PromptEmbeds
    warnings: list[str]


class PromptEncoder:
    """Encodes parsed prompts with a loaded pipeline's tokenizers and text encoders."""

    def __init__(
        self, pipe: Any, clip_skip: int = 1, embeddings: EmbeddingSet | None = None
    ) -> None:
        self.pairs = [(pipe.tokenizer, pipe.text_encoder)]
        self.embeddings = embeddings
        self.triggers = embeddings.triggers() if embeddings is not None else {}
        tokenizer_2 = getattr(pipe, "tokenizer_2", None)
        encoder_2 = getattr(pipe, "text_encoder_2", None)
        self.sdxl = tokenizer_2 is not None and encoder_2 is not None
        if self.sdxl:
            self.pairs.append((tokenizer_2, encoder_2))
        self.clip_skip = max(1, int(clip_skip))
        # Where the pipeline runs its inputs (with CPU offload the encoders' own parameters
        # may sit on the CPU or on the meta device).
        self.device = getattr(pipe, "_execution_device", None) or pipe.text_encoder.device

    def encode(self, pieces: Sequence[Piece], chunks: int = 0) -> Encoded:
        """Embeddings of ``pieces``, padded with empty chunks to at least ``chunks``."""
        warnings: list[str] = []
        parts, pooled = [], None
        for i, (tokenizer, encoder) in enumerate(self.pairs):
            tokenized = tokenize(tokenizer, pieces, self.triggers)
            if tokenized.dropped and i == 0:
                limit, _ = chunk_size(tokenizer)
                # As the prompt box counts it (what fitted may end short of the limit: an
                # embedding's vectors are never split).
                used = sum(len(c.ids) for c in tokenized.chunks) + tokenized.dropped
                warnings.append(
                    f"The prompt is {used} tokens long; the model reads only {limit}, so "
                    f"everything after “…{tokenized.kept_text[-40:]}” was ignored."
                )
            body = tokenized.chunks + [Chunk([], []) for _ in range(chunks - len(tokenized.chunks))]
            hidden, pooled_i = _encode_chunks(
                tokenizer,
                encoder,
                body,
                self.clip_skip,
                self.sdxl,
                self.device,
                self.embeddings,
                "text_encoder" if i == 0 else "text_encoder_2",
            )
            parts.append(hidden)
            if pooled_i is not None:
                pooled = pooled_i
        embeds = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        count = max(len(tokenized.chunks), chunks)
        return Encoded(PromptEmbeds(embeds, pooled if self.sdxl else None, count), warnings)

    def zeros_like(self, other: PromptEmbeds) -> PromptEmbeds:
        """An SDXL empty negative prompt: zeros, as diffusers and AUTOMATIC1111 use."""
        pooled = torch.zeros_like(other.pooled) if other.pooled is not None else None
        return PromptEmbeds(torch.zeros_like(other.embeds), pooled, other.chunks)

    def pad(self, embeds: PromptEmbeds, chunks: int) -> PromptEmbeds:
        """``embeds`` lengthened with encoded empty chunks (zeros stay zeros)."""
        missing = chunks - embeds.chunks
        if missing <= 0:
            return embeds
        if not embeds.embeds.any():
            window = embeds.embeds.shape[1] // embeds.chunks
            shape = (1, missing * window, embeds.embeds.shape[-1])
            extra = torch.zeros(shape, dtype=embeds.embeds.dtype, device=embeds.embeds.device)
        else:
            extra = self.encode([], missing).embeds.embeds
        joined = torch.cat([embeds.embeds, extra], dim=1)
        return PromptEmbeds(joined, embeds.pooled, chunks)
