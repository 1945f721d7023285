"""The machinery behind ``GenerationRequest``'s declarations (no settings are declared here).

A setting is a dataclass field made with ``setting(default, label=..., ...)``. Its ``Setting``
record says everything every other module needs: the label, limits and choices (form widgets,
CLI flags, validation messages), the AUTOMATIC1111 infotext key (writer and readers), whether
the last used value is remembered, and whether the gallery index keeps a column for it.
``fields_of(cls)`` returns the declarations with their resolved Python types.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from desktop.engine.errors import RequestError

#: Kinds a setting's value can have, derived from its type annotation.
KINDS = ("text", "int", "float", "bool", "path", "part", "parts")


@dataclass(frozen=True)
class Setting:
    """What one setting is, besides its name, type and default.

    Attributes:
        label: the user-facing name ("CFG scale"); validation messages start with it.
        help: one sentence for tooltips and ``--help``.
        infotext: the AUTOMATIC1111 ``parameters`` key; "" when the value is not written as a
            ``Key: value`` pair (the prompts are the infotext's first lines).
        minimum, maximum: inclusive limits for numbers.
        step, decimals, unit: how a form widget steps and shows a number.
        choices: the allowed texts (a callable is evaluated when asked).
        panel: the window panel that edits it ("prompt", "sampler", "img2img"); "" for none.
        remember: the last used value is restored on the next launch.
        index: the gallery index keeps a column for it (search and filters).
        cli: the command-line flag; "" derives ``--name-with-dashes``; "-" means none.
        relevant: when the value matters (e.g. strength only for img2img); the infotext omits
            it otherwise and a form resets it to the default.
        model_default: filled from the chosen model's defaults when not given (CLI).
        infotext_default: the value A1111 assumes when the key is absent (not written then).
    """

    label: str
    help: str = ""
    infotext: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    decimals: int = 2
    unit: str = ""
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    panel: str = ""
    remember: bool = True
    index: bool = False
    cli: str = ""
    relevant: Callable[[Any], bool] | None = None
    model_default: bool = False
    infotext_default: Any = None

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed values of a choice setting, or None when any text goes."""
        if self.choices is None:
            return None
        values = self.choices() if callable(self.choices) else self.choices
        return tuple(values)

    def cli_flag(self, name: str) -> str | None:
        if self.cli == "-":
            return None
        return self.cli or "--" + name.replace("_", "-")

    def is_relevant(self, owner: Any) -> bool:
        return self.relevant is None or bool(self.relevant(owner))


def setting(default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """Declare a dataclass field as a setting; ``spec`` are ``Setting``'s attributes."""
    meta = {"setting": Setting(**spec)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen part as a setting's default")
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldInfo:
    """A declared setting with its name, kind and (for parts) the part's class."""

    name: str
    spec: Setting
    kind: str
    default: Any
    part: type | None = None
    optional: bool = False

    @property
    def label(self) -> str:
        return self.spec.label


def fields_of(cls: type) -> tuple[FieldInfo, ...]:
    """Every declared setting of a settings dataclass, in declaration order."""
    return _fields_of(cls)


@functools.cache
def _fields_of(cls: Any) -> tuple[FieldInfo, ...]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        kind, part, optional = _kind_of(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        found.append(FieldInfo(f.name, spec, kind, default, part, optional))
    return tuple(found)


def field_map(cls: type) -> dict[str, FieldInfo]:
    return {info.name: info for info in fields_of(cls)}


def _kind_of(hint: Any) -> tuple[str, type | None, bool]:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        kind, part, _ = _kind_of(inner)
        return ("path" if kind == "text" else kind), part, True
    if origin is tuple:
        return "parts", args[0], False
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "part", hint, False
    simple = {str: "text", int: "int", float: "float", bool: "bool"}
    if hint in simple:
        return simple[hint], None, False
    raise TypeError(f"unsupported setting type {hint!r}")


# -- validation -------------------------------------------------------------------------------


def validate(obj: Any, where: str = "") -> None:
    """Check each declared value's type, limits and choices; coerce ints in float fields.

    Raises ``RequestError`` whose message names the setting by its label.
    """
    for info in fields_of(type(obj)):
        value = getattr(obj, info.name)
        label = f"{where}{info.label}"
        if value is None and info.optional:
            continue
        coerced = _check_value(info, value, label)
        if coerced is not value:
            object.__setattr__(obj, info.name, coerced)


def _check_value(info: FieldInfo, value: Any, label: str) -> Any:
    spec = info.spec
    if info.kind in ("text", "path"):
        if not isinstance(value, str):
            raise RequestError(f"{label} must be text.")
        if info.kind == "path" and not value:
            raise RequestError(f"{label} must be a file path.")
        allowed = spec.allowed()
        if allowed is not None and value not in allowed:
            raise RequestError(
                f"Unknown {label[0].lower() + label[1:]} {value!r}. "
                f"Choose one of: {', '.join(allowed)}."
            )
        return value
    if info.kind == "bool":
        if not isinstance(value, bool):
            raise RequestError(f"{label} must be true or false, not {value!r}.")
        return value
    if info.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(f"{label} must be a whole number, not {value!r}.")
        _check_range(spec, value, label)
        return value
    if info.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{label} must be a number, not {value!r}.")
        if abs(value) > 1e300:  # also keeps huge ints from overflowing float formatting
            raise RequestError(f"{label} is far out of range.")
        number = float(value)
        if math.isnan(number):
            raise RequestError(f"{label} must be a number, not NaN.")
        _check_range(spec, number, label)
        return value if isinstance(value, float) else number
    if info.kind == "part":
        if not isinstance(value, info.part):  # type: ignore[arg-type]
            raise RequestError(f"{label} has the wrong form.")
        return value
    if info.kind == "parts":
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or not all(isinstance(v, info.part) for v in value):  # type: ignore[arg-type]
            raise RequestError(f"{label} must be a list of {info.part.__name__} entries.")  # type: ignore[union-attr]
        return value
    raise AssertionError(info.kind)


def _check_range(spec: Setting, value: float, label: str) -> None:
    low, high = spec.minimum, spec.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        unit = f" {spec.unit}" if spec.unit else ""
        raise RequestError(
            f"{label} must be between {_num(low)} and {_num(high)}{unit} (got {_num(value)})."
        )


def _num(value: float | None) -> str:
    if value is None:
        return "∞"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- plain data in and out --------------------------------------------------------------------


def to_plain(obj: Any) -> dict[str, Any]:
    """A settings object as JSON-ready data (parts become objects, lists become arrays)."""
    data: dict[str, Any] = {}
    for info in fields_of(type(obj)):
        value = getattr(obj, info.name)
        if info.kind == "part":
            data[info.name] = to_plain(value) if value is not None else None
        elif info.kind == "parts":
            data[info.name] = [to_plain(v) for v in value]
        else:
            data[info.name] = value
    return data


def from_plain(cls: type, data: Any, where: str = "") -> Any:
    """Build ``cls`` from ``to_plain`` output; unknown keys are ignored."""
    if not isinstance(data, dict):
        raise RequestError(f"{where or cls.__name__} must be a JSON object.")
    kwargs: dict[str, Any] = {}
    for info in fields_of(cls):
        if info.name not in data:
            continue
        value = data[info.name]
        if info.kind == "part" and value is not None:
            value = from_plain(info.part, value, info.label)  # type: ignore[arg-type]
        elif info.kind == "parts":
            if not isinstance(value, list):
                raise RequestError(f"{info.label} must be a list.")
            value = tuple(
                from_plain(info.part, v, f"{info.label} {i + 1}")  # type: ignore[arg-type]
                for i, v in enumerate(value)
            )
        kwargs[info.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise RequestError(f"{where or cls.__name__} is incomplete: {exc}") from exc


def parse_text(info: FieldInfo, text: str) -> Any:
    """A value typed as text (a CLI flag, an infotext value) converted to the setting's kind.

    Raises ``ValueError`` when the text is not of that kind.
    """
    text = text.strip()
    if info.kind == "int":
        number = float(text)
        if number != int(number):
            raise ValueError(f"{text!r} is not a whole number")
        return int(number)
    if info.kind == "float":
        return float(text)
    if info.kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if info.kind in ("text", "path"):
        allowed = info.spec.allowed()
        if allowed is not None:
            by_lower = {a.lower(): a for a in allowed}
            return by_lower.get(text.lower(), text)
        return text
    raise ValueError(f"{info.name} cannot be given as text")


def format_value(value: Any) -> str:
    """A value as AUTOMATIC1111 writes it: 7.0 -> "7", 7.5 -> "7.5", True -> "True"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    return str(value)
