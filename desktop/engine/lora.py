"""LoRA files fused into a loaded model's weights before sampling, and taken out exactly.

Formats (``.safetensors`` only; ``.pt``/``.ckpt`` LoRAs are pickles and are refused):

* kohya LoRA and LoCon, for SD1.x/SD2.x (diffusers module names, ``lora_unet_down_blocks_…``)
  and SDXL (original module names, ``lora_unet_input_blocks_4_1_…``; text encoders
  ``lora_te1_`` / ``lora_te2_``, OneTrainer's ``lora_te2_text_projection``);
* diffusers and peft files (``unet.….lora_A.weight``, ``text_encoder.….lora.down.weight``);
* LyCORIS LoHa (``hada_w1_a`` …), LoKr (``lokr_w1`` …) and full differences (``diff``).

Tucker-decomposed files (``lora_mid``, ``hada_t1``, ``lokr_t2``) and DoRA (``dora_scale``)
are refused with a message naming the file.

Each module's change is computed in float32 as ``strength · alpha / rank · up @ down`` (the
alpha of that module, which also sidesteps a diffusers bug that scales modules wrongly when
a file's alphas differ) and added to the weight once, so a step costs what it costs without
a LoRA. The original weights of the changed modules are kept aside while LoRAs are applied
and copied back when they change or go away: the base model comes back bit for bit, and
the checkpoint is never read again.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from desktop.engine.errors import GenerationError, ModelError
from desktop.engine.ldm_names import UnetLayout, unet_ldm_module_name

#: Suffixes of the tensors that make up one module's change, longest first.
_SUFFIXES = (
    "lora_down.weight",
    "lora_up.weight",
    "lora_mid.weight",
    "lora.down.weight",
    "lora.up.weight",
    "lora_A.weight",
    "lora_B.weight",
    "lora_A.default.weight",
    "lora_B.default.weight",
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_w1",
    "lokr_w2",
    "lokr_t2",
    "dora_scale",
    "diff_b",
    "diff",
    "w_norm",
    "b_norm",
    "alpha",
)
_PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")
#: The context width of each family's cross-attention (what a LoRA's attn2.to_k reads).
_CONTEXT_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_COMPONENT_PREFIXES = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
    ("unet.", "unet"),
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder.", "text_encoder"),
)
_TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class LoraUse:
    """One LoRA a job applies: the file and its UNet and text-encoder strengths."""

    name: str
    path: Path
    unet: float = 1.0
    text: float = 1.0

    def key(self) -> tuple:
        stat = self.path.stat()
        return (str(self.path), stat.st_mtime_ns, stat.st_size, self.unet, self.text)


# -- reading a file -------------------------------------------------------------------------


def read_lora_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file; ``ModelError`` with a clear message when it is unusable."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelError(
            f"The LoRA {path.name} is a pickle file ({path.suffix}), which can run code when "
            "it is loaded, so Sandstorm does not open it (as with .ckpt checkpoints). Use the "
            ".safetensors version of this LoRA."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"The LoRA file {path.name} is damaged or incomplete and cannot be read "
            f"({detail}). Download it again."
        ) from exc
    if not state:
        raise ModelError(f"The LoRA file {path.name} holds no weights.")
    return state


def _split_key(key: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    head, _, tail = key.rpartition(".")
    return head, tail


@dataclass
class _Group:
    """The tensors of one module's change in a file."""

    component: str
    raw_name: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _groups(state: dict[str, torch.Tensor], path: Path) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for key, tensor in state.items():
        clean = key.removeprefix("base_model.model.")
        prefix, suffix = _split_key(clean)
        component, name = _component_of(prefix)
        group = groups.setdefault((component, name), _Group(component, name))
        group.tensors[suffix] = tensor
    found = list(groups.values())
    unsupported = _unsupported_kind(found)
    if unsupported:
        raise ModelError(
            f"The LoRA {path.name} is a {unsupported} file, which Sandstorm cannot apply; "
            "use a LoRA, LoCon, LoHa or LoKr file without it."
        )
    return found


def _component_of(prefix: str) -> tuple[str, str]:
    for start, component in _COMPONENT_PREFIXES:
        if prefix.startswith(start):
            return component, prefix[len(start) :]
    return "unet", prefix  # a peft file for the UNet alone has no component prefix


