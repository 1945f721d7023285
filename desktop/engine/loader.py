"""Load a discovered model into txt2img and img2img pipelines, fully offline.

Single-file checkpoints are read with the diffusers-format configs shipped in
``resources/model_configs/<family>/``: without them diffusers would fetch configs from the
Hugging Face Hub. ``.ckpt`` files are pickles, so they are first opened with torch's
restricted unpickler, which refuses anything but tensors and plain containers; a file that
needs more is rejected before any of its code could run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine import paths
from desktop.engine.errors import ModelError
from desktop.engine.models import (
    FAMILY_LABELS,
    NATIVE_SIZES,
    ModelInfo,
    classify_keys,
    default_prediction_type,
    read_safetensors_header,
    read_sidecar,
)

if TYPE_CHECKING:
    import torch

# Sandstorm never downloads: every config it needs ships in resources/. This must be set
# before huggingface_hub is imported, which reads it once; _force_offline() covers the case
# where something imported it earlier.
os.environ["HF_HUB_OFFLINE"] = "1"

#: Config folder (under ``resources/model_configs``) per model family.
#: The shipped config folder of each family; a 9-channel inpainting model uses its base
#: family's folder with ``num_in_channels=9``.
FAMILY_CONFIGS = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}
INPAINT_CHANNELS = 9
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
PREDICTION_TYPES = ("epsilon", "v_prediction")
_HUB_MODULES = ("huggingface_hub", "diffusers", "transformers")


@dataclass
class LoadedPipelines:
    """A loaded model: one set of modules shared by a txt2img and an img2img pipeline.

    Attributes:
        info: the model, with the family filled in for ``.ckpt`` files (classified on load).
        txt2img: ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``.
        img2img: the matching img2img pipeline over the same module objects.
        device: torch device string the modules live on.
        dtype: their torch dtype.
    """

    info: ModelInfo
    txt2img: Any
    img2img: Any
    device: str
    dtype: torch.dtype
    vae_dtype: Any = None

    def __post_init__(self) -> None:
        if self.vae_dtype is None:
            self.vae_dtype = self.dtype


def load_pipeline(
    info: ModelInfo,
    device: str,
    dtype: torch.dtype,
    vae_path: Path | None = None,
    config_root: Path = paths.MODEL_CONFIGS,
    vae_dtype: torch.dtype | None = None,
    on_device: bool = True,
) -> LoadedPipelines:
    """Load ``info`` onto ``device`` without touching the network.

    Args:
        info: a model from ``desktop.engine.models`` (``scan``/``find_model``).
        device: a string from ``devices.resolve_device``.
        dtype: from ``devices.default_dtype``; float16 on the CPU is replaced by float32.
        vae_path: optional VAE override, a single file or a diffusers VAE folder.
        vae_dtype: the VAE's number format when it differs from ``dtype`` (e.g. fp32 beside
            a bf16 UNet); its weights are read from the file in that format, not cast.
        on_device: move the modules to ``device`` (False: they stay in system memory for a
            CPU offload mode to place them, see ``generate._apply_plan``).
        config_root: where the per-family diffusers configs live (tests point it elsewhere).

    Raises:
        ModelError: the model or VAE cannot be loaded; the message names the file.
    """
    import torch

    _force_offline()
    if device.split(":", 1)[0] == "cpu" and dtype == torch.float16:
        # Half precision on the CPU is several times slower and some kernels lack it.
        dtype = torch.float32
    if vae_dtype is None or (device.split(":", 1)[0] == "cpu" and vae_dtype == torch.float16):
        vae_dtype = dtype
    if info.prediction_type not in PREDICTION_TYPES:
        raise ModelError(
            f"Unknown prediction type {info.prediction_type!r} for {info.name}; "
            "use epsilon or v_prediction."
        )
    path = Path(info.path)
    if not path.exists():
        raise ModelError(f"The model file {path} does not exist (moved or deleted?).")
    if info.format == "safetensors":
        # A damaged file gets a message about the file rather than "unknown family".
        try:
            read_safetensors_header(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path.name} is not a usable .safetensors file: {exc}.") from exc
    if not info.usable:
        raise ModelError(f"{path.name} cannot be used: {info.reason}.")
    # A VAE in another format than the UNet is read on its own, in its own format; the
    # pipeline then takes it instead of loading one.
    own_vae = vae_dtype != dtype and vae_path is None
    if info.format == "diffusers":
        vae = _load_vae(path / "vae", info, path, vae_dtype, config_root) if own_vae else None
        pipe = _load_folder(path, dtype, vae=vae)
    elif (
        info.format == "safetensors"
        or info.format == "ckpt"
        or (path.suffix.lower() in PICKLE_SUFFIXES)
    ):
        if info.format != "safetensors":
            info = _classify_pickle(info, path)
        vae = _load_vae(path, info, path, vae_dtype, config_root) if own_vae else None
        pipe = _load_single_file(info, path, dtype, config_root, vae=vae)
    else:
        raise ModelError(
            f"{path.name}: {info.reason or 'this file type is not supported'}; "
            "use a .safetensors checkpoint or a diffusers folder."
        )
    _check_complete(pipe, path)
    if vae_path is not None:
        pipe.vae = _load_vae(Path(vae_path), info, path, vae_dtype, config_root)
        pipe.register_modules(vae=pipe.vae)
    _set_prediction_type(pipe, info.prediction_type)
    try:
        if on_device:
            pipe.to(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"Could not move {path.name} to {device}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    img2img = _img2img_from(pipe)
    return LoadedPipelines(
        info=info, txt2img=pipe, img2img=img2img, device=device, dtype=dtype, vae_dtype=vae_dtype
    )


# -- offline guard ---------------------------------------------------------------------------


def _force_offline() -> None:
    """Make the Hub libraries offline even if they were imported before this module.

    huggingface_hub, and several diffusers modules after it, copy ``HF_HUB_OFFLINE`` into
    module globals at import time, so the environment variable alone is too late for copies
    already imported (by a test run, a plug-in, a user's environment with it set to 0).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    for name, module in list(sys.modules.items()):
        if name.startswith(_HUB_MODULES) and getattr(module, "HF_HUB_OFFLINE", None) is False:
            setattr(module, "HF_HUB_OFFLINE", True)  # noqa: B010 (any module, not a known one)


# -- loading ---------------------------------------------------------------------------------


def _pipeline_classes(family: str) -> tuple[Any, Any]:
    """(main pipeline, img2img pipeline) classes; a 9-channel model's main one inpaints."""
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
    )

    inpaint = family.endswith("-inpaint")
    main: Any
    if family.startswith("sdxl"):
        main = StableDiffusionXLInpaintPipeline if inpaint else StableDiffusionXLPipeline
        return main, StableDiffusionXLImg2ImgPipeline
    main = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    return main, StableDiffusionImg2ImgPipeline


