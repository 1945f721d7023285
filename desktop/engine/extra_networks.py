"""The library of LoRAs and textual-inversion embeddings installed on this machine.

Files are found in the folders ``desktop.engine.model_folders.folders_for`` lists for
"loras" and "embeddings": Sandstorm's own ``models/loras`` and ``models/embeddings``, then
those of the ComfyUI and AUTOMATIC1111 installs in ``settings.extra_model_folders``. Each
folder is searched recursively (AUTOMATIC1111 allows subfolders); hidden folders are
skipped and unreadable ones ignored.

What a file is for comes from the sidecar files other apps write beside it (same stem):

* a preview image: ``<stem>.preview.png`` or ``<stem>.png`` (also ``.jpg``, ``.jpeg``,
  ``.webp``; ``.preview.*`` first);
* ``<stem>.civitai.info``: JSON as the Civitai Helper extension writes it
  (``trainedWords``, ``baseModel``, ``description``, ``model.name``,
  ``model.description``);
* ``<stem>.json``: AUTOMATIC1111's own user metadata (``activation text``,
  ``sd version``, ``preferred weight``, ``description``, ``notes``). Where both files say
  something, this one wins.

Listing never reads a model file, only directory entries and the small sidecars, so it is
cheap enough to run each time a job or the LoRA panel asks.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop.engine.model_folders import folders_for

#: The suffixes listed for each kind; the pickle LoRA suffixes are listed with a problem.
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
PICKLE_LORA_SUFFIXES = (".pt", ".ckpt")
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Sidecars larger than this are not read (a civitai.info is a few hundred KB at most).
MAX_SIDECAR_BYTES = 4 * 1024 * 1024

_FOLDER_KIND = {"lora": "loras", "embedding": "embeddings"}
_SUFFIXES = {"lora": LORA_SUFFIXES, "embedding": EMBEDDING_SUFFIXES}
#: AUTOMATIC1111's "sd version" values: what to show, and the prefix of civitai's more
#: precise names for the same family ("SD1" and "SD 1.5" agree; civitai's name is kept).
_A1111_VERSIONS = {"SD1": ("SD 1.x", "sd1"), "SD2": ("SD 2.x", "sd2"), "SDXL": ("SDXL", "sdxl")}


@dataclass(frozen=True)
class NetworkFile:
    """One installed LoRA or embedding file and what its sidecars say about it.

    Attributes:
        kind: "lora" or "embedding".
        name: the file stem, which the prompt uses: ``<lora:NAME:0.8>`` or the embedding's
            trigger word.
        path: the model file.
        folder: the root folder it was found under (one of ``folders_for``'s).
        preview: its preview image, if there is one.
        trigger_words: words the file was trained on, to put in the prompt.
        base_model: the model family it was made for, as civitai writes it ("SD 1.5",
            "SDXL 1.0"); "" when unknown.
        preferred_weight: the strength its metadata suggests, if any.
        description: what the sidecars say about it, as plain text.
        problem: why it cannot be used ("" when it can).
        title: the display name civitai gives it ("" when none).
    """

    kind: str
    name: str
    path: Path
    folder: Path
    preview: Path | None = None
    trigger_words: tuple[str, ...] = ()
    base_model: str = ""
    preferred_weight: float | None = None
    description: str = ""
    problem: str = ""
    title: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def relative_name(self) -> str:
        """The path under its root folder without the suffix ("styles/detail")."""
        return _relative_name(self.path, self.folder)


def _relative_name(path: Path, folder: Path) -> str:
    try:
        relative = path.relative_to(folder)
    except ValueError:
        return path.stem
    return relative.with_suffix("").as_posix()


@dataclass(frozen=True)
class _Candidate:
    """A model file found while walking, before its sidecars are read."""

    kind: str
    path: Path
    folder: Path
    #: Lower-cased name -> real name of every file in the same directory.
    siblings: dict[str, str]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def problem(self) -> str:
        suffix = self.path.suffix.lower()
        if self.kind == "lora" and suffix in PICKLE_LORA_SUFFIXES:
            return (
                f"this LoRA is a pickle file ({suffix}), which can run code when loaded; "
                "Sandstorm loads only .safetensors LoRAs"
            )
        return ""


def _check_kind(kind: str) -> None:
    if kind not in _FOLDER_KIND:
        raise ValueError(f"unknown network kind {kind!r}; use 'lora' or 'embedding'")


def search_folders(kind: str, extra_sources: Iterable[Path | str] = ()) -> list[Path]:
    """The folders searched for ``kind`` ("lora" or "embedding"), in search order."""
    _check_kind(kind)
    return folders_for(_FOLDER_KIND[kind], extra_sources)


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """(directory, file names) under ``root``, parents before children, hidden folders and
    unreadable ones left out; linked folders are followed once."""
    seen: set[str] = set()
    for directory, dirnames, filenames in os.walk(root, onerror=None, followlinks=True):
        try:
            real = os.path.realpath(directory)
        except OSError:
            real = directory
        if real in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(directory), sorted(f for f in filenames if not f.startswith("."))


def _candidates(kind: str, extra_sources: Iterable[Path | str]) -> list[_Candidate]:
    """Every model file of ``kind``, in search order (duplicates included)."""
    suffixes = _SUFFIXES[kind]
    found: list[_Candidate] = []
    for folder in search_folders(kind, extra_sources):
        for directory, filenames in _walk(folder):
            siblings = {f.lower(): f for f in filenames}
            for filename in filenames:
                lowered = filename.lower()
                if lowered.endswith(suffixes):
                    found.append(_Candidate(kind, directory / filename, folder, siblings))
    return found


def _unique(candidates: list[_Candidate]) -> list[_Candidate]:
    """One file per stem: the first usable one in search order, else the first one.

    A usable file beats a pickle LoRA of the same name found earlier, so that a
    ``detail.safetensors`` in a ComfyUI install is not hidden by an old ``detail.pt``.
    """
    chosen: dict[str, _Candidate] = {}
    for candidate in candidates:
        current = chosen.get(candidate.name)
        if current is None or (current.problem and not candidate.problem):
            chosen[candidate.name] = candidate
    return list(chosen.values())


def _sidecar(candidate: _Candidate, *suffixes: str) -> Path | None:
    """The first sidecar ``<stem><suffix>`` present beside the file (any letter case)."""
    stem = candidate.name.lower()
    for suffix in suffixes:
        real = candidate.siblings.get(stem + suffix)
        if real is not None:
            return candidate.path.with_name(real)
    return None


def _read_json(path: Path | None) -> dict[str, Any]:
    """A sidecar's JSON object; {} when it is missing, too big, unreadable or not JSON."""
    if path is None:
        return {}
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _plain_text(value: object) -> str:
    """Civitai descriptions are HTML: keep their text, one paragraph a line."""
    text = _text(value)
    if "<" not in text and "&" not in text:
        return text
    text = re.sub(r"(?i)<br\s*/?>|</p\s*>|</li\s*>|</h\d\s*>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]*>", "", text))
    lines = (re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def split_words(text: str) -> list[str]:
    """Split activation text at the commas outside brackets: "a, (b, c:1.2)" -> 2 words."""
    words: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char in "([{<":
            depth += 1
        elif char in ")]}>":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            words.append(text[start:i])
            start = i + 1
    words.append(text[start:])
    return [word.strip() for word in words if word.strip()]


def _words(value: object) -> list[str]:
    if isinstance(value, str):
        return split_words(value)
    if isinstance(value, list):
        return [word for item in value if isinstance(item, str) for word in split_words(item)]
    return []


def _unique_words(words: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for word in words:
        seen.setdefault(word.casefold(), word)
    return tuple(seen.values())


def _weight(value: object) -> float | None:
    """A preferred weight; AUTOMATIC1111 writes 0 for "not set"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        weight = float(value)
    except ValueError:
        return None
    return weight if math.isfinite(weight) and weight != 0 else None


def _base_model(a1111: dict[str, Any], civitai: dict[str, Any]) -> str:
    civitai_base = _text(civitai.get("baseModel"))
    version = _A1111_VERSIONS.get(_text(a1111.get("sd version")).upper())
    if version is None:
        return civitai_base
    shown, prefix = version
    if civitai_base.lower().replace(" ", "").startswith(prefix):
        return civitai_base  # the same family, said more precisely
    return shown


def _describe(candidate: _Candidate) -> NetworkFile:
    civitai = _read_json(_sidecar(candidate, ".civitai.info"))
    a1111 = _read_json(_sidecar(candidate, ".json"))
    model = civitai.get("model")
    model = model if isinstance(model, dict) else {}
    own_text = "\n\n".join(
        t for t in (_plain_text(a1111.get("description")), _plain_text(a1111.get("notes"))) if t
    )
    civitai_text = _plain_text(civitai.get("description")) or _plain_text(model.get("description"))
    preview_suffixes = [f".preview{s}" for s in PREVIEW_SUFFIXES] + list(PREVIEW_SUFFIXES)
    return NetworkFile(
        kind=candidate.kind,
        name=candidate.name,
        path=candidate.path,
        folder=candidate.folder,
        preview=_sidecar(candidate, *preview_suffixes),
        trigger_words=_unique_words(
            [*_words(a1111.get("activation text")), *_words(civitai.get("trainedWords"))]
        ),
        base_model=_base_model(a1111, civitai),
        preferred_weight=_weight(a1111.get("preferred weight")),
        description=own_text or civitai_text,
        problem=candidate.problem,
        title=_text(model.get("name")),
    )


def list_networks(kind: str, extra_sources: Iterable[Path | str] = ()) -> list[NetworkFile]:
    """The installed files of ``kind`` ("lora" or "embedding"), one per name, sorted by
    name (case-insensitive). Never raises for missing or unreadable folders or sidecars."""
    _check_kind(kind)
    chosen = _unique(_candidates(kind, list(extra_sources)))
    items = [_describe(candidate) for candidate in chosen]
    return sorted(items, key=lambda item: (item.name.casefold(), item.name))


def list_loras(extra_sources: Iterable[Path | str] = ()) -> list[NetworkFile]:
    """The installed LoRAs (``.pt`` / ``.ckpt`` ones listed with a ``problem``)."""
    return list_networks("lora", extra_sources)


def list_embeddings(extra_sources: Iterable[Path | str] = ()) -> list[NetworkFile]:
    """The installed textual-inversion embeddings (``.pt``, ``.bin``, ``.safetensors``)."""
    return list_networks("embedding", extra_sources)


def _strip_suffix(kind: str, name: str) -> str:
    lowered = name.lower()
    for suffix in _SUFFIXES[kind]:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def find_network(
    kind: str, name: str, extra_sources: Iterable[Path | str] = ()
) -> NetworkFile | None:
    """The installed file a prompt means by ``name``, or None.

    ``name`` is a file stem ("detail"), may carry its suffix ("detail.safetensors") or a
    path under its folder ("styles/detail", as AUTOMATIC1111 shows subfolders). An exact
    match wins over one that differs only in letter case.
    """
    _check_kind(kind)
    wanted = _strip_suffix(kind, name.strip().replace("\\", "/").strip("/"))
    if not wanted:
        return None
    candidates = _candidates(kind, list(extra_sources))
    if "/" in wanted:
        # A path names one file, even one that another folder's file of its stem hides.
        keyed = [(_relative_name(c.path, c.folder), c) for c in candidates]
    else:
        keyed = [(c.name, c) for c in _unique(candidates)]
    exact = next((c for key, c in keyed if key == wanted), None)
    if exact is None:
        folded = wanted.casefold()
        exact = next((c for key, c in keyed if key.casefold() == folded), None)
    return _describe(exact) if exact is not None else None


def missing_message(kind: str, name: str, extra_sources: Iterable[Path | str] = ()) -> str:
    """A sentence for the user: which file is missing, where to put it, what was searched."""
    _check_kind(kind)
    searched = ", ".join(str(f) for f in search_folders(kind, extra_sources)) or "no folders"
    stem = _strip_suffix(kind, name.strip())
    if kind == "lora":
        return (
            f"The LoRA '{stem}' is not installed: put {stem}.safetensors in models/loras "
            f"(searched: {searched}), or remove <lora:{stem}> from the prompt."
        )
    return (
        f"The embedding '{stem}' is not installed: put {stem}.safetensors (or .pt) in "
        f"models/embeddings (searched: {searched}), or remove embedding:{stem} from the prompt."
    )
