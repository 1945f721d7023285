"""Model discovery: find checkpoints and diffusers folders and classify them cheaply.

Single-file ``.safetensors`` are classified from their JSON header alone (no tensor is
read), so scanning a folder of multi-gigabyte files takes milliseconds. Anything that
cannot be used is still listed, with the reason, and never stops the scan.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from desktop.engine import paths

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
FAMILY_LABELS = {
    "sd1": "SD1.5",
    "sd2": "SD2.x",
    "sdxl": "SDXL",
    "sd1-inpaint": "SD1.5 inpainting",
    "sd2-inpaint": "SD2.x inpainting",
    "sdxl-inpaint": "SDXL inpainting",
    "sdxl-refiner": "SDXL refiner",
    "builtin": "Built-in",
    "unknown": "Unknown",
}
#: Native generation size per family (square side in pixels).
NATIVE_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024, "builtin": 64}
USABLE_FAMILIES = ("sd1", "sd2", "sdxl", "builtin")
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelInfo:
    """A discovered model.

    Attributes:
        name: display name (file stem or folder name), also accepted by ``--model``.
        path: the file or folder.
        format: "safetensors", "ckpt" or "diffusers".
        family: key of ``FAMILY_LABELS``.
        usable: False when the model cannot be loaded; ``reason`` says why.
        prediction_type: "epsilon" or "v_prediction" (SD2 768 models use v).
        native_size: default square size in pixels.
        extras: family-specific data (the built-in model's preview factors, examples).
    """

    name: str
    path: Path
    format: str
    family: str
    usable: bool = True
    reason: str = ""
    prediction_type: str = "epsilon"
    native_size: int = 512
    extras: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)

    @property
    def is_sdxl(self) -> bool:
        return self.family.startswith("sdxl")

    @property
    def is_inpaint(self) -> bool:
        """A 9-channel inpainting model (its UNet also reads the mask and masked image)."""
        return self.family.endswith("-inpaint")

    @property
    def base_family(self) -> str:
        """The family without "-inpaint": "sd1", "sd2", "sdxl", "builtin"."""
        return self.family.removesuffix("-inpaint")


def read_safetensors_header(path: Path) -> dict:
    """Return the JSON header of a .safetensors file without reading any tensor data."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError("file is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length <= 1 or length > _MAX_HEADER:
            raise ValueError("the safetensors header length is invalid (corrupt file?)")
        blob = handle.read(length)
    if len(blob) != length:
        raise ValueError("the file is truncated (header incomplete)")
    try:
        header = json.loads(blob)
    except ValueError as exc:
        raise ValueError("the safetensors header is not valid JSON (corrupt file?)") from exc
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    size = path.stat().st_size
    end = max((int(v.get("data_offsets", [0, 0])[1]) for v in header.values()), default=0)
    if 8 + length + end > size:
        raise ValueError(f"the file is truncated ({size:,} bytes; the header promises more)")
    return header


def classify_keys(shapes: dict[str, list[int]]) -> tuple[str, str]:
    """Classify an original-layout (LDM) state dict by key names and a few shapes.

    Returns (family, reason); reason is non-empty for unsupported models.
    """
    keys = shapes.keys()
    unet_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is None:
        if any(k.startswith(("lora_", "lora_unet", "lora_te")) or ".lora_" in k for k in keys):
            return "unknown", "this is a LoRA, not a checkpoint (put it in models/loras)"
        if any(
            k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys
        ) and not any(k.startswith("model.") for k in keys):
            return "unknown", "this is a VAE, not a checkpoint (put it in models/vae)"
        if any(k.startswith(("down_blocks.", "mid_block.", "conv_in.")) for k in keys):
            return "unknown", "a diffusers-layout UNet file alone is not a full checkpoint"
        return "unknown", "not a Stable Diffusion checkpoint (no UNet weights found)"
    inpaint = len(unet_in) > 1 and unet_in[1] == 9
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        family = "sdxl"
    elif any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return "sdxl-refiner", "SDXL refiner checkpoints are not supported"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in keys):
        family = "sd1"
    else:
        return "unknown", "unrecognised text encoder layout (not SD1, SD2 or SDXL)"
    if inpaint:
        return f"{family}-inpaint", ""
    return family, ""


