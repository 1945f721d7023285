"""LoRA and textual-inversion files built in code, in the key layouts real files use.

* kohya LoRA / LoCon: ``lora_unet_<module path with _>`` + ``.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha``; SD1.x uses diffusers module names, SDXL the original
  (SGM) names (``lora_unet_input_blocks_4_1_…``) and ``lora_te1_`` / ``lora_te2_``; text
  encoder names carry ``text_model_`` as in the original CLIP.
* diffusers / peft: ``unet.<module>.lora_A.weight`` / ``lora_B.weight``.
* LyCORIS LoHa (``hada_w1_a`` …) and LoKr (``lokr_w1``, ``lokr_w2_a`` …).
* embeddings: AUTOMATIC1111 ``.pt`` (``string_to_param``), ``.safetensors`` (``emb_params``)
  and SDXL (``clip_l`` / ``clip_g``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from desktop.engine.ldm_names import UnetLayout, unet_ldm_module_name


def _layers(root: torch.nn.Module, kinds: tuple[type, ...]) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in root.named_modules() if isinstance(m, kinds)]


def _unet_targets(unet, convs: bool) -> list[tuple[str, Any]]:
    kinds: tuple[type, ...] = (torch.nn.Linear, torch.nn.Conv2d) if convs else (torch.nn.Linear,)
    out = []
    for name, module in _layers(unet, kinds):
        attention = any(p in name for p in ("attn", "ff.net", "proj_in", "proj_out"))
        if attention or (convs and "resnets" in name and isinstance(module, torch.nn.Conv2d)):
            out.append((name, module))
    return out


def _pair(module, rank: int, generator: torch.Generator, scale: float):
    if isinstance(module, torch.nn.Conv2d):
        k = module.kernel_size
        down = torch.randn(rank, module.in_channels, *k, generator=generator) * scale
        up = torch.randn(module.out_channels, rank, 1, 1, generator=generator) * scale
    else:
        down = torch.randn(rank, module.in_features, generator=generator) * scale
        up = torch.randn(module.out_features, rank, generator=generator) * scale
    return down, up


def kohya_lora(
    pipe,
    rank: int = 4,
    seed: int = 0,
    convs: bool = False,
    alphas: Callable[[int], float] | None = None,
    text: bool = True,
    scale: float = 0.3,
) -> dict[str, torch.Tensor]:
    """A kohya LoRA (LoCon with ``convs``) for ``pipe``'s UNet and text encoder(s).

    ``alphas(i)`` gives module i's alpha (default: rank / 2 for every module).
    """
    generator = torch.Generator().manual_seed(seed)
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    state: dict[str, torch.Tensor] = {}
    index = 0

    def add(key: str, module) -> None:
        nonlocal index
        down, up = _pair(module, rank, generator, scale)
        state[f"{key}.lora_down.weight"] = down
        state[f"{key}.lora_up.weight"] = up
        alpha = alphas(index) if alphas else rank / 2
        state[f"{key}.alpha"] = torch.tensor(float(alpha))
        index += 1

    unet = pipe.unet
    layout = UnetLayout(unet.state_dict())
    for name, module in _unet_targets(unet, convs):
        module_name = unet_ldm_module_name(name, layout) if sdxl else name
        assert module_name is not None
        add("lora_unet_" + module_name.replace(".", "_"), module)
    if text:
        encoders = [("lora_te1_" if sdxl else "lora_te_", pipe.text_encoder)]
        if sdxl:
            encoders.append(("lora_te2_", pipe.text_encoder_2))
        for prefix, encoder in encoders:
            for name, module in _layers(encoder, (torch.nn.Linear,)):
                if name == "text_projection":
                    continue
                add(prefix + "text_model_" + name.replace(".", "_"), module)
    return state


def peft_lora(pipe, rank: int = 4, seed: int = 0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A diffusers/peft LoRA file for the UNet and text encoder (no alphas: scale 1)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix, root, targets in (
        ("unet.", pipe.unet, _unet_targets(pipe.unet, convs=False)),
        ("text_encoder.", pipe.text_encoder, _layers(pipe.text_encoder, (torch.nn.Linear,))),
    ):
        del root
        for name, module in targets:
            down, up = _pair(module, rank, generator, scale)
            state[f"{prefix}{name}.lora_A.weight"] = down
            state[f"{prefix}{name}.lora_B.weight"] = up
    return state


def loha(pipe, rank: int = 2, seed: int = 0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A LyCORIS LoHa for the UNet's linear layers (kohya names)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in _unet_targets(pipe.unet, convs=False):
        key = "lora_unet_" + name.replace(".", "_")
        out_f, in_f = module.out_features, module.in_features
        for i in (1, 2):
            state[f"{key}.hada_w{i}_a"] = torch.randn(out_f, rank, generator=generator) * scale
            state[f"{key}.hada_w{i}_b"] = torch.randn(rank, in_f, generator=generator) * scale
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def lokr(pipe, seed: int = 0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A LyCORIS LoKr (full ``lokr_w1``, ``lokr_w2``) for the UNet's linear layers."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in _unet_targets(pipe.unet, convs=False):
        out_f, in_f = module.out_features, module.in_features
        if out_f % 2 or in_f % 2:
            continue
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lokr_w1"] = torch.randn(2, 2, generator=generator) * scale
        state[f"{key}.lokr_w2"] = torch.randn(out_f // 2, in_f // 2, generator=generator) * scale
    return state


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``state`` as a ``.safetensors`` file (or a pickle for ``.pt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def a1111_embedding(vectors: torch.Tensor, name: str = "emb") -> dict[str, Any]:
    """AUTOMATIC1111's ``.pt`` embedding layout."""
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors},
        "name": name,
        "step": 1000,
        "sd_checkpoint": "0123456789",
        "sd_checkpoint_name": "model",
    }
