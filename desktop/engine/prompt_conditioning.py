"""A job's text conditioning: both prompts parsed, encoded once per distinct step range,
and switched during sampling for prompt editing ``[a:b:0.5]`` and alternation ``[a|b]``.

The pipeline gets ``prompt_embeds`` (and SDXL's pooled embeddings) instead of text, so
nothing is cut at 77 tokens. When the embeddings change at a step, the step callback hands
the pipeline the new ones in the layout its denoising loop uses: the negative batch then the
positive batch when classifier-free guidance is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from desktop.engine.embeddings import EmbeddingSet
from desktop.engine.prompt_encoding import PromptEmbeds, PromptEncoder
from desktop.engine.prompt_syntax import ParsedPrompt, Piece, parse_prompt
from desktop.engine.request import GenerationRequest
from desktop.engine.resources import LORA_KINDS


def steps_run(request: GenerationRequest) -> int:
    """How many denoising steps the pipeline runs (img2img skips the first ones)."""
    if request.is_img2img:
        return max(1, min(int(request.steps * request.strength), request.steps))
    return request.steps


def _boundaries(*prompts: ParsedPrompt) -> list[int]:
    return sorted({last for prompt in prompts for last, _ in prompt.schedule})


def _pieces_at(prompt: ParsedPrompt, step: int) -> tuple[Piece, ...]:
    for last, pieces in prompt.schedule:
        if step <= last:
            return pieces
    return prompt.schedule[-1][1]


@dataclass
class Conditioning:
    """(last step, positive, negative) per step range, for ``steps`` steps and ``batch``."""

    steps: int
    batch: int
    sdxl: bool
    segments: list[tuple[int, PromptEmbeds, PromptEmbeds]]
    warnings: list[str] = field(default_factory=list)
    tags: tuple = ()
    _current: int = 0

    @classmethod
    def build(
        cls, pipe: Any, request: GenerationRequest, embeddings: EmbeddingSet | None = None
    ) -> Conditioning:
        """Parse and encode both prompts of ``request`` (clip skip from the request) with
        the textual-inversion ``embeddings`` they trigger."""
        steps = steps_run(request)
        positive = parse_prompt(request.prompt, steps)
        negative = parse_prompt(request.negative_prompt or "", steps)
        warnings = list(positive.warnings) + [
            w.replace("The prompt", "The negative prompt", 1) for w in negative.warnings
        ]
        encoder = PromptEncoder(pipe, request.clip_skip, embeddings)
        cache: dict[tuple[Piece, ...], PromptEmbeds] = {}

        def encoded(pieces: tuple[Piece, ...], label: str) -> PromptEmbeds:
            if pieces not in cache:
                result = encoder.encode(pieces)
                for warning in result.warnings:
                    text = warning.replace("The prompt", label, 1)
                    if text not in warnings:
                        warnings.append(text)
                cache[pieces] = result.embeds
            return cache[pieces]

        empty_negative = not (request.negative_prompt or "").strip()
        raw = []
        for last in _boundaries(positive, negative):
            pos = encoded(_pieces_at(positive, last), "The prompt")
            neg = (
                None
                if encoder.sdxl and empty_negative
                else encoded(_pieces_at(negative, last), "The negative prompt")
            )
            raw.append((last, pos, neg))
        chunks = max(
            max(p.chunks for _, p, _ in raw),
            max((n.chunks for _, _, n in raw if n is not None), default=1),
        )
        segments = []
        for last, pos, neg in raw:
            pos = encoder.pad(pos, chunks)
            neg = encoder.zeros_like(pos) if neg is None else encoder.pad(neg, chunks)
            segments.append((last, pos, neg))
        tags = positive.tags + negative.tags
        for tag in tags:
            if tag.kind in LORA_KINDS:
                continue  # applied to the model's weights by the engine
            warnings.append(
                f"{tag.source} was ignored: {tag.kind} tags are not applied by this version "
                "of Sandstorm yet."
            )
        return cls(steps, request.batch_size, encoder.sdxl, segments, warnings, tags)

    def _segment(self, step: int) -> int:
        for index, (last, _, _) in enumerate(self.segments):
            if step <= last:
                return index
        return len(self.segments) - 1

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The first step's embeddings as the pipeline's keyword arguments."""
        self._current = 0
        _, pos, neg = self.segments[0]
        kwargs: dict[str, Any] = {"prompt_embeds": pos.embeds, "negative_prompt_embeds": neg.embeds}
        if self.sdxl:
            kwargs["pooled_prompt_embeds"] = pos.pooled
            kwargs["negative_pooled_prompt_embeds"] = neg.pooled
        return kwargs

    def switch(self, pipe: Any, next_index: int) -> dict[str, Any]:
        """What the step callback returns before timestep ``next_index`` (0-based): the new
        embeddings when that timestep starts a new step range, else nothing."""
        if len(self.segments) == 1:
            return {}
        total = int(getattr(pipe, "num_timesteps", 0) or self.steps)
        # Second-order samplers run about two timesteps per step (Heun: 2N - 1).
        step = -(-(next_index + 1) * self.steps // max(1, total))
        index = self._segment(step)
        if index == self._current:
            return {}
        self._current = index
        _, pos, neg = self.segments[index]
        device = getattr(pipe, "_execution_device", pos.embeds.device)
        dtype = pipe.unet.dtype

        def batched(tensor: torch.Tensor) -> torch.Tensor:
            repeat = (self.batch,) + (1,) * (tensor.ndim - 1)
            return tensor.to(device, dtype).repeat(*repeat)

        guided = bool(getattr(pipe, "do_classifier_free_guidance", True))
        out: dict[str, Any] = {}
        if guided:
            out["prompt_embeds"] = torch.cat([batched(neg.embeds), batched(pos.embeds)])
        else:
            out["prompt_embeds"] = batched(pos.embeds)
        if self.sdxl and pos.pooled is not None and neg.pooled is not None:
            if guided:
                out["add_text_embeds"] = torch.cat([batched(neg.pooled), batched(pos.pooled)])
            else:
                out["add_text_embeds"] = batched(pos.pooled)
        return out
