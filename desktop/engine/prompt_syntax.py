"""AUTOMATIC1111's prompt syntax, parsed by our own grammar (written from its documented
behaviour, not from its code).

What a user pastes from a model site::

    (masterpiece:1.2), best quality, [blurry], <lora:detail:0.8>, a [cat:dog:0.5] BREAK night

- ``(a)`` multiplies the weight of ``a`` by 1.1, ``((a))`` by 1.21, ``[a]`` divides by 1.1,
  ``(a:1.3)`` sets the factor; nesting multiplies. ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are
  literal characters.
- ``BREAK`` (upper case, a word of its own) starts a new 75-token chunk.
- ``[a:b:N]`` prompt editing: ``a`` until step N (N < 1: that fraction of the steps), then
  ``b``; ``[b:N]`` adds ``b`` after step N; ``[a::N]`` removes ``a`` after it.
- ``[a|b|c]`` alternation: ``a`` on step 1, ``b`` on step 2, ... round and round.
- ``<lora:name:0.8>`` / ``<lora:name:0.8:0.5>`` / ``<lora:name:te=0.8:unet=0.5>``: extra-network
  tags, taken out of the text (strengths: text encoder, then UNet; one value sets both).

Not supported: ``AND`` (composable diffusion) stays text, with a warning.

Malformed input never raises: it is read the way AUTOMATIC1111 reads it (an unclosed ``(``
weights the rest of the prompt, ``(a:abc)`` is the text ``a:abc`` at 1.1, a stray ``)`` is
text) and each case adds a warning the window and the command line show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: ``(a)`` multiplies, ``[a]`` divides by this.
EMPHASIS = 1.1
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$")
_BREAK = re.compile(r"\bBREAK\b")
_AND = re.compile(r"\bAND\b")
_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class Piece:
    """A run of prompt text with one weight (``BREAK`` is ``Piece("", 0.0, brk=True)``)."""

    text: str
    weight: float = 1.0
    brk: bool = False


BREAK = Piece("", 0.0, brk=True)


@dataclass(frozen=True)
class NetworkTag:
    """An extra-network tag such as ``<lora:name:0.8>`` taken out of the prompt."""

    kind: str
    name: str
    te: float = 1.0
    unet: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt read for ``steps`` sampling steps.

    ``schedule``: (last step, pieces) in step order; one entry when nothing changes during
    sampling. ``tags``: the extra-network tags, in prompt order. ``warnings``: what was read
    in a way the user may not expect, as sentences.
    """

    text: str
    schedule: tuple[tuple[int, tuple[Piece, ...]], ...]
    tags: tuple[NetworkTag, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """The pieces of the first step (all of them when nothing is scheduled)."""
        return self.schedule[0][1]

    @property
    def scheduled(self) -> bool:
        return len(self.schedule) > 1


# -- the tree -------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Scale:
    children: list
    factor: float


@dataclass
class _Edit:
    before: list
    after: list
    when: float


@dataclass
class _Alternate:
    options: list[list]


@dataclass
class _Parser:
    text: str
    warnings: list[str] = field(default_factory=list)
    pos: int = 0

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def sequence(self, closer: str | None) -> tuple[list[list], list[str], bool]:
        """Nodes up to ``closer`` (None: the end), split at top-level ``:`` and ``|`` when
        inside brackets. Returns (segments, separators, closed)."""
        segments: list[list] = [[]]
        seps: list[str] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                segments[-1].append(_Text("".join(buf)))
                buf.clear()

        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text):
                buf.append(text[self.pos + 1])
                self.pos += 2
                continue
            if closer is not None and ch == closer:
                self.pos += 1
                flush()
                return segments, seps, True
            if ch in "([":
                flush()
                self.pos += 1
                segments[-1].append(self.group(ch))
                continue
            if ch in ")]":
                self.warn(
                    f"The prompt has a “{ch}” that closes nothing; it is read as text "
                    f"(write \\{ch} for a literal bracket)."
                )
                buf.append(ch)
                self.pos += 1
                continue
            if closer is not None and ch in ":|":
                flush()
                seps.append(ch)
                segments.append([])
                self.pos += 1
                continue
            buf.append(ch)
            self.pos += 1
        flush()
        return segments, seps, False

    def group(self, opener: str) -> object:
        start = self.pos - 1
        closer = ")" if opener == "(" else "]"
        segments, seps, closed = self.sequence(closer)
        shown = self.text[start : self.pos if closed else len(self.text)]
        if len(shown) > 40:
            shown = shown[:37] + "…"
        if not closed:
            self.warn(
                f"“{opener}” is never closed, so it weights everything after it: {shown} "
                f"(add “{closer}”, or write \\{opener} for a literal bracket)."
            )
        last = _plain(segments[-1]) if len(segments) > 1 else None
        if opener == "(":
            if closed and seps and seps[-1] == ":" and last is not None and _NUMBER.match(last):
                return _Scale(_join(segments[:-1], seps[:-1]), float(last))
            if closed and seps and seps[-1] == ":":
                value = (last or "").strip() or "nothing"
                self.warn(
                    f"In {shown} “{value}” is not a number, so it is read as text "
                    f"weighted ×{EMPHASIS}."
                )
            return _Scale(_join(segments, seps), EMPHASIS)
        if closed and seps and all(s == "|" for s in seps):
            return _Alternate(segments)
        editing = closed and seps and all(s == ":" for s in seps) and len(seps) in (1, 2)
        if editing and last is not None and _NUMBER.match(last):
            when = float(last)
            if len(seps) == 1:
                return _Edit([], segments[0], when)
            return _Edit(segments[0], segments[1], when)
        if closed and seps:
            self.warn(
                f"{shown} is neither prompt editing [a:b:step] nor alternation [a|b]; "
                f"it is read as text weighted ÷{EMPHASIS}."
            )
        return _Scale(_join(segments, seps), 1 / EMPHASIS)


