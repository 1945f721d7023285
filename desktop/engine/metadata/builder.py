"""Building a valid request out of foreign values: clamp what is out of range, keep the rest.

Every foreign reader (AUTOMATIC1111, ComfyUI, InvokeAI, Fooocus) feeds a ``RequestBuilder``.
Limits come from the declarations in ``desktop.engine.request`` unless a reader passes its
own. A value that had to be changed, or could not be used, is kept in ``extras`` under the
source's own key, so nothing the file recorded is silently lost.
"""

from __future__ import annotations

import math
from typing import Any

from desktop.engine import schema
from desktop.engine.errors import RequestError
from desktop.engine.request import (
    MAX_PROMPT_CHARS,
    SEED_MAX,
    GenerationRequest,
    request_field,
    snap_size,
)
from desktop.engine.samplers import SAMPLERS
from desktop.engine.schema import FieldInfo

#: Settings whose out-of-range value is not clamped but dropped (left at the default): a
#: clamped seed names different noise, so it could only pretend to reproduce the image.
UNCLAMPED = frozenset({"seed"})


def to_number(value: Any) -> float | None:
    """A foreign number (int, float or text) as a float; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except (ValueError, OverflowError):
            return None
    return None


def _limits(name: str, low: float | None, high: float | None) -> tuple[float, float]:
    spec = request_field(name).spec
    low = spec.minimum if low is None else low
    high = spec.maximum if high is None else high
    return (-math.inf if low is None else low), (math.inf if high is None else high)


class RequestBuilder:
    """Collects values from a foreign format, clamps them, and builds a valid request."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.extras: dict[str, Any] = {}

    def text(self, name: str, value: Any) -> None:
        if isinstance(value, str):
            self.fields[name] = value[:MAX_PROMPT_CHARS]

    def integer(
        self, name: str, key: str, value: Any, low: int | None = None, high: int | None = None
    ) -> None:
        """A whole number, rounded and clamped (to the declared limits unless given)."""
        number = to_number(value)
        if number is None or not math.isfinite(number):
            if value not in (None, ""):
                self.extras[key] = value
            return
        lo, hi = _limits(name, low, high)
        whole = round(number)
        clamped = int(min(hi, max(lo, whole)))
        if clamped != number:
            self.extras[key] = value
        self.fields[name] = clamped

    def real(
        self,
        name: str,
        key: str,
        value: Any,
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        """A number, clamped (to the declared limits unless given)."""
        number = to_number(value)
        if number is None or not math.isfinite(number):
            if value not in (None, ""):
                self.extras[key] = value
            return
        lo, hi = _limits(name, low, high)
        clamped = min(hi, max(lo, number))
        if clamped != number:
            self.extras[key] = value
        self.fields[name] = float(clamped)

    def seed(self, key: str, value: Any) -> None:
        number = to_number(value)
        if number is not None and 0 <= number <= SEED_MAX and number == int(number):
            self.fields["seed"] = int(number)
        elif value not in (None, ""):
            # Seeds from tools with a wider range cannot reproduce the image here.
            self.extras[key] = value

    def setting(self, info: FieldInfo, key: str, text: str) -> None:
        """A declared scalar setting given as text (an infotext value), parsed by its kind.

        Numbers are clamped to the declared limits (``UNCLAMPED`` ones are dropped instead);
        an unparseable value, a changed one or a text outside the declared choices is kept
        in ``extras`` under ``key``.
        """
        try:
            value = schema.parse_text(info, text)
        except (ValueError, OverflowError):
            self.extras[key] = text
            return
        if info.kind in ("int", "float"):
            if not math.isfinite(value):
                self.extras[key] = text
                return
            low = -math.inf if info.spec.minimum is None else info.spec.minimum
            high = math.inf if info.spec.maximum is None else info.spec.maximum
            clamped = min(high, max(low, value))
            if clamped != value:
                self.extras[key] = text
                if info.name in UNCLAMPED:
                    return
            value = int(clamped) if info.kind == "int" else float(clamped)
        elif info.kind in ("text", "path"):
            allowed = info.spec.allowed()
            if allowed is not None and value not in allowed:
                self.extras[key] = text
                return
            value = value[:MAX_PROMPT_CHARS]
        self.fields[info.name] = value

    def size(self, width: Any, height: Any, key: str = "Size") -> None:
        w, h = to_number(width), to_number(height)
        if w is None or h is None or not (math.isfinite(w) and math.isfinite(h)):
            if width not in (None, "") or height not in (None, ""):
                self.extras[key] = f"{width}x{height}"
            return
        sw, sh = snap_size(int(w)), snap_size(int(h))
        if (sw, sh) != (w, h):
            self.extras[key] = f"{width}x{height}"
        self.fields["width"], self.fields["height"] = sw, sh

    def sampler(
        self, sampler: str | None, schedule: str | None, original: str, key: str = "Sampler"
    ) -> None:
        if sampler is None:
            if original:
                self.extras[key] = original
            return
        spec = SAMPLERS[sampler]
        if schedule is None:
            schedule = self.fields.get("schedule", "Automatic")
        if schedule not in spec.schedules:
            self.extras.setdefault("Schedule type", schedule)
            schedule = "Automatic"
        self.fields["sampler"] = sampler
        self.fields["schedule"] = schedule

    def build(self) -> GenerationRequest | None:
        if "prompt" not in self.fields:
            self.fields["prompt"] = ""
        try:
            return GenerationRequest(**self.fields)
        except RequestError as exc:
            self.extras["error"] = str(exc)
            return None