def _sd_kwargs(cls: type) -> dict[str, Any]:
    """No safety checker: it is a separate download and Sandstorm runs offline."""
    from diffusers import StableDiffusionPipeline

    if issubclass(cls, StableDiffusionPipeline):
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _load_folder(path: Path, dtype: torch.dtype, vae: Any = None) -> Any:
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path.name} has no readable model_index.json: {exc}") from exc
    class_name = str(index.get("_class_name", ""))
    known = ("StableDiffusion", "StableDiffusionXL")
    if class_name not in [f"{k}{kind}Pipeline" for k in known for kind in ("", "Inpaint")]:
        raise ModelError(
            f"{path.name} is a {class_name or 'unknown'} folder; Sandstorm loads Stable "
            "Diffusion 1.x, 2.x and SDXL models."
        )
    family = "sdxl" if "XL" in class_name else "sd1"
    if _unet_channels(path) == INPAINT_CHANNELS:
        family += "-inpaint"
    cls, _ = _pipeline_classes(family)
    extra = {"vae": vae} if vae is not None else {}
    try:
        return cls.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, **_sd_kwargs(cls), **extra
        )
    except Exception as exc:
        raise ModelError(f"Could not load the model folder {path.name}: {_reason(exc)}") from exc


def _unet_channels(path: Path) -> int:
    try:
        config = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
        return int(config.get("in_channels", 4))
    except (OSError, ValueError, TypeError):
        return 4