def _unsupported_kind(groups: list[_Group]) -> str:
    for group in groups:
        keys = set(group.tensors)
        if "dora_scale" in keys:
            return "DoRA (weight-decomposed LoRA)"
        if keys & {"lora_mid.weight", "hada_t1", "hada_t2", "lokr_t2"}:
            return "Tucker-decomposed (LyCORIS with lora_mid / t1 / t2)"
    return ""


# -- finding the modules --------------------------------------------------------------------


def _strip_text_model(name: str, sep: str) -> str:
    marker = f"text{sep}model{sep}"
    return name[len(marker) :] if name.startswith(marker) else name


_OLD_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora$")


class _ModuleIndex:
    """Every weight-carrying module of a pipeline's UNet and text encoders, by the names
    LoRA files use for them: dotted diffusers names, kohya's underscored ones and, for the
    UNet, the original (SGM) names kohya uses for SDXL."""

    def __init__(self, pipe: Any) -> None:
        self.components: dict[str, torch.nn.Module] = {}
        for name in ("unet", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                self.components[name] = module
        self._by_name: dict[tuple[str, str], tuple[str, torch.nn.Module]] = {}
        for component, root in self.components.items():
            modules = {n: m for n, m in root.named_modules() if _has_weight(m)}
            layout = UnetLayout(f"{n}.weight" for n in modules) if component == "unet" else None
            for name, module in modules.items():
                entry = (name, module)
                names = {name, name.replace(".", "_")}
                if layout is not None and (ldm := unet_ldm_module_name(name, layout)):
                    names |= {ldm, ldm.replace(".", "_")}
                for alias in names:
                    self._by_name.setdefault((component, alias), entry)

    def find(self, component: str, raw: str) -> tuple[str, torch.nn.Module] | None:
        candidates = [raw]
        if component in _TEXT_COMPONENTS:
            candidates += [_strip_text_model(raw, "_"), _strip_text_model(raw, ".")]
        else:
            candidates.append(_OLD_PROCESSOR.sub(lambda m: "." + m.group(1), raw))
        for candidate in candidates:
            for name in (candidate, candidate.replace("to_out", "to_out.0")):
                hit = self._by_name.get((component, name))
                if hit is not None:
                    return hit
        return None


def _has_weight(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and not list(module.children())


# -- computing a module's change ------------------------------------------------------------


def _f(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float32)


def _scale(tensors: dict[str, torch.Tensor], rank: int) -> float:
    alpha = tensors.get("alpha")
    if alpha is None or rank <= 0:
        return 1.0
    return float(alpha.float().item()) / rank


def _delta(group: _Group, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(change of the weight, change of the bias or None), float32 on the CPU, unscaled by
    the user's strength. Raises ``ValueError`` when the shapes cannot fit the weight."""
    t = group.tensors
    bias = None
    if "diff" in t or "w_norm" in t:
        delta = _f(t.get("diff", t.get("w_norm")))  # type: ignore[arg-type]
        bias_t = t.get("diff_b", t.get("b_norm"))
        bias = _f(bias_t) if bias_t is not None else None
    elif "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]
        left = _f(t["hada_w1_a"]) @ _f(t["hada_w1_b"]).flatten(1)
        right = _f(t["hada_w2_a"]) @ _f(t["hada_w2_b"]).flatten(1)
        delta = left * right * _scale(t, rank)
    elif "lokr_w1" in t or "lokr_w1_a" in t:
        rank = 0
        if "lokr_w1" in t:
            w1 = _f(t["lokr_w1"])
        else:
            w1 = _f(t["lokr_w1_a"]) @ _f(t["lokr_w1_b"])
            rank = t["lokr_w1_b"].shape[0]
        if "lokr_w2" in t:
            w2 = _f(t["lokr_w2"])
        else:
            w2 = _f(t["lokr_w2_a"]) @ _f(t["lokr_w2_b"]).flatten(1)
            rank = t["lokr_w2_b"].shape[0]
        delta = torch.kron(w1, w2.flatten(1)) * (_scale(t, rank) if rank else 1.0)
    else:
        down = t.get("lora_down.weight", t.get("lora.down.weight", t.get("lora_A.weight")))
        up = t.get("lora_up.weight", t.get("lora.up.weight", t.get("lora_B.weight")))
        if down is None:
            down, up = t.get("lora_A.default.weight"), t.get("lora_B.default.weight")
        if down is None or up is None:
            raise ValueError(f"incomplete LoRA pair ({', '.join(sorted(t))})")
        rank = down.shape[0]
        # A LoCon's k×k down convolution flattens to (rank, in·k·k), which is the weight's
        # own (out, in, k, k) order once the product is reshaped.
        delta = (_f(up).flatten(1) @ _f(down).flatten(1)) * _scale(t, rank)
    if delta.numel() != weight.numel():
        raise ValueError(f"shape {tuple(delta.shape)} does not fit {tuple(weight.shape)}")
    return delta.reshape(weight.shape), bias


# -- family check ---------------------------------------------------------------------------


def _lora_family(groups: Sequence[_Group]) -> str:
    """A LoRA's model family as far as its keys tell ("" when they do not)."""
    if any(g.component == "text_encoder_2" for g in groups):
        return "SDXL"
    for group in groups:
        if "attn2" in group.raw_name and re.search(r"to_k$", group.raw_name):
            down = group.tensors.get("lora_down.weight", group.tensors.get("lora_A.weight"))
            if down is not None and down.ndim == 2:
                return _CONTEXT_WIDTH.get(int(down.shape[1]), "")
    return ""


_FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def family_label(family: str) -> str:
    """A model family as users name it ("SD 1.x", "SDXL"); the built-in model by name."""
    base = family.split("-")[0]
    return _FAMILY_NAMES.get(base, "the built-in model" if base == "builtin" else family)


# -- the fused state of a loaded model ------------------------------------------------------


@dataclass
class _Change:
    module: torch.nn.Module
    weight: torch.Tensor
    bias: torch.Tensor | None


class LoraState:
    """The LoRAs fused into one loaded pipeline, and the original weights they replaced.

    ``apply`` makes the pipeline's weights those of the base model plus exactly the given
    LoRAs (nothing happens when they are already the ones applied); ``restore`` puts the
    base model back. A file that cannot be used raises ``ModelError`` before any weight
    changes, so a failed job leaves the model as it was.
    """

    #: LoRA files kept read in memory, so changing strengths does not read them again.
    CACHED_FILES = 4

    def __init__(self, pipe: Any, family: str = "", model_name: str = "") -> None:
        self.pipe = pipe
        self.family = family
        self.model_name = model_name
        self._index: _ModuleIndex | None = None
        self._originals: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._applied: tuple = ()
        self._warnings: list[str] = []
        self._files: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self.fuse_s = 0.0

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    def _module_index(self) -> _ModuleIndex:
        if self._index is None:
            self._index = _ModuleIndex(self.pipe)
        return self._index

    def _read(self, use: LoraUse) -> dict[str, torch.Tensor]:
        key = use.key()[:3]
        if key in self._files:
            self._files.move_to_end(key)
            return self._files[key]
        state = read_lora_file(use.path)
        self._files[key] = state
        while len(self._files) > self.CACHED_FILES:
            self._files.popitem(last=False)
        return state

    def apply(self, uses: Sequence[LoraUse]) -> list[str]:
        """Fuse exactly ``uses`` into the model; returns warnings (skipped layers)."""
        import time

        wanted = tuple(use.key() for use in uses)
        if wanted == self._applied:
            return list(self._warnings)
        begun = time.perf_counter()
        # Everything is read and checked before the first weight changes.
        plans = [self._plan(use) for use in uses]
        self.restore()
        warnings: list[str] = []
        totals: dict[int, _Change] = {}
        for use, (changes, skipped, total) in zip(uses, plans, strict=True):
            for module, component, weight_delta, bias_delta in changes:
                strength = use.unet if component == "unet" else use.text
                if strength == 0.0:
                    continue
                entry = totals.get(id(module))
                scaled_bias = None if bias_delta is None else bias_delta * strength
                if entry is None:
                    totals[id(module)] = _Change(module, weight_delta * strength, scaled_bias)
                else:
                    entry.weight += weight_delta * strength
                    if scaled_bias is not None:
                        entry.bias = scaled_bias if entry.bias is None else entry.bias + scaled_bias
            if skipped:
                warnings.append(
                    f"{skipped} of the {total} layers of the LoRA {use.path.name} have no "
                    "match in this model and were left out."
                )
        self._fuse(totals)
        self._applied = wanted
        self._warnings = warnings
        self.fuse_s = time.perf_counter() - begun
        return list(warnings)

    def _plan(self, use: LoraUse) -> tuple[list[tuple], int, int]:
        state = self._read(use)
        groups = [g for g in _groups(state, use.path) if set(g.tensors) != {"alpha"}]
        index = self._module_index()
        changes = []
        unmatched = 0
        misfit: list[str] = []
        for group in groups:
            hit = index.find(group.component, group.raw_name)
            if hit is None:
                unmatched += 1
                continue
            _, module = hit
            weight = _param(module, "weight")
            if weight.device.type == "meta":
                raise GenerationError(
                    "LoRAs cannot be applied in the sequential offload memory mode; choose "
                    "another GPU memory mode in the settings."
                )
            try:
                delta, bias = _delta(group, weight)
            except (ValueError, RuntimeError, KeyError) as exc:
                misfit.append(f"{group.raw_name}: {exc}")
                continue
            changes.append((module, group.component, delta, bias))
        total = len(groups)
        if misfit or not changes or unmatched > total // 2:
            raise ModelError(self._wrong_model(use, groups, misfit, unmatched))
        return changes, unmatched, total

    def _wrong_model(
        self, use: LoraUse, groups: Sequence[_Group], misfit: list[str], unmatched: int
    ) -> str:
        made_for = _lora_family(groups)
        model = family_label(self.family) if self.family else "this model"
        name = f"'{self.model_name}' " if self.model_name else ""
        if made_for and made_for != model:
            return (
                (
                    f"The LoRA {use.path.name} is made for {made_for} models, but the model "
                    f"{name}is {model}; pick {made_for} model or remove <lora:{use.name}> from "
                    "the prompt."
                )
                .replace("pick SD", "pick an SD")
                .replace("pick SDXL", "pick an SDXL")
            )
        detail = misfit[0] if misfit else f"{unmatched} of {len(groups)} layers have no match"
        return (
            f"The LoRA {use.path.name} does not fit the model {name}({model}): {detail}. "
            f"It is probably made for another kind of model; remove <lora:{use.name}>."
        )

    def _fuse(self, totals: dict[int, _Change]) -> None:
        with torch.no_grad():
            for change in totals.values():
                pairs = [(_param(change.module, "weight"), change.weight)]
                if change.bias is not None and getattr(change.module, "bias", None) is not None:
                    pairs.append((_param(change.module, "bias"), change.bias))
                for param, delta in pairs:
                    self._originals.append((param, param.detach().clone()))
                    fused = param.float() + delta.to(param.device)
                    param.copy_(fused.to(param.dtype))

    def restore(self) -> None:
        """Put the base model's weights back, exactly."""
        with torch.no_grad():
            for param, original in self._originals:
                param.copy_(original)
        self._originals.clear()
        self._applied = ()
        self._warnings = []


def _param(module: torch.nn.Module, name: str) -> torch.Tensor:
    tensor = getattr(module, name)
    assert isinstance(tensor, torch.Tensor)
    return tensor


def lora_uses(
    wanted: Iterable[tuple[str, float, float]], extra_sources: Sequence[Any] = ()
) -> list[LoraUse]:
    """The files of the LoRAs a job names: ``(name, unet strength, text strength)`` each.

    Raises ``ModelError`` naming a LoRA that is not installed (the job does not start).
    """
    from desktop.engine.extra_networks import find_network, missing_message

    uses: list[LoraUse] = []
    seen: set[str] = set()
    for name, unet, text in wanted:
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        found = find_network("lora", name, extra_sources)
        if found is None:
            raise ModelError(missing_message("lora", name, extra_sources))
        if found.problem:
            raise ModelError(f"The LoRA {found.path.name} cannot be used: {found.problem}.")
        uses.append(LoraUse(name, Path(os.fspath(found.path)), unet, text))
    return uses
