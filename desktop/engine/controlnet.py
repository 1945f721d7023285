"""The ControlNet models installed on this machine: found, classified, suggested.

Files come from ``models/controlnet`` and the ComfyUI (``models/controlnet``) and
AUTOMATIC1111 (``models/ControlNet``) folders of ``settings.extra_model_folders``
(``model_folders.folders_for("controlnet")``), searched recursively. A ``.safetensors``
file is classified from its header alone (no torch, no weights read):

* the layout: the original one (``control_model.*`` keys, or the same without the prefix,
  as the v1.1 files are) or diffusers' (``controlnet_cond_embedding.*``);
* the model family, from the width of its cross-attention keys (768: SD 1.x, 1024: SD 2.x,
  2048: SDXL, 128: the built-in model);
* what it is not: an IP-Adapter, a T2I-Adapter or a ControlNet-LLLite file (kept in the
  same A1111 folder) is listed with a ``problem``.

The control type a file is for comes from its name (``control_v11p_sd15_canny``,
``diffusers_xl_canny_full``, ``t2i-sketch`` ...). A diffusers folder (``config.json`` plus
weights) is listed too. ``.pth``/``.ckpt``/``.bin`` files are pickles and are listed with a
problem: Sandstorm opens only ``.safetensors`` ControlNets.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from desktop.engine.model_folders import folders_for

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
#: Cross-attention width → family.
_FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl", 128: "builtin"}
#: Words in a file name → the control type it was trained for (first match wins).
_TYPE_WORDS: tuple[tuple[str, str], ...] = (
    ("inpaint", "inpaint"),
    ("canny", "canny"),
    ("scribble", "scribble"),
    ("sketch", "scribble"),
    ("outline", "scribble"),
    ("lineart", "lineart"),
    ("line_art", "lineart"),
    ("softedge", "lineart"),
    ("hed", "lineart"),
    ("tile", "tile"),
    ("depth", "control map"),
    ("openpose", "control map"),
    ("pose", "control map"),
    ("normal", "control map"),
    ("seg", "control map"),
    ("mlsd", "control map"),
)
MAX_HEADER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ControlNetFile:
    """One installed ControlNet.

    Attributes:
        name: the file stem (or folder name): what a request's ``model`` names.
        path: the file or diffusers folder.
        family: "sd1", "sd2", "sdxl", "builtin", or "" when unknown.
        control_type: the control type its name says ("canny", ...), or "".
        layout: "original", "original-unprefixed", "diffusers" or "".
        problem: why it cannot be used ("" when it can).
        context_width: the width of its cross-attention context (what must match the
            model's text encoder: 768 for SD 1.x ...), 0 when unknown.
    """

    name: str
    path: Path
    family: str = ""
    control_type: str = ""
    layout: str = ""
    problem: str = ""
    context_width: int = 0


def read_header(path: Path) -> dict[str, list[int]]:
    """The tensor shapes in a ``.safetensors`` header, by key.

    Raises:
        ValueError: the file is not a safetensors file or its header is damaged.
        OSError: it cannot be read.
    """
    with path.open("rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) < 8:
            raise ValueError("the file is too short to be a safetensors file")
        size = int.from_bytes(size_bytes, "little")
        if not 0 < size <= MAX_HEADER_BYTES:
            raise ValueError("the header size is not plausible")
        raw = handle.read(size)
    if len(raw) < size:
        raise ValueError("the file ends inside its header")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a table")
    return {
        key: list(value.get("shape", []))
        for key, value in header.items()
        if key != "__metadata__" and isinstance(value, dict)
    }


def classify_keys(shapes: dict[str, list[int]]) -> tuple[str, int, str]:
    """(layout, cross-attention width, problem) of a file's tensor shapes."""
    keys = list(shapes)
    if any(k.startswith(("ip_adapter.", "image_proj.")) for k in keys):
        return "", 0, "it is an IP-Adapter, not a ControlNet (put it in models/ipadapter)"
    if any("lllite" in k for k in keys):
        return "", 0, "it is a ControlNet-LLLite file, which Sandstorm cannot run"
    if any(k.startswith(("adapter.", "body.")) or ".body." in k for k in keys) and not any(
        "input_hint_block" in k for k in keys
    ):
        return "", 0, "it is a T2I-Adapter, not a ControlNet"
    if any(k.startswith("control_model.") for k in keys):
        layout = "original"
    elif any(k.startswith("input_hint_block.") for k in keys):
        layout = "original-unprefixed"
    elif any(k.startswith("controlnet_cond_embedding.") for k in keys):
        layout = "diffusers"
    else:
        return "", 0, "it does not hold ControlNet weights"
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return layout, int(shape[1]), ""
    return layout, 0, "it has no cross-attention weights, so its model family is unknown"


def family_of_width(width: int) -> str:
    """The model family whose text context is ``width`` wide ("" for none known)."""
    return _FAMILY_BY_WIDTH.get(width, "")


def control_type_of(name: str) -> str:
    """The control type a ControlNet's file name says ("" when it says none)."""
    lowered = name.lower()
    for word, kind in _TYPE_WORDS:
        if re.search(rf"(?<![a-z]){re.escape(word)}", lowered):
            return kind
    return ""


def describe_file(path: Path) -> ControlNetFile:
    """Classify one ControlNet file or diffusers folder (never raises)."""
    name = path.name if path.is_dir() else path.stem
    kind = control_type_of(name)
    if path.is_dir():
        config = path / "config.json"
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            width = data.get("cross_attention_dim")
            width = int(width) if isinstance(width, int) else 0
            if data.get("_class_name") != "ControlNetModel":
                return ControlNetFile(name, path, "", kind, "", "it is not a ControlNet folder")
        except (OSError, ValueError):
            return ControlNetFile(name, path, "", kind, "", "its config.json cannot be read")
        weights = list(path.glob("*.safetensors"))
        problem = "" if weights else "it has no .safetensors weights"
        return ControlNetFile(name, path, family_of_width(width), kind, "diffusers", problem, width)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ControlNetFile(
            name,
            path,
            "",
            kind,
            "",
            f"{path.suffix} files are pickles, which could run code; use the .safetensors version",
        )
    try:
        shapes = read_header(path)
    except (OSError, ValueError) as exc:
        return ControlNetFile(name, path, "", kind, "", f"the file is damaged ({exc})")
    layout, width, problem = classify_keys(shapes)
    return ControlNetFile(name, path, family_of_width(width), kind, layout, problem, width)


def _candidates(folder: Path) -> Iterable[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir():
                if (path / "config.json").is_file():
                    yield path
                else:
                    yield from _candidates(path)
            elif path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES:
                yield path
        except OSError:
            continue


def list_controlnets(extra_sources: Iterable[Path | str] = ()) -> list[ControlNetFile]:
    """Every installed ControlNet, one per name (the first folder wins), sorted by name."""
    seen: dict[str, ControlNetFile] = {}
    for folder in folders_for("controlnet", extra_sources):
        for path in _candidates(folder):
            item = describe_file(path)
            seen.setdefault(item.name.casefold(), item)
    return sorted(seen.values(), key=lambda item: item.name.casefold())


def suggest(
    control_type: str, family: str, items: Iterable[ControlNetFile], context_width: int = 0
) -> ControlNetFile | None:
    """The installed ControlNet for ``control_type`` on a model of ``family`` ("sd1",
    "sdxl" ...; an inpainting family counts as its base), or None. With
    ``context_width`` (the model's text context width) the ControlNet must match it, which
    is what decides whether the two can run together."""
    base = family.removesuffix("-inpaint")
    usable = [
        item
        for item in items
        if not item.problem
        and (item.context_width == context_width if context_width else item.family == base)
    ]
    for item in usable:
        if item.control_type == control_type:
            return item
    return None


def find_controlnet(name: str, extra_sources: Iterable[Path | str] = ()) -> ControlNetFile | None:
    """The installed ControlNet called ``name`` (file stem, file name or path)."""
    candidate = Path(name)
    if candidate.is_absolute() and candidate.exists():
        return describe_file(candidate)
    wanted = candidate.stem if candidate.suffix.lower() in SAFE_SUFFIXES else candidate.name
    for item in list_controlnets(extra_sources):
        if item.name.casefold() == wanted.casefold():
            return item
    return None