def _config_folder(family: str, root: Path, path: Path) -> Path:
    name = FAMILY_CONFIGS.get(family.removesuffix("-inpaint"))
    if name is None:
        label = FAMILY_LABELS.get(family, family)
        raise ModelError(f"{path.name} is a {label} model, which Sandstorm cannot load.")
    folder = Path(root) / name
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"The {FAMILY_LABELS[family.removesuffix('-inpaint')]} configuration Sandstorm "
            f"needs to read {path.name} is "
            f"missing from {folder}; reinstall Sandstorm."
        )
    return folder


def _load_single_file(
    info: ModelInfo, path: Path, dtype: torch.dtype, root: Path, vae: Any = None
) -> Any:
    config = _config_folder(info.family, root, path)
    cls, _ = _pipeline_classes(info.family)
    extra: dict[str, Any] = {"vae": vae} if vae is not None else {}
    if info.family.endswith("-inpaint"):
        # The base family's shipped config with a 9-channel conv_in (the UNet's own input:
        # latents, mask and masked-image latents). Never ``in_channels`` at pipeline level,
        # which would reach the VAE too.
        extra["num_in_channels"] = INPAINT_CHANNELS
    try:
        return cls.from_single_file(
            str(path),
            config=str(config),
            dtype=dtype,
            local_files_only=True,
            **_sd_kwargs(cls),
            **extra,
        )
    except Exception as exc:
        raise ModelError(
            f"Could not load {path.name} as an {FAMILY_LABELS[info.family]} checkpoint: "
            f"{_reason(exc)}"
        ) from exc


_SHAPE_MISMATCH = re.compile(
    r"(?P<key>[\w.]+) expected shape torch\.Size\(\[(?P<want>[^\]]*)\]\), "
    r"but got torch\.Size\(\[(?P<got>[^\]]*)\]\)"
)


def _reason(exc: BaseException) -> str:
    """Turn a library exception into one readable sentence.

    The usual failures (weights of another architecture, weights missing from the file)
    get a plain explanation; anything else keeps the first sentence of the library's text.
    """
    text = " ".join(str(exc).split())
    if match := _SHAPE_MISMATCH.search(text):
        return (
            "its weights do not fit this model type "
            f"({match['key']} is [{match['got']}], expected [{match['want']}])."
        )
    if "size mismatch" in text:
        return "its weights do not fit this model type (" + text.split(":", 1)[-1].strip() + ")."
    if "meta tensor" in text or ("missing" in text.lower() and "key" in text.lower()):
        return "it is incomplete, some weights are missing (truncated or not a full model)."
    if not text:
        return type(exc).__name__ + "."
    first = text.split(". ", 1)[0]
    return first if first.endswith(".") else first + "."


# -- pickled checkpoints ---------------------------------------------------------------------


def safe_torch_load(path: Path) -> Any:
    """Open a pickled torch file with the restricted unpickler, never running its code.

    Raises:
        ModelError: the pickle asks for anything beyond tensors and plain containers, or
            the file is not a readable torch file.
    """
    import torch

    def load(mmap: bool) -> Any:
        return torch.load(str(path), weights_only=True, map_location="cpu", mmap=mmap)

    try:
        try:
            return load(mmap=True)
        except RuntimeError as exc:
            # Files from torch < 1.6 are not zip archives and cannot be memory-mapped.
            if "mmap" not in str(exc):
                raise
            return load(mmap=False)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "not an allowed global" in text:
            raise ModelError(
                f"{path.name} needs full unpickling, which can run arbitrary code; Sandstorm "
                "refuses to load it. Convert it to .safetensors."
            ) from exc
        raise ModelError(
            f"{path.name} cannot be read safely: it is corrupt or uses pickle features beyond "
            "plain weights, and full unpickling can run arbitrary code. Convert it to "
            ".safetensors."
        ) from exc
    except Exception as exc:  # the restricted unpickler fails in many ways on garbage input
        reason = _reason(exc) if str(exc).strip() else "the file ends early."
        raise ModelError(
            f"{path.name} is not a readable checkpoint (corrupt or truncated?): {reason}"
        ) from exc