def _plain(nodes: list) -> str | None:
    """The text of ``nodes`` when they are plain text only, else None."""
    if all(isinstance(n, _Text) for n in nodes):
        return "".join(n.text for n in nodes)
    return None


def _join(segments: list[list], seps: list[str]) -> list:
    """Segments put back together with their separators as text."""
    out = list(segments[0])
    for sep, segment in zip(seps, segments[1:], strict=True):
        out.append(_Text(sep))
        out.extend(segment)
    return out


def _switch_step(when: float, steps: int) -> int:
    """The last step of the "before" part: a fraction of the steps below 1, else a step."""
    return int(when * steps) if when < 1 else int(when)


def _flatten(nodes: list, step: int, steps: int, weight: float, out: list[Piece]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            parts = _BREAK.split(node.text)
            for i, part in enumerate(parts):
                if i:
                    out.append(BREAK)
                if part:
                    out.append(Piece(part, weight))
        elif isinstance(node, _Scale):
            _flatten(node.children, step, steps, weight * node.factor, out)
        elif isinstance(node, _Edit):
            chosen = node.before if step <= _switch_step(node.when, steps) else node.after
            _flatten(chosen, step, steps, weight, out)
        elif isinstance(node, _Alternate):
            _flatten(node.options[(step - 1) % len(node.options)], step, steps, weight, out)


def _merge(pieces: list[Piece]) -> tuple[Piece, ...]:
    merged: list[Piece] = []
    for piece in pieces:
        if merged and not piece.brk and not merged[-1].brk and merged[-1].weight == piece.weight:
            merged[-1] = Piece(merged[-1].text + piece.text, piece.weight)
        else:
            merged.append(piece)
    return tuple(merged)


def _has_schedule(nodes: list) -> bool:
    for node in nodes:
        if isinstance(node, (_Edit, _Alternate)):
            return True
        if isinstance(node, _Scale) and _has_schedule(node.children):
            return True
    return False


# -- extra-network tags ---------------------------------------------------------------------


def _number(text: str, tag: str, warnings: list[str]) -> float:
    try:
        return float(text)
    except ValueError:
        warnings.append(f"In {tag} “{text}” is not a number; the strength 1 is used.")
        return 1.0


def _tag(kind: str, args: str, source: str, warnings: list[str]) -> NetworkTag:
    name, *rest = args.split(":")
    positional: list[float] = []
    named: dict[str, float] = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if eq:
            if key.strip() in ("te", "unet"):
                named[key.strip()] = _number(value.strip(), source, warnings)
            else:
                warnings.append(f"In {source} “{key.strip()}=” is not known; it is ignored.")
        elif item.strip():
            positional.append(_number(item.strip(), source, warnings))
    te = named.get("te", positional[0] if positional else 1.0)
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    return NetworkTag(kind=kind.lower(), name=name.strip(), te=te, unet=unet, source=source)


def extract_tags(text: str) -> tuple[str, tuple[NetworkTag, ...], tuple[str, ...]]:
    """Take ``<kind:args>`` tags out of ``text``: (text without them, tags, warnings)."""
    warnings: list[str] = []
    tags = [_tag(m.group(1), m.group(2), m.group(0), warnings) for m in _TAG.finditer(text)]
    return _TAG.sub("", text), tuple(tags), tuple(warnings)


# -- the entry point ------------------------------------------------------------------------


def parse_prompt(text: str, steps: int = 1) -> ParsedPrompt:
    """Read ``text`` for a job of ``steps`` steps (see the module docstring)."""
    steps = max(1, int(steps))
    stripped, tags, tag_warnings = extract_tags(text or "")
    parser = _Parser(stripped)
    parser.warnings.extend(tag_warnings)
    segments, seps, _ = parser.sequence(None)
    nodes = _join(segments, seps)
    if _AND.search(stripped):
        parser.warn("“AND” (composable diffusion) is not supported; it is read as a word.")
    schedule: list[tuple[int, tuple[Piece, ...]]] = []
    for step in range(1, (steps if _has_schedule(nodes) else 1) + 1):
        out: list[Piece] = []
        _flatten(nodes, step, steps, 1.0, out)
        pieces = _merge(out)
        if schedule and schedule[-1][1] == pieces:
            schedule[-1] = (step, pieces)
        else:
            schedule.append((step, pieces))
    schedule[-1] = (steps, schedule[-1][1])
    return ParsedPrompt(stripped, tuple(schedule), tags, tuple(parser.warnings))


# -- editing weights in a prompt box (Ctrl+Up / Ctrl+Down) ---------------------------------

_WEIGHTED_AFTER = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)")
_WEIGHTED_WHOLE = re.compile(r"\((.*):\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)", re.DOTALL)
_WORD = re.compile(r"[^\s,()\[\]:|<>]+")


