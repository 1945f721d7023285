"""Control layers at generation time: ControlNets loaded offline and run beside the UNet.

A request's ``controls`` are prepared before sampling (``ControlLibrary.prepare``): each
unit's ControlNet is found (its ``model``, or the one suggested for its type and the
model's family), loaded once and cached, and its control image is preprocessed
(``control_images.preprocess``), fitted to the picture with the unit's resize mode, cropped
like the inpainting work area when there is one, and turned into a tensor.

During sampling ``ControlHook`` wraps the UNet's ``forward``: at each call, only the units
whose start/end range holds the current step run (the others cost nothing), their residuals
are summed with their strengths and handed to the UNet. The same hook serves text to image,
image to image and inpainting (a 9-channel UNet's extra channels are not given to a
4-channel ControlNet), for SD 1.x, SD 2.x, SDXL and the built-in model.

Loading: ``.safetensors`` files in the original layout (``control_model.*``, or the v1.1
files without the prefix) and in diffusers' layout load with the shipped config of their
family (``resources/model_configs/controlnet/<family>``); diffusers folders load as they
are. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine import paths
from desktop.engine.control_images import (
    aspect_note,
    fit_control,
    inpaint_condition,
    preprocess,
)
from desktop.engine.controlnet import ControlNetFile, list_controlnets, suggest
from desktop.engine.errors import ModelError
from desktop.engine.images import load_image
from desktop.engine.models import FAMILY_LABELS
from desktop.engine.parts import ControlUnit

if TYPE_CHECKING:
    import torch

    from desktop.engine.inpaint import InpaintPlan

#: The shipped ControlNet config for each text-context width (each model family).
CONFIG_FOLDERS = {768: "sd15", 1024: "sd2", 2048: "sdxl", 128: "builtin"}
#: ControlNets kept loaded between jobs (each SD1.5 one is about 700 MB in half precision).
CACHE_SIZE = 3
#: What to install for each control type, named in the "not installed" message.
EXAMPLES = {
    ("sd1", "canny"): "control_v11p_sd15_canny.safetensors",
    ("sd1", "scribble"): "control_v11p_sd15_scribble.safetensors",
    ("sd1", "lineart"): "control_v11p_sd15_lineart.safetensors",
    ("sd1", "tile"): "control_v11f1e_sd15_tile.safetensors",
    ("sd1", "inpaint"): "control_v11p_sd15_inpaint.safetensors",
    ("sd1", "control map"): "control_v11f1p_sd15_depth.safetensors",
    ("sdxl", "canny"): "diffusers_xl_canny_full.safetensors",
    ("sdxl", "control map"): "diffusers_xl_depth_full.safetensors",
}


def _label(family: str) -> str:
    return FAMILY_LABELS.get(family, family or "an unknown")


@dataclass
class PreparedUnit:
    """One control layer ready to run: its net, image tensor, strength and step range."""

    unit: ControlUnit
    net: Any
    image: Any  # (1, 3, h, w) tensor on the net's device, in its dtype
    name: str

    def active(self, fraction: float) -> bool:
        """Whether the unit runs at this point (0 = first step) of the denoising."""
        return self.unit.start <= fraction < self.unit.end


@dataclass
class ControlHook:
    """Runs the prepared units beside the UNet for one job (see the module docstring)."""

    units: list[PreparedUnit]
    total_steps: int
    step: int = 0
    runs: dict[str, int] = field(default_factory=dict)

    def set_step(self, step: int) -> None:
        """The index of the step about to run (the step callback calls this)."""
        self.step = step

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total_steps)

    @contextlib.contextmanager
    def installed(self, unet: Any) -> Iterator[None]:
        """Wrap ``unet.forward`` for the ``with`` block."""
        if not self.units:
            yield
            return
        original = unet.forward

        def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args, **kwargs):
            down, mid = self.residuals(sample, timestep, encoder_hidden_states, kwargs)
            if down is not None:
                kwargs["down_block_additional_residuals"] = down
                kwargs["mid_block_additional_residual"] = mid
            return original(sample, timestep, encoder_hidden_states, *args, **kwargs)

        unet.forward = forward
        try:
            yield
        finally:
            del unet.forward  # back to the class's method

    def residuals(
        self, sample: Any, timestep: Any, context: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        """The summed residuals of the units active at this step (None, None: none is)."""
        down: list[Any] | None = None
        mid: Any = None
        fraction = self.fraction
        for prepared in self.units:
            if not prepared.active(fraction) or prepared.unit.strength == 0:
                continue
            net = prepared.net
            net_input = sample
            channels = int(net.config.in_channels)
            if sample.shape[1] != channels:
                net_input = sample[:, :channels]  # a 9-channel UNet's latents
            image = prepared.image
            if image.shape[0] != sample.shape[0]:
                image = image.expand(sample.shape[0], -1, -1, -1)
            extra = {}
            if kwargs.get("added_cond_kwargs") is not None:
                extra["added_cond_kwargs"] = kwargs["added_cond_kwargs"]
            out_down, out_mid = net(
                net_input.to(net.dtype),
                timestep,
                encoder_hidden_states=context.to(net.dtype),
                controlnet_cond=image,
                conditioning_scale=float(prepared.unit.strength),
                return_dict=False,
                **extra,
            )
            self.runs[prepared.name] = self.runs.get(prepared.name, 0) + 1
            if down is None:
                down, mid = list(out_down), out_mid
            else:
                down = [a + b for a, b in zip(down, out_down, strict=True)]
                mid = mid + out_mid
        if down is None:
            return None, None
        return [d.to(sample.dtype) for d in down], mid.to(sample.dtype)


class ControlLibrary:
    """Finds, loads and caches ControlNets, and prepares a request's control layers."""

    def __init__(self, configs: dict[int, Path] | None = None) -> None:
        """``configs``: the config folder for each text-context width (default: the
        shipped ones)."""
        root = paths.MODEL_CONFIGS / "controlnet"
        self.configs = configs or {w: root / name for w, name in CONFIG_FOLDERS.items()}
        self._cache: dict[tuple, Any] = {}
        self.loads = 0

    def clear(self) -> None:
        self._cache.clear()

    # -- finding -------------------------------------------------------------------------
    def resolve(
        self,
        unit: ControlUnit,
        family: str,
        extra_sources: Sequence[Any],
        context_width: int = 0,
    ) -> ControlNetFile:
        """The ControlNet ``unit`` uses on a model of ``family`` whose text context is
        ``context_width`` wide (0: check the family only).

        Raises:
            ModelError: none is installed, the named one is missing or unusable, or it is
                made for another model family.
        """
        base = family.removesuffix("-inpaint")
        installed = list_controlnets(extra_sources)
        if unit.model:
            wanted = Path(unit.model)
            key = wanted.stem if wanted.suffix else wanted.name
            if wanted.is_absolute() and wanted.exists():
                from desktop.engine.controlnet import describe_file

                item: ControlNetFile | None = describe_file(wanted)
            else:
                item = next((i for i in installed if i.name.casefold() == key.casefold()), None)
            if item is None:
                raise ModelError(
                    f"The ControlNet '{key}' is not installed: put {key}.safetensors in "
                    "models/controlnet, or pick another model for the control layer."
                )
        else:
            item = suggest(unit.type, base, installed, context_width)
            if item is None:
                example = EXAMPLES.get((base, unit.type), f"a {unit.type} ControlNet")
                raise ModelError(
                    f"No {unit.type} ControlNet for {_label(base)} models is installed: put "
                    f"one (for example {example}) in models/controlnet, or pick a model for "
                    "the control layer."
                )
        if item.problem:
            raise ModelError(f"The ControlNet {item.path.name} cannot be used: {item.problem}.")
        fits = item.context_width == context_width if context_width else item.family == base
        if not fits:
            if item.family and item.family != base:
                detail = f"this model is {_label(base)}"
            else:  # same family name, another shape (a custom or test model)
                detail = (
                    f"its text context is {item.context_width} wide, this model's {context_width}"
                )
            raise ModelError(
                f"The ControlNet {item.path.name} is made for {_label(item.family)} models; "
                f"{detail}. Pick a ControlNet made for this model."
            )
        return item

    # -- loading -------------------------------------------------------------------------
    def load(self, item: ControlNetFile, dtype: torch.dtype, device: str) -> Any:
        """The ControlNet in ``item`` on ``device`` in ``dtype`` (cached)."""
        stat = item.path.stat()
        key = (str(item.path), stat.st_mtime_ns, stat.st_size, str(dtype), device)
        net = self._cache.get(key)
        if net is not None:
            return net
        net = self._read(item, dtype)
        net.to(device=device, dtype=dtype).eval()
        net.requires_grad_(False)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = net
        self.loads += 1
        return net

    def _read(self, item: ControlNetFile, dtype: torch.dtype) -> Any:
        from diffusers import ControlNetModel

        try:
            if item.path.is_dir():
                return ControlNetModel.from_pretrained(
                    str(item.path), dtype=dtype, local_files_only=True
                )
            config = self.configs.get(item.context_width)
            if config is None or not (config / "config.json").is_file():
                raise ModelError(
                    f"The {_label(item.family)} ControlNet configuration Sandstorm ships is "
                    f"missing ({config or 'none for this kind'}); reinstall Sandstorm."
                )
            if item.layout == "diffusers":
                return _from_diffusers_file(ControlNetModel, item.path, config, dtype)
            return ControlNetModel.from_single_file(
                str(item.path), config=str(config), dtype=dtype, local_files_only=True
            )
        except ModelError:
            raise
        except Exception as exc:  # the library raises many types for a bad file
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ModelError(
                f"The ControlNet {item.path.name} could not be loaded: it is damaged or not a "
                f"{_label(item.family)} ControlNet ({detail})."
            ) from exc

    # -- a job's units -------------------------------------------------------------------
    def prepare(
        self,
        units: Sequence[ControlUnit],
        family: str,
        size: tuple[int, int],
        dtype: torch.dtype,
        device: str,
        extra_sources: Sequence[Any],
        inpaint: InpaintPlan | None = None,
        warnings: list[str] | None = None,
        context_width: int = 0,
    ) -> list[PreparedUnit]:
        """Every unit ready to run at the work size ``size`` (w, h).

        With an inpainting plan, the control image is fitted to the whole (grown) picture
        and cropped to the plan's work area, so it lines up with what is repainted.

        Raises:
            ModelError: a ControlNet cannot be found, loaded or used with this model.
            ImageError: a control image cannot be read.
        """
        prepared = []
        for unit in units:
            item = self.resolve(unit, family, extra_sources, context_width)
            net = self.load(item, dtype, device)
            image = self._control_tensor(unit, size, inpaint, warnings, net)
            prepared.append(PreparedUnit(unit, net, image, item.name))
        return prepared

    def _control_tensor(
        self,
        unit: ControlUnit,
        size: tuple[int, int],
        inpaint: InpaintPlan | None,
        warnings: list[str] | None,
        net: Any,
    ) -> Any:
        import numpy as np
        import torch
        from PIL import Image

        source = load_image(unit.image)
        canvas = inpaint.init.size if inpaint is not None else size
        note = aspect_note(source, canvas[0], canvas[1], unit.resize, Path(unit.image).name)
        if note and warnings is not None:
            warnings.append(note)
        fitted = fit_control(source, canvas[0], canvas[1], unit.resize)
        mask = None
        if inpaint is not None:
            mask = inpaint.soft_mask
        if unit.type == "inpaint":
            values = inpaint_condition(fitted, mask)
        else:
            values = np.asarray(preprocess(unit.type, fitted), dtype=np.float32) / 255.0
        if inpaint is not None:
            left, top, right, bottom = inpaint.box
            values = values[top:bottom, left:right]
        if values.shape[1] != size[0] or values.shape[0] != size[1]:
            planes = [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(values[..., c]), "F").resize(
                        size, Image.Resampling.BILINEAR
                    )
                )
                for c in range(3)
            ]
            values = np.stack(planes, axis=-1)
        tensor = torch.from_numpy(np.ascontiguousarray(values)).permute(2, 0, 1)[None]
        return tensor.to(device=net.device, dtype=net.dtype)


def _from_diffusers_file(cls: Any, path: Path, config: Path, dtype: Any) -> Any:
    """A diffusers-layout ControlNet saved as one file: the shipped config, these weights."""
    from safetensors.torch import load_file

    net = cls.from_config(cls.load_config(str(config)))
    state = load_file(str(path))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        sample = (list(missing) + list(unexpected))[:3]
        raise ModelError(
            f"The ControlNet {path.name} does not fit its model family's layout "
            f"({len(missing)} weights missing, {len(unexpected)} unexpected, e.g. {sample})."
        )
    return net.to(dtype)