def _classify_pickle(info: ModelInfo, path: Path) -> ModelInfo:
    """Classify a ``.ckpt`` from its keys; it cannot be done at scan time without unpickling."""
    state = safe_torch_load(path)
    # Training checkpoints keep the weights under "state_dict", sometimes nested.
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} does not contain a state dict (not a checkpoint).")
    shapes = {k: list(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    del state
    family, reason = classify_keys(shapes)
    if reason:
        raise ModelError(f"{path.name} cannot be used: {reason}.")
    # The family was unknown at scan time, so "epsilon" there was only a placeholder: a
    # per-file sidecar or a non-default choice wins, else the family's usual type applies.
    chosen = read_sidecar(path).get("prediction_type")
    if chosen not in PREDICTION_TYPES:
        chosen = info.prediction_type
        if chosen == "epsilon":
            chosen = default_prediction_type(family, info.name)
    return replace(
        info,
        family=family,
        usable=True,
        reason="",
        prediction_type=chosen,
        native_size=NATIVE_SIZES.get(family, info.native_size),
    )


# -- after loading ---------------------------------------------------------------------------


def _check_complete(pipe: Any, path: Path) -> None:
    """Weights missing from a file stay on the "meta" device; catch that before use."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        missing = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if missing:
            raise ModelError(
                f"{path.name} is incomplete: its {name} lacks {len(missing)} weights "
                f"(for example {missing[0]}); the file is truncated or not a full checkpoint."
            )


def _load_vae(
    vae_path: Path, info: ModelInfo, model_path: Path, dtype: torch.dtype, root: Path
) -> Any:
    from diffusers import AutoencoderKL

    if not vae_path.exists():
        raise ModelError(f"The VAE {vae_path} does not exist (moved or deleted?).")
    try:
        if vae_path.is_dir():
            return AutoencoderKL.from_pretrained(str(vae_path), dtype=dtype, local_files_only=True)
        suffix = vae_path.suffix.lower()
        if suffix == ".safetensors":
            try:
                read_safetensors_header(vae_path)
            except (OSError, ValueError) as exc:
                raise ModelError(f"{vae_path.name} is not a usable VAE file: {exc}.") from exc
        elif suffix in PICKLE_SUFFIXES:
            safe_torch_load(vae_path)
        else:
            raise ModelError(f"{vae_path.name}: VAE files must be .safetensors (or .ckpt/.pt).")
        # The VAE's architecture comes from the model it is paired with.
        if info.format == "diffusers":
            config, subfolder = model_path, "vae"
        else:
            config, subfolder = _config_folder(info.family, root, model_path), "vae"
        vae = AutoencoderKL.from_single_file(
            str(vae_path),
            config=str(config),
            subfolder=subfolder,
            dtype=dtype,
            local_files_only=True,
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"Could not load the VAE {vae_path.name}: {_reason(exc)}") from exc
    missing = [n for n, p in vae.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ModelError(
            f"{vae_path.name} is not a complete VAE for {info.name} (missing {missing[0]})."
        )
    return vae


def _set_prediction_type(pipe: Any, prediction_type: str) -> None:
    """The scheduler config carries the prediction type every sampler is built from."""
    scheduler = pipe.scheduler
    if scheduler.config.get("prediction_type") != prediction_type:
        pipe.scheduler = type(scheduler).from_config(
            scheduler.config, prediction_type=prediction_type
        )


def _img2img_from(pipe: Any) -> Any:
    """An img2img pipeline over the very same modules.

    Built from ``components`` rather than ``from_pipe``, which casts shared modules to
    float32 when no dtype is given (diffusers issue 12754).
    """
    import inspect

    _, img2img_cls = _pipeline_classes("sdxl" if "XL" in type(pipe).__name__ else "sd1")
    accepted = inspect.signature(img2img_cls.__init__).parameters
    kwargs = {k: v for k, v in pipe.components.items() if k in accepted}
    if "requires_safety_checker" in accepted:
        kwargs["requires_safety_checker"] = False
    if "force_zeros_for_empty_prompt" in accepted:
        kwargs["force_zeros_for_empty_prompt"] = pipe.config.get(
            "force_zeros_for_empty_prompt", True
        )
    img2img = img2img_cls(**kwargs)
    img2img.set_progress_bar_config(disable=True)
    if img2img.unet.dtype != pipe.unet.dtype or img2img.unet is not pipe.unet:
        raise ModelError("Internal error: the img2img pipeline did not share the model's weights.")
    return img2img