def _format_weight(weight: float) -> str:
    return f"{weight:.2f}".rstrip("0").rstrip(".") if weight % 1 else f"{weight:.1f}"


def adjust_weight(text: str, start: int, end: int, delta: float) -> tuple[str, int, int]:
    """Change the weight of the selected words by ``delta``, as AUTOMATIC1111's Ctrl+Up/Down.

    With no selection, the word under the cursor is used. Words already written
    ``(words:1.2)`` get a new number; other words are wrapped as ``(words:1.1)``; at 1.0
    the brackets go. Returns the new text and the selection (the words, without brackets).
    """
    start, end = sorted((max(0, start), min(len(text), end)))
    if start == end:
        for match in _WORD.finditer(text):
            if match.start() <= start <= match.end():
                start, end = match.span()
                break
        else:
            return text, start, end
    selected = text[start:end]
    whole = _WEIGHTED_WHOLE.fullmatch(selected)
    after = _WEIGHTED_AFTER.match(text, end)
    if whole:  # the selection is "(words:1.2)" itself
        inner, weight = whole.group(1), float(whole.group(2))
        left, right = start, end
    elif after and text[:start].endswith("("):  # the words inside "(words:1.2)"
        inner, weight = selected, float(after.group(1))
        left, right = start - 1, after.end()
    else:
        inner, weight = selected.strip(), 1.0
        lead = len(selected) - len(selected.lstrip())
        left, right = start + lead, start + lead + len(inner)
    weight = round(weight + delta, 2)
    if abs(weight - 1.0) < 1e-9:
        replacement, offset = inner, 0
    else:
        replacement, offset = f"({inner}:{_format_weight(weight)})", 1
    new = text[:left] + replacement + text[right:]
    return new, left + offset, left + offset + len(inner)
