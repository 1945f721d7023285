"""Reading AUTOMATIC1111 infotext (also written by Forge, Fooocus in A1111 mode, Krita, ...).

The settings are read by one loop over the declarations in ``desktop.engine.request``: each
scalar setting with an ``infotext`` key is parsed by its kind (``schema.parse_text``) and
clamped to its declared limits; the original text of a value that was out of range or could
not be read is kept in ``extras``. Explicit here, because the infotext folds several settings
into one key (or one setting into several):

* ``Sampler`` + ``Schedule type``: old infotexts fold the schedule into the sampler's name
  ("DPM++ 2M Karras");
* ``Size``: width and height as ``WxH``, snapped to multiples of 8;
* ``Model`` and ``Model hash``: the model identity, reported besides the request;
* LoRA tags are taken out of the prompt, the hires pass is read from its ``Hires …`` keys.

Keys nothing reads (ControlNet N, IP-Adapter N, the mask's keys, "Version", ...) stay in
``extras``: the infotext has no image paths, so those parts come back only from our chunk.
"""

from __future__ import annotations

import json
import re

from desktop.engine.metadata.builder import RequestBuilder
from desktop.engine.parts import extract_lora_tags, hires_from_infotext
from desktop.engine.request import (
    MAX_PROMPT_CHARS,
    GenerationRequest,
    request_field,
    request_fields,
)
from desktop.engine.samplers import SAMPLERS
from desktop.engine.schema import parse_text

#: Settings the loop leaves to the explicit code below (composite keys).
EXPLICIT = frozenset({"sampler", "schedule", "width", "height", "model"})

_KEY_RE = re.compile(r"\w[\w \-/]*")
_MAX_KEY = 80
# Far more than any tool writes; they bound the work done on hostile text.
_MAX_PAIRS = 1000
_MAX_COLONS = 20_000


def map_a1111_sampler(name: str) -> tuple[str | None, str | None]:
    """Map an AUTOMATIC1111 sampler label to (sampler, schedule-or-None).

    Old infotexts fold the schedule into the name ("DPM++ 2M Karras").
    """
    text = " ".join(name.split())
    by_lower = {key.lower(): key for key in SAMPLERS}
    if text.lower() in by_lower:
        return by_lower[text.lower()], None
    for suffix, schedule in (("karras", "Karras"), ("exponential", "Exponential")):
        if text.lower().endswith(" " + suffix):
            base = text[: -len(suffix) - 1].strip().lower()
            if base in by_lower:
                return by_lower[base], schedule
    return None, None


def _split_param_line(line: str) -> list[tuple[str, str]]:
    """``Key: value, Key: "quoted, value"`` pairs, as AUTOMATIC1111 writes them.

    A hand-written linear scan rather than A1111's ``re.findall``, which is quadratic on long
    lines: a key is the text between the previous comma and a colon, a value runs to the next
    comma unless it is JSON-quoted.
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(line)
    for _ in range(_MAX_COLONS):
        if pos >= end or len(pairs) >= _MAX_PAIRS:
            break
        colon = line.find(":", pos)
        if colon < 0:
            break
        comma = line.rfind(",", pos, colon)
        key = line[pos if comma < 0 else comma + 1 : colon].strip()
        if len(key) > _MAX_KEY or not _KEY_RE.fullmatch(key):
            pos = colon + 1
            continue
        pos = colon + 1
        while pos < end and line[pos] in " \t":
            pos += 1
        value = None
        if pos < end and line[pos] == '"':
            close = _closing_quote(line, pos)
            after = close + 1
            if close > 0 and (after >= end or line[after] == ","):
                value, pos = line[pos:after], after + 1
        if value is None:
            comma = line.find(",", pos)
            comma = end if comma < 0 else comma
            value, pos = line[pos:comma].strip(), comma + 1
        pairs.append((key, value))
    return pairs


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote closing the JSON string opened at ``start``, or -1."""
    close = start
    while True:
        close = line.find('"', close + 1)
        if close < 0:
            return -1
        escapes = 0
        while line[close - 1 - escapes] == "\\":
            escapes += 1
        if escapes % 2 == 0:
            return close


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        result = json.loads(value)
    except ValueError:
        return value
    return result if isinstance(result, str) else value


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]] | None:
    """Split infotext into (prompt, negative prompt, {key: value}); None if it is not infotext.

    Follows AUTOMATIC1111's ``parse_generation_parameters``: the last line holds the settings
    when it has at least three ``key: value`` pairs; ``Negative prompt:`` starts the negative.
    """
    lines = text.strip().replace("\r\n", "\n").split("\n")
    last = lines[-1]
    pairs = _split_param_line(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
    else:
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    if not pairs:
        return None
    params = {key: _unquote(value) for key, value in pairs}
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def request_from_parameters(text: str) -> tuple[GenerationRequest | None, dict, str, str]:
    """Returns (request, extras, model name, model hash) for AUTOMATIC1111 infotext."""
    parsed = parse_parameters(text)
    builder = RequestBuilder()
    if parsed is None:
        # Some tools write just a prompt; keep it as one.
        builder.text("prompt", text.strip())
        return builder.build(), builder.extras, "", ""
    prompt, negative, params = parsed
    _read_prompt(builder, prompt)
    builder.text("negative_prompt", negative)
    model_name = params.pop("Model", "")
    model_hash = params.pop("Model hash", "")
    if model_name:
        builder.text("model", model_name)
    _read_sampler(builder, params)
    _read_size(builder, params)
    # Before the loop: in a txt2img infotext, "Denoising strength" is the hires denoise.
    _read_hires(builder, params)
    for info in request_fields():
        key = info.spec.infotext
        if key and info.name not in EXPLICIT and key in params:
            builder.setting(info, key, params.pop(key))
    builder.extras.update(params)
    return builder.build(), builder.extras, model_name, model_hash


def _read_prompt(builder: RequestBuilder, prompt: str) -> None:
    text, loras, problems = extract_lora_tags(prompt[:MAX_PROMPT_CHARS])
    builder.text("prompt", text)
    if loras:
        builder.fields["loras"] = loras
    if problems:  # the unusable tags stay in the prompt, as A1111 would leave them
        builder.extras["LoRA tags"] = problems


def _read_sampler(builder: RequestBuilder, params: dict[str, str]) -> None:
    schedule_text = params.pop("Schedule type", None)
    schedule = None
    if schedule_text is not None:
        allowed = request_field("schedule").spec.allowed() or ()
        parsed = parse_text(request_field("schedule"), schedule_text)
        schedule = parsed if parsed in allowed else None
        if schedule is None:
            builder.extras["Schedule type"] = schedule_text
    if "Sampler" in params:
        original = params.pop("Sampler")
        sampler, folded = map_a1111_sampler(original)
        builder.sampler(sampler, schedule or folded, original)
    elif schedule is not None:
        builder.fields["schedule"] = schedule


def _read_size(builder: RequestBuilder, params: dict[str, str]) -> None:
    if "Size" not in params:
        return
    size = params.pop("Size")
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", size)
    if match:
        builder.size(match.group(1), match.group(2))
    else:
        builder.extras["Size"] = size


def _read_hires(builder: RequestBuilder, params: dict[str, str]) -> None:
    try:
        hires, _used = hires_from_infotext(params)
    except (ValueError, OverflowError):  # e.g. "Hires steps: 1e999"; the keys stay in extras
        return
    if hires is not None:
        builder.fields["hires"] = hires