def read_sidecar(path: Path) -> dict:
    """Per-model settings kept next to a checkpoint: ``<file>.sandstorm.json``."""
    side = path.with_name(path.name + ".sandstorm.json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def default_prediction_type(family: str, name: str) -> str:
    """SD2 768-px models predict v; the 512-px "base" ones and everything else epsilon."""
    if family.startswith("sd2"):
        lowered = name.lower()
        return "epsilon" if ("base" in lowered or "512" in lowered) else "v_prediction"
    return "epsilon"


def inspect_file(path: Path) -> ModelInfo:
    """Classify one single-file checkpoint. Never raises: problems go into ``reason``."""
    suffix = path.suffix.lower()
    name = path.stem
    if suffix != ".safetensors":
        if suffix == ".ckpt" or suffix in (".pt", ".pth"):
            return _with_settings(
                ModelInfo(
                    name,
                    path,
                    "ckpt",
                    "unknown",
                    native_size=512,
                    reason="classified when loaded (.ckpt headers cannot be read safely)",
                ),
                path,
            )
        return ModelInfo(
            name,
            path,
            suffix.lstrip("."),
            "unknown",
            usable=False,
            reason=f"'{suffix}' files are not supported; use .safetensors",
        )
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        return ModelInfo(
            name, path, "safetensors", "unknown", usable=False, reason=f"unreadable: {exc}"
        )
    shapes = {k: v.get("shape", []) for k, v in header.items() if isinstance(v, dict)}
    family, reason = classify_keys(shapes)
    info = ModelInfo(
        name,
        path,
        "safetensors",
        family,
        usable=not reason,
        reason=reason,
        prediction_type=default_prediction_type(family, name),
        native_size=NATIVE_SIZES.get(family.split("-")[0], 512),
    )
    return _with_settings(info, path)


def _with_settings(info: ModelInfo, path: Path) -> ModelInfo:
    settings = read_sidecar(path)
    pred = settings.get("prediction_type")
    if pred in ("epsilon", "v_prediction"):
        from dataclasses import replace

        info = replace(info, prediction_type=pred)
    return info


def inspect_folder(path: Path) -> ModelInfo:
    """Classify a diffusers folder from its ``model_index.json`` and UNet config."""
    name = path.name
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return ModelInfo(
            name,
            path,
            "diffusers",
            "unknown",
            usable=False,
            reason=f"incomplete diffusers folder: {exc}",
        )
    extras = _read_extras(path)
    cls = str(index.get("_class_name", ""))
    cross = unet.get("cross_attention_dim")
    inpaint = unet.get("in_channels") == 9
    if extras.get("family") == "builtin":
        family = "builtin"
    elif "XL" in cls:
        family = "sdxl"
    elif cross == 1024:
        family = "sd2"
    elif "StableDiffusion" in cls:
        family = "sd1"
    else:
        return ModelInfo(
            name,
            path,
            "diffusers",
            "unknown",
            usable=False,
            reason=f"unsupported pipeline type {cls or '(none)'}",
        )
    reason = ""
    if inpaint:
        if family == "builtin":
            reason = "a 9-channel built-in model is not supported"
        family += "-inpaint"
    pred = "epsilon"
    try:
        sched = json.loads(
            (path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8")
        )
        pred = sched.get("prediction_type", "epsilon")
    except (OSError, ValueError):
        pass
    native = int(extras.get("native_size", NATIVE_SIZES.get(family.split("-")[0], 512)))
    return ModelInfo(
        name,
        path,
        "diffusers",
        family,
        usable=not reason,
        reason=reason,
        prediction_type=pred,
        native_size=native,
        extras=extras,
    )


def _read_extras(path: Path) -> dict:
    try:
        data = json.loads((path / "sandstorm.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def default_model_folders() -> list[Path]:
    """Sandstorm's own checkpoint folders (bundled ``models/``, then the user's data folder).

    The same list as ``model_folders.folders_for("checkpoints", [])``.
    """
    from desktop.engine.model_folders import checkpoint_search_folders

    return checkpoint_search_folders(())


def configured_model_folders() -> list[Path]:
    """Own folders plus the user's extra sources from settings (ComfyUI, A1111, ...)."""
    from desktop.engine.model_folders import checkpoint_search_folders
    from desktop.engine.settings import load_settings

    return checkpoint_search_folders(load_settings().extra_model_folders)


def _checkpoint_dirs(root: Path) -> list[Path]:
    """Where checkpoints live under a models root (ours, ComfyUI's and AUTOMATIC1111's)."""
    candidates = [root / "checkpoints", root / "Stable-diffusion", root / "diffusers", root]
    return [c for c in candidates if c.is_dir()]


def scan(folders: Iterable[Path] | None = None, include_builtin: bool = True) -> list[ModelInfo]:
    """Discover models in ``folders``.

    Each folder may be a models root (with ``checkpoints/``) or a folder of checkpoints.
    Without ``folders``, ``configured_model_folders()``: Sandstorm's own checkpoint folders
    plus those of the extra sources in the user's settings.
    Results are sorted: the built-in model first, then by name. Never raises.
    """
    found: dict[Path, ModelInfo] = {}
    if include_builtin and (paths.BUILTIN_MODEL / "model_index.json").is_file():
        found[paths.BUILTIN_MODEL.resolve()] = inspect_folder(paths.BUILTIN_MODEL)
    roots = list(folders) if folders is not None else configured_model_folders()
    for root in roots:
        for folder in _checkpoint_dirs(Path(root).expanduser()):
            for entry in _entries(folder):
                key = entry.resolve()
                if key in found:
                    continue
                if entry.is_dir():
                    if (entry / "model_index.json").is_file():
                        found[key] = inspect_folder(entry)
                elif entry.suffix.lower() in CHECKPOINT_SUFFIXES:
                    found[key] = inspect_file(entry)
    return sorted(found.values(), key=lambda m: (m.family != "builtin", m.name.lower()))


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _last_part(text: str) -> str:
    """The last component of a path written on any system (``/`` or ``\\`` separators)."""
    return re.split(r"[\\/]", text.rstrip("\\/"))[-1]


def _stem(name: str) -> str:
    """A file name without a checkpoint suffix (``.safetensors``, ``.ckpt``, ...)."""
    base, dot, suffix = name.rpartition(".")
    return base if dot and base and f".{suffix.lower()}" in CHECKPOINT_SUFFIXES else name


def match_model(models: Iterable[ModelInfo], wanted: str) -> ModelInfo | None:
    """The model among ``models`` that ``wanted`` names, or None. The one name matcher.

    ``wanted`` is what a request, a gallery image or ``--model`` holds. The rules, strongest
    first:

    1. the full path: equal as written, or the same file/folder once resolved;
    2. the discovered name (``ModelInfo.name``: the file stem or folder name);
    3. the file or folder name: the last part of ``wanted`` (``/`` or ``\\`` separated, so
       a Windows path in another computer's metadata works) equals the model's file name;
    4. the stem: that last part without its checkpoint suffix equals the model's name or
       file stem ("v1-5-pruned-emaonly" names ``v1-5-pruned-emaonly.safetensors``);
    5. the stem again, ignoring case (file names are case-insensitive on Windows and macOS).

    Usable models come first: the first usable model matched by the strongest rule that
    matches a usable one wins. Only when no usable model matches is an unusable one
    returned, so the caller can say why it cannot be used. An empty ``wanted`` matches
    nothing.
    """
    wanted = wanted.strip()
    if not wanted:
        return None
    candidates = list(models)
    last = _last_part(wanted)
    stem = _stem(last)
    try:
        resolved: Path | None = Path(wanted).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        resolved = None

    def same_path(info: ModelInfo) -> bool:
        if str(info.path) == wanted:
            return True
        if resolved is None:
            return False
        try:
            return info.path.expanduser().resolve() == resolved
        except (OSError, RuntimeError, ValueError):
            return False

    def model_stem(info: ModelInfo) -> str:
        return info.path.name if info.format == "diffusers" else _stem(info.path.name)

    rules = (
        same_path,
        lambda info: info.name == wanted,
        lambda info: info.path.name == last,
        lambda info: stem in (info.name, model_stem(info)),
        lambda info: stem.casefold() in (info.name.casefold(), model_stem(info).casefold()),
    )
    fallback: ModelInfo | None = None
    for rule in rules:
        for info in candidates:
            if not rule(info):
                continue
            if info.usable:
                return info
            if fallback is None:
                fallback = info
    return fallback


def find_model(name_or_path: str, models: list[ModelInfo] | None = None) -> ModelInfo:
    """Resolve a ``--model`` value: a path to a file/folder, or a discovered model's name.

    An existing path is inspected directly; anything else goes through ``match_model``
    against ``models`` (default: ``scan()``). An empty value means the default model (the
    built-in one). Raises ``ModelError``.
    """
    from desktop.engine.errors import ModelError

    if not name_or_path:
        if (paths.BUILTIN_MODEL / "model_index.json").is_file():
            return inspect_folder(paths.BUILTIN_MODEL)
        raise ModelError("No model selected and the built-in model is missing from models/builtin.")
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        if not (candidate / "model_index.json").is_file():
            raise ModelError(
                f"{candidate} is a folder without model_index.json (not a diffusers model)."
            )
        return inspect_folder(candidate)
    if candidate.is_file():
        return inspect_file(candidate)
    models = scan() if models is None else models
    info = match_model(models, name_or_path)
    if info is not None:
        return info
    raise ModelError(f"No model named {name_or_path!r} was found (see 'sandstorm models').")
