"""Model folders of other Stable Diffusion apps: ComfyUI and AUTOMATIC1111 (and Forge).

People who already run ComfyUI or AUTOMATIC1111 have gigabytes of checkpoints; Sandstorm
uses them in place instead of asking for copies. A source the user adds in the settings can
be:

* a ComfyUI install (``models/checkpoints``, ``models/vae``, ``models/loras``), whose
  ``extra_model_paths.yaml`` is followed too when it sits next to ``models/``;
* an AUTOMATIC1111 / Forge install (``models/Stable-diffusion``, ``models/VAE``,
  ``models/Lora``);
* an ``extra_model_paths.yaml`` file itself;
* any plain folder of checkpoints.

``folders_for(kind, sources)`` is the one list of folders of a kind of model: Sandstorm's
own folders first (the bundled ``models/<kind>``, then ``<data dir>/models/<kind>``), then
the folders of the user's sources. ``checkpoint_search_folders()`` is the list that
``desktop.engine.models.scan()`` takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from desktop.engine import paths
from desktop.engine.errors import ModelError

EXTRA_PATHS_FILE = "extra_model_paths.yaml"

#: ComfyUI's yaml keys (and its folder names) for each kind of model Sandstorm uses.
#: "diffusers" holds diffusers-format folders, which scan() reads like checkpoints.
#: Sandstorm's own ``models/`` folders use the same names.
COMFY_KEYS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "diffusers"),
    "vae": ("vae",),
    "loras": ("loras",),
    "embeddings": ("embeddings",),
    "controlnet": ("controlnet",),
    "upscale_models": ("upscale_models",),
    "vae_approx": ("vae_approx",),
    "ipadapter": ("ipadapter",),
    "clip_vision": ("clip_vision",),
}
#: Every kind of model folder, in the order of ``ExternalModels``' fields.
MODEL_KINDS: tuple[str, ...] = tuple(COMFY_KEYS)
#: AUTOMATIC1111's folder names under ``models/`` (Forge keeps the same layout).
A1111_DIRS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("Stable-diffusion",),
    "vae": ("VAE",),
    "loras": ("Lora", "LyCORIS"),
    "embeddings": (),
    "controlnet": ("ControlNet",),
    # One folder per upscaler family; ScuNET holds 1x denoisers, which are listed and then
    # refused on loading with a message (they are not super-resolution models).
    "upscale_models": ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "ScuNET"),
    "vae_approx": ("VAE-approx",),
    # A1111's ControlNet extension keeps IP-Adapters beside the ControlNets (the files are
    # told apart by their keys) and its image encoders in its own downloads folder, which
    # is not under models/.
    "ipadapter": ("ControlNet",),
    "clip_vision": (),
}
#: AUTOMATIC1111 folders that sit in the install itself rather than under ``models/``.
A1111_ROOT_DIRS: dict[str, tuple[str, ...]] = {"embeddings": ("embeddings",)}
#: Where installs usually live, relative to the home folder; offered as suggestions.
KNOWN_INSTALLS = (
    "ComfyUI",
    "comfyui",
    "Documents/ComfyUI",
    "stable-diffusion-webui",
    "stable-diffusion-webui-forge",
    "Documents/stable-diffusion-webui",
)


@dataclass(frozen=True)
class ExternalModels:
    """The model folders found in one source.

    Attributes:
        source: what the user pointed at (a folder or a yaml file).
        layout: "comfyui", "a1111", "extra_model_paths" or "folder".
        checkpoints: folders of checkpoints and diffusers models (existing ones only).
        vae: folders of VAEs.
        loras: folders of LoRAs.
        embeddings, controlnet, upscale_models, vae_approx: folders of those kinds.
        ipadapter: folders of IP-Adapters; clip_vision: folders of the image encoders
            they need.
    """

    source: Path
    layout: str
    checkpoints: tuple[Path, ...] = ()
    vae: tuple[Path, ...] = ()
    loras: tuple[Path, ...] = ()
    embeddings: tuple[Path, ...] = ()
    controlnet: tuple[Path, ...] = ()
    upscale_models: tuple[Path, ...] = ()
    vae_approx: tuple[Path, ...] = ()
    ipadapter: tuple[Path, ...] = ()
    clip_vision: tuple[Path, ...] = ()

    def folders(self, kind: str) -> tuple[Path, ...]:
        """The folders of ``kind`` (one of ``MODEL_KINDS``)."""
        _check_kind(kind)
        folders: tuple[Path, ...] = getattr(self, kind)
        return folders


def _check_kind(kind: str) -> None:
    if kind not in COMFY_KEYS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}")


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value.strip())))


def _existing_unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    seen: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            seen.setdefault(Path(os.path.normpath(path)), None)
    return tuple(seen)


def _lines(value: object) -> list[str]:
    """A yaml value as ComfyUI reads it: one path a line (``|`` blocks), or a list."""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return []


def read_extra_model_paths(path: Path | str) -> dict[str, list[Path]]:
    """Read a ComfyUI ``extra_model_paths.yaml`` into folders per kind.

    Each top-level section may give a ``base_path`` (relative paths are relative to the yaml
    file's folder, as in ComfyUI) and per-kind sub-paths, several to a value as a ``|``
    block. Folders that do not exist are kept here; ``describe_source`` filters them.

    Raises:
        ModelError: the file cannot be read or is not a ComfyUI paths file.
    """
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"{path} is not valid YAML ({exc.__class__.__name__}).") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a ComfyUI extra_model_paths file (no named sections).")
    found: dict[str, list[Path]] = {kind: [] for kind in COMFY_KEYS}
    for section in data.values():
        if not isinstance(section, dict):
            continue
        base = section.get("base_path")
        base_path: Path | None = None
        if isinstance(base, str) and base.strip():
            base_path = _expand(base)
            if not base_path.is_absolute():
                base_path = path.parent / base_path
        for kind, keys in COMFY_KEYS.items():
            for key in keys:
                for line in _lines(section.get(key)):
                    sub = _expand(line)
                    found[kind].append(
                        base_path / sub if base_path and not sub.is_absolute() else sub
                    )
    return found


def _is_comfyui(root: Path) -> bool:
    return (root / "models" / "checkpoints").is_dir() or (root / "comfy").is_dir()


def _is_a1111(root: Path) -> bool:
    return (root / "models" / "Stable-diffusion").is_dir()


def describe_source(source: Path | str) -> ExternalModels:
    """Work out what ``source`` is and list its model folders.

    Raises:
        ModelError: the source does not exist, or a yaml file in it cannot be read.
    """
    source = Path(source).expanduser()
    if source.is_file():
        if source.suffix.lower() not in (".yaml", ".yml"):
            raise ModelError(
                f"{source} is a file; choose a models folder or an {EXTRA_PATHS_FILE} file."
            )
        kinds = read_extra_model_paths(source)
        return ExternalModels(
            source,
            "extra_model_paths",
            *(_existing_unique(kinds[kind]) for kind in COMFY_KEYS),
        )
    if not source.is_dir():
        raise ModelError(f"The model folder {source} does not exist.")
    if _is_comfyui(source):
        kinds = {
            kind: [source / "models" / name for name in names] for kind, names in COMFY_KEYS.items()
        }
        extra = source / EXTRA_PATHS_FILE
        if extra.is_file():
            for kind, folders in read_extra_model_paths(extra).items():
                kinds[kind].extend(folders)
        return ExternalModels(source, "comfyui", *(_existing_unique(kinds[k]) for k in COMFY_KEYS))
    if _is_a1111(source):
        return ExternalModels(
            source,
            "a1111",
            *(
                _existing_unique(
                    [
                        *(source / "models" / name for name in A1111_DIRS[kind]),
                        *(source / name for name in A1111_ROOT_DIRS.get(kind, ())),
                    ]
                )
                for kind in COMFY_KEYS
            ),
        )
    # A folder that is itself a models root ("models/" of either app) or a checkpoint folder.
    for names in (COMFY_KEYS, A1111_DIRS):
        if (source / names["checkpoints"][0]).is_dir():
            return ExternalModels(
                source,
                "folder",
                *(_existing_unique(source / n for n in names[kind]) for kind in COMFY_KEYS),
            )
    return ExternalModels(source, "folder", checkpoints=(source,))


def _collect(sources: Iterable[Path | str], kind: str) -> list[Path]:
    _check_kind(kind)
    seen: dict[Path, None] = {}
    for source in sources:
        try:
            described = describe_source(source)
        except ModelError:
            # A source that vanished (unplugged drive, deleted install) must not break the
            # scan; the settings page shows its error when the user looks at it.
            continue
        for folder in described.folders(kind):
            seen.setdefault(folder, None)
    return list(seen)


def own_folders(kind: str) -> list[Path]:
    """Sandstorm's own folders of ``kind``: the bundled ``models/``, then the user's.

    They are listed whether or not they exist yet (``sandstorm --check`` shows them).
    """
    _check_kind(kind)
    roots = (paths.BUNDLED_MODELS, paths.user_models_dir())
    return [root / name for root in roots for name in COMFY_KEYS[kind]]


def folders_for(kind: str, extra_sources: Iterable[Path | str] = ()) -> list[Path]:
    """Every folder that holds models of ``kind``, in search order, without duplicates.

    This is the one list of model folders: Sandstorm's own folders first (``own_folders``:
    the bundled ``models/<kind>``, then ``<data dir>/models/<kind>``), then the folders of
    ``extra_sources`` (ComfyUI and AUTOMATIC1111 installs, ``extra_model_paths.yaml`` files
    and plain folders, as in ``settings.extra_model_folders``).

    Args:
        kind: one of ``MODEL_KINDS`` ("checkpoints", "vae", "loras", "embeddings",
            "controlnet", "upscale_models", "vae_approx", "ipadapter", "clip_vision").
        extra_sources: the user's extra sources; missing or unreadable ones are skipped.

    Raises:
        ValueError: ``kind`` is not a known kind (a programming error, not a user's).
    """
    folders = [*own_folders(kind), *_collect(extra_sources, kind)]
    return list(dict.fromkeys(Path(os.path.normpath(folder)) for folder in folders))


def checkpoint_search_folders(extra_sources: Iterable[Path | str] = ()) -> list[Path]:
    """The folders ``desktop.engine.models.scan()`` searches for checkpoints and diffusers
    models, given the user's extra sources (``settings.extra_model_folders``).

    The window and the command line both call this, so they list the same models.
    """
    return folders_for("checkpoints", extra_sources)


def checkpoint_folders(sources: Iterable[Path | str]) -> list[Path]:
    """The checkpoint folders of all ``sources``, for ``desktop.engine.models.scan()``.

    Never raises: sources that are missing or unreadable are skipped.
    """
    return _collect(sources, "checkpoints")


def vae_folders(sources: Iterable[Path | str]) -> list[Path]:
    """The VAE folders of all ``sources`` (missing or unreadable sources are skipped)."""
    return _collect(sources, "vae")


def lora_folders(sources: Iterable[Path | str]) -> list[Path]:
    """The LoRA folders of all ``sources`` (missing or unreadable sources are skipped)."""
    return _collect(sources, "loras")


def known_installs(home: Path | None = None) -> list[Path]:
    """ComfyUI / AUTOMATIC1111 installs in their usual places, to offer in the settings."""
    home = Path.home() if home is None else home
    found: dict[Path, Path] = {}
    for relative in KNOWN_INSTALLS:
        candidate = home / relative
        if candidate.is_dir() and (_is_comfyui(candidate) or _is_a1111(candidate)):
            # "ComfyUI" and "comfyui" are one folder on case-insensitive file systems.
            found.setdefault(candidate.resolve(), candidate)
    return list(found.values())
