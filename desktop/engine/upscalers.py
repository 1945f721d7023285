"""Upscalers: super-resolution models (ESRGAN, RealESRGAN, SwinIR, ...) and plain Lanczos.

Files come from the folders of ``model_folders.folders_for("upscale_models")``: Sandstorm's
own ``models/upscale_models``, ComfyUI's ``models/upscale_models`` and AUTOMATIC1111's
``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR`` ... (searched recursively). A
picker shows each file by its stem, after the built-in "Lanczos", which needs no model.

Loading never runs code from a file: ``.safetensors`` files are read by safetensors, pickles
(``.pth``, ``.pt``, ``.ckpt``, ``.bin``) by ``torch.load(weights_only=True)``, and the weights
go to ``spandrel.ModelLoader().load_from_state_dict``, which detects the architecture and its
hyper-parameters. (spandrel's own file loader is not used: it hands ``.pt`` files to
``torch.jit.load``, which runs the program inside.) Only super-resolution models are accepted;
face restorers, inpainting and 1× restoration models are refused with a message.

Running (``Upscaler.upscale``) goes tile by tile, so a 4× upscale of a 1024² image needs a
few hundred megabytes instead of several gigabytes:

* tiles overlap by ``OVERLAP`` input pixels; across each overlap the two tiles are blended
  with weights that sum to one, and the quarter of the overlap nearest a tile's edge (where
  the model saw the least context) gets no weight, so no seam shows;
* the output is assembled one row of tiles at a time: only one row is held in floats, the
  finished rows go straight into the 8-bit result;
* the tile size comes from the free memory and the model's activation size per pixel, which
  ``load_upscaler`` measures once on a small probe image (a cap applies);
* a model whose scale differs from the one asked for runs at its own scale (several passes
  when one is not enough) and the result is resized to the exact size with Lanczos.

Before any work ``Upscaler.plan`` refuses a request whose result would be larger than
``MAX_SIDE`` pixels a side or would not fit in the free memory. Cancelling (a
``threading.Event``) is checked between tiles.

``save_upscaled`` writes the result as a PNG that carries the source image's generation
settings, plus AUTOMATIC1111's ``Postprocess upscale by`` / ``Postprocess upscaler`` keys and
the source's file name (``read_upscale_record`` reads them back).

torch, spandrel and the metadata modules are imported inside the functions that need them, so
importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine.errors import (
    Cancelled,
    GenerationError,
    ImageError,
    ModelError,
    RequestError,
)
from desktop.engine.model_folders import folders_for

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

LANCZOS = "Lanczos"
KIND = "upscale_models"
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
MODEL_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
#: The largest result, in pixels a side (AUTOMATIC1111's extras tab stops at the same size).
MAX_SIDE = 16384
#: The largest factor a user may ask for.
MAX_SCALE = 8.0
#: At most this many model passes when the model's own scale is smaller than the one asked
#: for (a 2× model asked for 8×: three passes); any remainder is done by Lanczos.
MAX_PASSES = 3
#: Overlap between neighbouring tiles, in input pixels (at most a quarter of the tile).
OVERLAP = 32
MIN_TILE = 64
#: The largest automatic tile side on the CPU and on a GPU; bigger tiles gain little.
MAX_TILE_CPU = 512
MAX_TILE_GPU = 1024
#: Peak working memory of a tile as a multiple of the largest activation the probe saw: a
#: layer's input and output, residual copies and the allocator's slack. Measured on the CPU
#: for ESRGAN, Compact and SwinIR (2.3 to 6); the largest is used.
ACTIVATION_FACTOR = 6.0
#: Share of the free memory a tile may use (the rest is for the result and everything else).
TILE_MEMORY_SHARE = 0.5
#: Share of the free system memory a whole request may use before it is refused.
REQUEST_MEMORY_SHARE = 0.9
#: Side of the image ``load_upscaler`` runs once to measure the model.
PROBE_SIDE = 32
UPSCALE_BY_KEY = "Postprocess upscale by"
UPSCALER_KEY = "Postprocess upscaler"
#: Sandstorm's key for the file an upscaled image was made from.
SOURCE_KEY = "Postprocess source"
#: AUTOMATIC1111's PNG chunk for the postprocessing settings of an extras-tab image.
POSTPROCESSING_CHUNK = "postprocessing"
#: Chunks of the source image that are copied as they are (``parameters`` is extended).
_COPIED_CHUNKS = ("sandstorm", "prompt", "workflow", "invokeai_metadata")
_PURPOSES = {
    "FaceSR": "face restoration",
    "Inpainting": "inpainting",
    "Restoration": "1× restoration (denoising, deblurring or JPEG clean-up)",
}


class UpscalerError(ModelError):
    """An upscaler cannot be found, loaded or used; ``str()`` says why in one sentence."""


@dataclass(frozen=True)
class UpscalerInfo:
    """One upscaler a picker can offer.

    Attributes:
        name: the name shown (the file's stem; "Lanczos" for the built-in one).
        path: the model file; None for Lanczos.
    """

    name: str
    path: Path | None = None

    @property
    def is_lanczos(self) -> bool:
        return self.path is None


LANCZOS_INFO = UpscalerInfo(LANCZOS)


# -- finding the files ------------------------------------------------------------------------


def _model_files(folder: Path) -> Iterable[Path]:
    """Model files under ``folder``, recursively, in name order; hidden entries skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                yield from _model_files(Path(entry.path))
            elif entry.is_file() and Path(entry.name).suffix.lower() in MODEL_SUFFIXES:
                yield Path(entry.path)
        except OSError:
            continue


def list_upscalers(extra_sources: Iterable[Path | str] = ()) -> list[UpscalerInfo]:
    """Lanczos first, then every upscaler file, sorted by name.

    A name is listed once (compared without case): Sandstorm's own folders come first, then
    the folders of ``extra_sources`` (``settings.extra_model_folders``). No file is opened.
    """
    found: dict[str, UpscalerInfo] = {}
    for folder in folders_for(KIND, extra_sources):
        for path in _model_files(folder):
            found.setdefault(path.stem.casefold(), UpscalerInfo(path.stem, path))
    found.pop(LANCZOS.casefold(), None)
    return [LANCZOS_INFO, *sorted(found.values(), key=lambda info: info.name.casefold())]


def find_upscaler(name: str, extra_sources: Iterable[Path | str] = ()) -> UpscalerInfo:
    """The upscaler called ``name``: "Lanczos", a file's stem or name, or a file's path.

    Raises:
        UpscalerError: no upscaler has that name.
    """
    text = (name or "").strip()
    if not text:
        raise UpscalerError("Choose an upscaler: no upscaler name was given.")
    if text.casefold() == LANCZOS.casefold():
        return LANCZOS_INFO
    candidate = Path(text).expanduser()
    if candidate.is_absolute() and candidate.suffix.lower() in MODEL_SUFFIXES:
        if candidate.is_file():
            return UpscalerInfo(candidate.stem, candidate)
        raise UpscalerError(f"The upscaler file {candidate} does not exist.")
    wanted = candidate.stem if candidate.suffix.lower() in MODEL_SUFFIXES else candidate.name
    for info in list_upscalers(extra_sources):
        if info.name.casefold() == wanted.casefold():
            return info
    raise UpscalerError(
        f"There is no upscaler named {text}; put the file in models/upscale_models."
    )


# -- reading the weights safely ---------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).strip().split("\n", 1)[0].split())
    return (text[:160] or type(exc).__name__).rstrip(".")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip with ``code/`` and ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors in ``path``, read without running any code from it.

    Raises:
        UpscalerError: the file is missing, empty, damaged, a TorchScript program or a pickle
            that needs code (custom classes) to load.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UpscalerError(
            f"The upscaler file {path} cannot be read: {exc.strerror or exc}."
        ) from exc
    if size == 0:
        raise UpscalerError(f"{path.name} is empty (0 bytes); download it again.")
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise UpscalerError(f"{path.name} is not an upscaler file; use .safetensors or .pth.")
    if suffix in SAFE_SUFFIXES:
        return _read_safetensors(path)
    return _read_pickle(path)


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises its own error type and OSError
        raise UpscalerError(
            f"{path.name} is damaged or incomplete (a truncated download?): {_first_line(exc)}."
        ) from exc


def _read_pickle(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    if _is_torchscript(path):
        raise UpscalerError(
            f"{path.name} is a TorchScript program, which runs code to load; Sandstorm never "
            "runs code from model files; use a .safetensors version."
        )
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise UpscalerError(
                f"{path.name} needs to run code to load (a pickle with custom classes); "
                "Sandstorm never runs code from model files; use a .safetensors version."
            ) from exc
        raise UpscalerError(
            f"{path.name} is damaged or not a model file: {_first_line(exc)}."
        ) from exc
    except Exception as exc:  # the restricted unpickler fails in many ways on bad input
        raise UpscalerError(
            f"{path.name} is damaged or incomplete (a truncated download?): {_first_line(exc)}."
        ) from exc
    if not isinstance(data, dict):
        raise UpscalerError(f"{path.name} does not hold a model's weights (no state dict).")
    return data


# -- loading ----------------------------------------------------------------------------------


def _default_dtype(descriptor: Any, device: torch.device) -> torch.dtype:
    """The number format an upscaler runs in when none is asked for.

    On a GPU fp16 when the architecture allows it, else bf16 where the GPU has it. On the
    CPU bf16 when the CPU computes it natively (AVX512-BF16 or AMX) and the architecture
    allows it: ``bench/upscale_bench.py`` measured it 1.2× and 2.2× faster than fp32 there
    (4× of a 1024² image on two cores, two days), within one 8-bit level; elsewhere fp32,
    which is faster than emulated bf16.
    """
    import torch

    if device.type == "cuda":
        if descriptor.supports_half:
            return torch.float16
        if descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
    elif device.type == "mps":
        if descriptor.supports_half:
            return torch.float16
    elif device.type == "cpu" and descriptor.supports_bfloat16:
        from desktop.engine.devices import probe

        if probe("cpu").native_bf16:
            return torch.bfloat16
    return torch.float32


def _dtype_label(dtype: torch.dtype) -> str:
    from desktop.engine.devices import dtype_name

    return dtype_name(dtype)


def _check_usable(path: Path, descriptor: Any) -> None:
    """Refuse what is not an RGB or greyscale super-resolution model."""
    from spandrel import ImageModelDescriptor

    arch = descriptor.architecture.name
    purpose = getattr(descriptor, "purpose", "")
    if not isinstance(descriptor, ImageModelDescriptor) or purpose != "SR":
        what = _PURPOSES.get(purpose, f"{purpose or 'unknown'}-purpose")
        raise UpscalerError(
            f"{path.name} is a {what} model ({arch}), not an upscaler: Sandstorm upscales only "
            "with super-resolution models."
        )
    channels = (descriptor.input_channels, descriptor.output_channels)
    if channels not in ((3, 3), (1, 1)):
        raise UpscalerError(
            f"{path.name} is a {arch} model for {channels[0]}-channel images; Sandstorm "
            "upscales with RGB and greyscale models only."
        )


def load_upscaler(
    info: UpscalerInfo, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Upscaler:
    """Load an upscaler for ``device``; Lanczos needs no model (and no torch).

    ``dtype`` None picks the fastest format that keeps the result within about one 8-bit
    level (``_default_dtype``): fp16 or bf16 on a GPU, bf16 on a CPU with native bf16, else
    fp32.

    Raises:
        UpscalerError: the file is missing, unsafe, damaged, of no known architecture, not a
            super-resolution model, or does not run.
    """
    if info.path is None:
        return Upscaler(info)
    path = Path(info.path)
    if not path.is_file():
        raise UpscalerError(f"The upscaler file {path} does not exist (moved or deleted?).")
    try:
        import spandrel
    except ImportError as exc:
        raise UpscalerError(
            "Upscaler models need the spandrel package, which this install lacks; reinstall "
            "Sandstorm."
        ) from exc
    import torch

    state = _read_state_dict(path)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise UpscalerError(
            f"{path.name} is not an upscaler Sandstorm recognises: spandrel found no known "
            "architecture in its weights."
        ) from exc
    except Exception as exc:  # detection matched but the weights do not fit the model
        raise UpscalerError(
            f"{path.name} cannot be loaded: its weights do not fit the architecture spandrel "
            f"detected ({_first_line(exc)})."
        ) from exc
    del state
    _check_usable(path, descriptor)
    target = torch.device(device)
    chosen = dtype or _default_dtype(descriptor, target)
    try:
        descriptor.to(target, chosen).eval()
    except spandrel.UnsupportedDtypeError as exc:
        raise UpscalerError(
            f"{path.name} ({descriptor.architecture.name}) cannot run in "
            f"{_dtype_label(chosen)}; use fp32."
        ) from exc
    try:
        return Upscaler(info, descriptor)
    except UpscalerError:
        if dtype is not None or chosen == torch.float32:
            raise
    # Some architectures claim bf16/fp16 but keep a float32 buffer somewhere (SwinIR on the
    # CPU); the probe run finds that, and a format nobody asked for falls back to fp32.
    descriptor.to(target, torch.float32)
    return Upscaler(info, descriptor)


def _activation_floats_per_pixel(descriptor: Any) -> float:
    """The largest activation of one module, in numbers per input pixel, from one run on a
    small probe image (which also proves that the model runs and has the scale it claims).

    Raises:
        UpscalerError: the model fails on the probe or returns the wrong size.
    """
    import torch

    needs = descriptor.size_requirements
    side = max(PROBE_SIDE, needs.minimum)
    side = -(-side // needs.multiple_of) * needs.multiple_of
    largest = 0

    def record(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    handles = [module.register_forward_hook(record) for module in descriptor.model.modules()]
    probe = torch.zeros(
        1, descriptor.input_channels, side, side, device=descriptor.device, dtype=descriptor.dtype
    )
    try:
        with torch.inference_mode():
            output = descriptor(probe)
    except Exception as exc:  # any failure here means the model cannot be used
        raise UpscalerError(
            f"The {descriptor.architecture.name} upscaler fails to run: {_first_line(exc)}."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    expected = (descriptor.output_channels, side * descriptor.scale, side * descriptor.scale)
    if tuple(output.shape[1:]) != expected:
        raise UpscalerError(
            f"The {descriptor.architecture.name} upscaler returns {tuple(output.shape[1:])} "
            f"for {side}×{side} pixels instead of {expected}."
        )
    return max(largest, output.numel()) / (side * side)


# -- sizes, tiles and memory ------------------------------------------------------------------


def _check_scale(scale: float) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise RequestError(f"The upscale factor {scale!r} is not a number.") from None
    if not math.isfinite(value) or value <= 0:
        raise RequestError(f"The upscale factor must be a positive number, not {scale}.")
    if value <= 1:
        raise RequestError(f"An upscale factor must be above 1 to enlarge the image, not {scale}.")
    if value > MAX_SCALE:
        raise RequestError(f"The upscale factor {scale} is too large; the most is {MAX_SCALE:g}.")
    return value


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size of a ``width``×``height`` image upscaled by ``scale`` (rounded to pixels).

    Raises:
        RequestError: ``scale`` is not a number above 1 and at most ``MAX_SCALE``.
        ImageError: the image has no pixels.
    """
    value = _check_scale(scale)
    if width < 1 or height < 1:
        raise ImageError(f"The image is {width}×{height} pixels; there is nothing to upscale.")
    return max(1, int(width * value + 0.5)), max(1, int(height * value + 0.5))


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` of the tiles along one side: evenly spaced, each ``tile`` long or a
    little shorter, neighbours overlapping by at least ``overlap`` pixels."""
    if length <= tile:
        return [(0, length)]
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)
    last = length - size
    starts = [(k * last + (count - 1) // 2) // (count - 1) for k in range(count)]
    return [(start, start + size) for start in starts]


def blend_weights(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per tile, the weight of each output pixel along one side; they sum to one.

    Across an overlap the later tile's weight rises linearly from 0 to 1 over the middle half;
    the outer quarters belong wholly to the tile that is not near its edge there.
    """
    import torch

    def ramp(length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32) + 0.5
        return ((position - length / 4) / (length / 2)).clamp(0.0, 1.0)

    weights = []
    for k, (start, end) in enumerate(spans):
        weight = torch.ones((end - start) * scale)
        if k > 0 and (shared := (spans[k - 1][1] - start) * scale) > 0:
            weight[:shared] *= ramp(shared)
        if k < len(spans) - 1 and (shared := (end - spans[k + 1][0]) * scale) > 0:
            weight[-shared:] *= 1 - ramp(shared)
        weights.append(weight)
    return weights


def _free_memory(device: torch.device | None) -> int | None:
    """Free bytes on ``device``: a CUDA GPU's own, else the system's (the CPU, and Apple
    GPUs, which share it); None when unknown."""
    if device is not None and device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _gib(size: float) -> str:
    return f"{size / 1024**3:.1f} GB"


@dataclass(frozen=True)
class UpscalePlan:
    """What one upscale will do, decided before any work.

    Attributes:
        size: the input's width and height.
        target: the result's width and height.
        passes: model passes (0 for Lanczos); a Lanczos resize follows when the model's
            size differs from ``target``.
        tile: tile side in input pixels of the last pass; overlap: between tiles.
        tiles: tiles over all passes (what ``progress`` counts to).
        memory: estimated peak system memory in bytes (GPU memory not included).
    """

    size: tuple[int, int]
    target: tuple[int, int]
    passes: int
    tile: int
    overlap: int
    tiles: int
    memory: int


# -- running ----------------------------------------------------------------------------------


class Upscaler:
    """A loaded upscaler model, or Lanczos; build it with ``load_upscaler``.

    Attributes:
        name: the name shown in pickers.
        path: the model file (None for Lanczos).
        native_scale: the model's own factor (1 for Lanczos, which takes any factor).
        architecture: spandrel's name of the architecture ("ESRGAN", "RealESRGAN Compact",
            "SwinIR", ...) or "Lanczos".
        device, dtype: where and in which format the model runs (None for Lanczos).
    """

    def __init__(self, info: UpscalerInfo, descriptor: Any | None = None) -> None:
        self.name = info.name
        self.path = info.path
        self._descriptor: Any = descriptor
        self.channels = 3
        if descriptor is None:
            self.native_scale = 1
            self.architecture = LANCZOS
            self.device: torch.device | None = None
            self.dtype: torch.dtype | None = None
            self._bytes_per_pixel = 0.0
            return
        self.native_scale = int(descriptor.scale)
        self.architecture = str(descriptor.architecture.name)
        self.device = descriptor.device
        self.dtype = descriptor.dtype
        self.channels = int(descriptor.input_channels)
        floats = _activation_floats_per_pixel(descriptor)
        element = descriptor.dtype.itemsize
        # A tile's input and output also exist as float32 copies on the CPU.
        io_floats = self.channels * (1 + 2 * self.native_scale**2)
        self._bytes_per_pixel = floats * ACTIVATION_FACTOR * element + io_floats * 4

    def __repr__(self) -> str:
        return f"Upscaler({self.name!r}, {self.architecture}, {self.native_scale}x)"

    @property
    def is_lanczos(self) -> bool:
        return self._descriptor is None

    @property
    def tile_bytes_per_pixel(self) -> float:
        """Estimated working memory of a tile per input pixel (on the model's device)."""
        return self._bytes_per_pixel

    def _internal_tiling(self) -> bool:
        from spandrel import ModelTiling

        return bool(self._descriptor.tiling == ModelTiling.INTERNAL)

    def _pass_sizes(
        self, width: int, height: int, target: tuple[int, int]
    ) -> list[tuple[int, int]]:
        """Input sizes of the model passes needed to reach ``target``."""
        sizes: list[tuple[int, int]] = []
        if self._descriptor is None:
            return sizes
        scale = self.native_scale
        w, h = width, height
        while len(sizes) < MAX_PASSES and (not sizes or w < target[0] or h < target[1]):
            sizes.append((w, h))
            w, h = w * scale, h * scale
            if scale <= 1:
                break
        return sizes

    def plan(self, width: int, height: int, scale: float, tile: int | None = None) -> UpscalePlan:
        """Check a request and decide how it runs, before any work.

        Raises:
            RequestError: the factor is not above 1, the result (or the model's output on
                the way to it) would be larger than ``MAX_SIDE`` a side, the tile is too
                small, or the work would not fit in the free memory.
            ImageError: the image has no pixels.
        """
        target = target_size(width, height, scale)
        if max(target) > MAX_SIDE:
            raise RequestError(
                f"Upscaling {width}×{height} by {scale:g} would make a {target[0]}×{target[1]} "
                f"image; the most Sandstorm makes is {MAX_SIDE} pixels a side."
            )
        if tile is not None and tile < 16:
            raise RequestError(f"A tile must be at least 16 pixels, not {tile}.")
        passes = self._pass_sizes(width, height, target)
        last_out = target
        if passes:
            w, h = passes[-1]
            last_out = (w * self.native_scale, h * self.native_scale)
            if max(last_out) > MAX_SIDE:
                raise RequestError(
                    f"The {self.native_scale}× model {self.name} would make a "
                    f"{last_out[0]}×{last_out[1]} image on the way to {target[0]}×{target[1]}, "
                    f"more than {MAX_SIDE} pixels a side; use a smaller factor or Lanczos."
                )
        fixed = self._fixed_memory(width, height, passes, last_out, target)
        ram = _free_memory(None)
        chosen = self._choose_tile(passes, tile, fixed, ram)
        overlap = min(OVERLAP, chosen // 4)
        tiles = sum(
            len(tile_spans(w, chosen, overlap)) * len(tile_spans(h, chosen, overlap))
            for w, h in passes
        )
        memory = fixed + self._working_memory(passes, chosen)
        if ram is not None and memory > ram * REQUEST_MEMORY_SHARE:
            raise RequestError(
                f"Upscaling {width}×{height} to {target[0]}×{target[1]} needs about "
                f"{_gib(memory)} of memory and {_gib(ram)} is free; choose a smaller factor."
            )
        return UpscalePlan((width, height), target, len(passes), chosen, overlap, tiles, memory)

    def _fixed_memory(
        self,
        width: int,
        height: int,
        passes: list[tuple[int, int]],
        last_out: tuple[int, int],
        target: tuple[int, int],
    ) -> int:
        """System memory for the images themselves: the input, the model's output (as an
        8-bit array and as a PIL image, 4 bytes a pixel) and the resized result."""
        channels = self.channels
        memory = width * height * 4 * 2  # the caller's image and its converted copy
        if passes:
            memory += last_out[0] * last_out[1] * (channels + 4)
            if len(passes) > 1:
                memory += passes[-1][0] * passes[-1][1] * 4
        if last_out != target or not passes:
            memory += target[0] * target[1] * 4 * 2  # the resize and the alpha channel
        return memory

    def _working_memory(self, passes: list[tuple[int, int]], tile: int) -> int:
        """System memory while a pass runs: one row of tiles in float32 twice (the row and
        the overlap carried to the next), and on the CPU the tile's own working memory."""
        if not passes:
            return 0
        width, height = passes[-1]
        rows, columns = min(tile, height), min(tile, width)
        scale = self.native_scale
        memory = 2 * self.channels * rows * scale * width * scale * 4
        if self.device is None or self.device.type == "cpu":
            memory += int(rows * columns * self._bytes_per_pixel)
        return memory

    def _choose_tile(
        self, passes: list[tuple[int, int]], tile: int | None, fixed: int, ram: int | None
    ) -> int:
        """The tile side: the one asked for, the whole image for a model that tiles itself,
        else the largest that fits in ``TILE_MEMORY_SHARE`` of the free memory (capped)."""
        if tile is not None:
            return int(tile)
        if not passes:
            return 0
        width, height = passes[-1]
        if self._internal_tiling():
            return max(width, height)
        on_gpu = self.device is not None and self.device.type != "cpu"
        cap = MAX_TILE_GPU if on_gpu else MAX_TILE_CPU
        on_cuda = self.device is not None and self.device.type == "cuda"
        free = _free_memory(self.device) if on_cuda else (None if ram is None else ram - fixed)
        if free is None:
            return cap
        budget = max(0.0, free * TILE_MEMORY_SHARE)
        side = int(math.sqrt(budget / self._bytes_per_pixel)) // 8 * 8
        return max(MIN_TILE, min(cap, side))

    def upscale(
        self,
        image: Image.Image,
        scale: float,
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
        tile: int | None = None,
    ) -> Image.Image:
        """``image`` enlarged by ``scale`` (rounded to whole pixels), in its own mode family:
        RGB and greyscale stay so, transparency is kept (the alpha channel is resized with
        Lanczos), other modes become RGB.

        Args:
            cancel: checked before each tile; when set, ``Cancelled`` is raised.
            progress: called with (tiles done, tiles in all) after each tile.
            tile: tile side in input pixels; None chooses it from the free memory.

        Raises:
            RequestError, ImageError: see ``plan``; nothing has run.
            Cancelled: ``cancel`` was set.
            GenerationError: the model ran out of memory.
        """
        from PIL import Image as PILImage

        plan = self.plan(image.width, image.height, scale, tile)
        base, alpha, grey = _split_modes(image)
        done = 0

        def tick() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()

        def advance() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, max(plan.tiles, 1))

        tick()
        result = base
        for _ in range(plan.passes):
            result = self._run_pass(result, plan, tick, advance)
        tick()
        if result.size != plan.target:
            result = result.resize(plan.target, PILImage.Resampling.LANCZOS)
        if not plan.passes:
            advance()
        if grey and result.mode != "L":
            result = result.convert("L")
        if alpha is not None:
            alpha = alpha.resize(plan.target, PILImage.Resampling.LANCZOS)
            result = result.convert("LA" if grey else "RGB")
            result.putalpha(alpha)
        return result

    def _run_pass(
        self,
        image: Image.Image,
        plan: UpscalePlan,
        tick: Callable[[], None],
        advance: Callable[[], None],
    ) -> Image.Image:
        """One model pass over ``image``, tile by tile, one row of tiles at a time."""
        import numpy as np
        import torch
        from PIL import Image as PILImage

        mode = "L" if self.channels == 1 else "RGB"
        pixels = np.array(image.convert(mode), dtype=np.uint8).reshape(
            image.height, image.width, self.channels
        )
        height, width = pixels.shape[:2]
        scale = self.native_scale
        tile = plan.tile
        overlap = min(plan.overlap, tile // 4)
        rows, columns = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
        row_weights, column_weights = blend_weights(rows, scale), blend_weights(columns, scale)
        out = np.empty((height * scale, width * scale, self.channels), dtype=np.uint8)
        carried: torch.Tensor | None = None
        for r, (y0, y1) in enumerate(rows):
            strip = torch.zeros(self.channels, (y1 - y0) * scale, width * scale)
            for (x0, x1), weight in zip(columns, column_weights, strict=True):
                tick()
                strip[:, :, x0 * scale : x1 * scale] += (
                    self._run_tile(pixels[y0:y1, x0:x1]) * weight
                )
                advance()
            strip *= row_weights[r][:, None]
            if carried is not None:
                strip[:, : carried.shape[1]] += carried
            finished = (rows[r + 1][0] - y0) * scale if r + 1 < len(rows) else strip.shape[1]
            out[y0 * scale : y0 * scale + finished] = _to_uint8(strip[:, :finished])
            carried = strip[:, finished:].clone() if r + 1 < len(rows) else None
            del strip
        # fromarray reads (H, W) uint8 as L and (H, W, 3) as RGB.
        return PILImage.fromarray(out[:, :, 0] if self.channels == 1 else out)

    def _run_tile(self, pixels: np.ndarray) -> torch.Tensor:
        """The model's output for one tile (H×W×C uint8) as C×H'×W' float32 on the CPU."""
        import numpy as np
        import torch

        descriptor = self._descriptor
        tile = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        tile = tile.permute(2, 0, 1).unsqueeze(0).to(self.dtype).div_(255.0)
        try:
            with torch.inference_mode():
                output = descriptor(tile)
        except torch.cuda.OutOfMemoryError as exc:
            raise GenerationError(
                f"The upscaler {self.name} ran out of GPU memory on tiles of "
                f"{pixels.shape[1]}×{pixels.shape[0]} pixels; choose a smaller tile size."
            ) from exc
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
                raise
            raise GenerationError(
                f"The upscaler {self.name} ran out of memory on tiles of "
                f"{pixels.shape[1]}×{pixels.shape[0]} pixels; choose a smaller tile size."
            ) from exc
        return output[0].to(device="cpu", dtype=torch.float32)


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    """C×H×W floats in [0, 1] as an H×W×C uint8 array."""
    import torch

    scaled = values.clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return scaled.permute(1, 2, 0).numpy()


def _split_modes(image: Image.Image) -> tuple[Image.Image, Image.Image | None, bool]:
    """(the colour to upscale as RGB, the alpha channel or None, whether it is greyscale)."""
    from desktop.engine.images import to_rgb

    mode = image.mode
    grey = mode in ("L", "LA", "La", "1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
    has_alpha = (
        "A" in image.getbands()
        or mode in ("RGBa", "La", "PA")
        or (mode == "P" and "transparency" in image.info)
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A"), grey
    return to_rgb(image), None, grey


# -- saving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpscaleRecord:
    """What ``save_upscaled`` notes in an image: the factor, the upscaler and the source."""

    scale: float
    upscaler: str
    source: str = ""


def postprocess_pairs(upscaler: str, scale: float, source_name: str) -> list[tuple[str, str]]:
    """The infotext keys of an upscale, in AUTOMATIC1111's order, then the source's name."""
    from desktop.engine.schema import format_value

    pairs = [(UPSCALE_BY_KEY, format_value(float(scale))), (UPSCALER_KEY, upscaler)]
    if source_name:
        pairs.append((SOURCE_KEY, source_name))
    return pairs


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    from desktop.engine.metadata import quote

    return ", ".join(f"{key}: {quote(value)}" for key, value in pairs)


def _with_postprocess(parameters: str, line: str) -> str:
    """``parameters`` with the postprocess keys appended to its settings line (a line of
    their own when the text has none, as when it is only a prompt)."""
    from desktop.engine.metadata import parse_parameters

    text = parameters.rstrip()
    if parse_parameters(text) is not None:
        return f"{text}, {line}"
    return f"{text}\n{line}"


def _source_chunks(source: Path) -> dict[str, str]:
    from desktop.engine.metadata import read_metadata

    return read_metadata(source).raw


def read_upscale_record(raw: Mapping[str, str]) -> UpscaleRecord | None:
    """The upscale noted in an image's text chunks (``ImageMetadata.raw``), or None.

    Reads the ``postprocessing`` chunk (AUTOMATIC1111's, which ``save_upscaled`` writes).
    """
    values = dict(_split_pairs(raw.get(POSTPROCESSING_CHUNK, "")))
    if UPSCALE_BY_KEY not in values or UPSCALER_KEY not in values:
        return None
    try:
        scale = float(values[UPSCALE_BY_KEY])
    except ValueError:
        return None
    return UpscaleRecord(scale, values[UPSCALER_KEY], values.get(SOURCE_KEY, ""))


def _split_pairs(text: str) -> list[tuple[str, str]]:
    """``Key: value, Key: "quoted, value"`` pairs of one line, values unquoted."""
    import json

    decoder = json.JSONDecoder()
    pairs: list[tuple[str, str]] = []
    rest = text.strip()
    while rest:
        key, colon, rest = rest.partition(":")
        if not colon:
            break
        rest = rest.lstrip()
        value = ""
        if rest.startswith('"'):
            with contextlib.suppress(ValueError):
                decoded, end = decoder.raw_decode(rest)
                if isinstance(decoded, str):
                    value, rest = decoded, rest[end:]
        if not value:
            value, _, rest = rest.partition(",")
            value = value.strip()
        else:
            rest = rest.partition(",")[2]
        pairs.append((key.strip(), value))
        rest = rest.strip()
    return pairs


def upscaled_name(source: Path, scale: float) -> str:
    """``<source stem>-upscaled-<factor>x.png`` (a number is added when it is taken)."""
    from desktop.engine.schema import format_value

    return f"{source.stem}-upscaled-{format_value(float(scale))}x.png"


def _png_info(source: Path, upscaler: str, scale: float) -> Any:
    from PIL import PngImagePlugin

    from desktop.engine.metadata import PARAMETERS_KEY

    raw = _source_chunks(source)
    line = _pairs_text(postprocess_pairs(upscaler, scale, source.name))
    info = PngImagePlugin.PngInfo()
    parameters = raw.get(PARAMETERS_KEY) or raw.get("UserComment") or ""
    if parameters.strip() and not parameters.lstrip().startswith("{"):
        info.add_text(PARAMETERS_KEY, _with_postprocess(parameters, line))
    elif parameters.strip():
        info.add_text(PARAMETERS_KEY, parameters)  # Fooocus JSON: kept as it is
    for key in _COPIED_CHUNKS:
        if raw.get(key):
            info.add_text(key, raw[key])
    info.add_text(POSTPROCESSING_CHUNK, line)
    return info


def _link_new(temporary: Path, target: Path) -> None:
    """Give ``temporary`` the name ``target`` unless that exists (FileExistsError)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise
    except OSError:
        # File systems without hard links (FAT, some network shares): check, then rename.
        if target.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.replace(temporary, target)
        return
    temporary.unlink()


def save_upscaled(
    source: Path, image: Image.Image, upscaler: str, scale: float, folder: Path
) -> Path:
    """Write an upscaled image into ``folder`` as ``<source stem>-upscaled-<factor>x.png``
    (``-2``, ``-3``, ... when taken; an existing file is never overwritten).

    The PNG carries the source's generation settings: its ``sandstorm`` chunk (and ComfyUI /
    InvokeAI chunks) as they are, its ``parameters`` infotext with ``Postprocess upscale by``,
    ``Postprocess upscaler`` and ``Postprocess source`` (the source's file name) appended, and
    the same keys in a ``postprocessing`` chunk as AUTOMATIC1111's extras tab writes. The
    write is atomic; index the file with ``Gallery.index_files`` (or let ``sync`` find it).

    Raises:
        SaveError: the folder cannot be written (nothing is left behind).
    """
    from desktop.engine.durable import fsync_folder
    from desktop.engine.gallery import TEMP_PREFIX, TEMP_SUFFIX, SaveError

    source, folder = Path(source), Path(folder)
    info = _png_info(source, upscaler, scale)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    temporary = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
    name = upscaled_name(source, scale)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb") as handle:
            image.save(handle, format="PNG", pnginfo=info)
            handle.flush()
            os.fsync(handle.fileno())
        for number in range(1, 1000):
            target = folder / (name if number == 1 else f"{name[:-4]}-{number}.png")
            try:
                _link_new(temporary, target)
            except FileExistsError:
                continue
            fsync_folder(folder)
            return target
        raise SaveError(f"Could not save the upscaled image to {folder}: no free file name.")
    except OSError as exc:
        raise SaveError(
            f"Could not save the upscaled image to {folder}: {exc.strerror or exc}."
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
