"""Turn a tiny diffusers SD1 pipeline into an original-layout (LDM) single-file checkpoint.

Real ``.safetensors``/``.ckpt`` checkpoints from model sites use the key layout of the
original Stable Diffusion code (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``). Writing the tiny test model in that layout lets tests
load it through exactly the code path used for real checkpoints.

The mapping is the inverse of diffusers' ``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint`` and ``convert_ldm_clip_checkpoint``
(``diffusers/loaders/single_file_utils.py``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from desktop.engine.ldm_names import UnetLayout, unet_ldm_key
from desktop.engine.paths import MODEL_CONFIGS

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def unet_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a diffusers ``UNet2DConditionModel`` state dict to LDM keys (without prefix)."""
    layout = UnetLayout(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = unet_ldm_key(key, layout)
        if new in out:
            raise AssertionError(f"two diffusers keys map to {new}")
        out[new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a diffusers ``AutoencoderKL`` state dict to LDM keys (without prefix)."""
    up_blocks = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new, conv = _vae_key(key, up_blocks)
        # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        out[new] = value[:, :, None, None] if conv and value.ndim == 2 else value
    return out


def _vae_key(key: str, up_blocks: int) -> tuple[str, bool]:
    key = key.replace("conv_norm_out.", "norm_out.")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        block = up_blocks - 1 - int(m[1])
        return f"decoder.up.{block}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}", True
    return key, False


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers ``CLIPTextModel`` state dict to the LDM text-encoder keys.

    transformers 5 flattened ``CLIPTextModel`` (no ``text_model.`` level); the original
    layout always has it.
    """
    return {
        (k if k.startswith("text_model.") else f"text_model.{k}"): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The full original-layout state dict of an SD1-style diffusers pipeline."""
    state: dict[str, torch.Tensor] = {}
    for prefix, part in (
        (UNET_PREFIX, unet_to_ldm(pipe.unet.state_dict())),
        (VAE_PREFIX, vae_to_ldm(pipe.vae.state_dict())),
        (CLIP_PREFIX, clip_to_ldm(pipe.text_encoder.state_dict())),
    ):
        state.update({prefix + k: v.detach().clone().contiguous() for k, v in part.items()})
    return state


def load_tiny_pipeline(folder: Path):
    """Load a tiny diffusers folder (from ``tests.helpers.tiny_models``) in float32."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )


def write_single_file(pipe, path: Path) -> Path:
    """Write ``pipe`` as one original-layout checkpoint.

    ``.safetensors`` is written with safetensors; ``.ckpt`` like the original training code
    (``torch.save({"state_dict": ...})``).
    """
    state = pipeline_to_ldm(pipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        import torch

        torch.save({"state_dict": state}, path)
    return path


def write_vae_file(vae, path: Path) -> Path:
    """Write a standalone VAE file in the LDM layout (``encoder.*``/``decoder.*``, no prefix)."""
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in vae_to_ldm(vae.state_dict()).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def make_config_root(pipeline_folder: Path, root: Path, name: str = "sd15") -> Path:
    """Build a config root whose ``<name>/`` is the shipped SD1.5 config, resized to the model.

    ``model_index.json``, the scheduler and the tokenizer are the shipped ones, so loading
    goes through them exactly as for a real checkpoint; only the network configs (UNet, VAE,
    text encoder) come from the tiny diffusers folder. Returns ``root``.
    """
    shipped = MODEL_CONFIGS / "sd15"
    target = root / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copyfile(shipped / "model_index.json", target / "model_index.json")
    shutil.copytree(shipped / "scheduler", target / "scheduler")
    shutil.copytree(shipped / "tokenizer", target / "tokenizer")
    for sub in ("text_encoder", "unet", "vae"):
        (target / sub).mkdir()
        shutil.copyfile(pipeline_folder / sub / "config.json", target / sub / "config.json")
    return root


def controlnet_to_ldm(state: dict[str, torch.Tensor], prefix: str = "control_model.") -> dict:
    """Map a diffusers ``ControlNetModel`` state dict to the original layout
    (``control_model.*``; ``prefix=""`` gives the v1.1 files' unprefixed keys). The inverse
    of diffusers' ``convert_controlnet_checkpoint``."""
    layout = UnetLayout(state)
    blocks = 1 + max(
        int(m.group(1))
        for k in state
        if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("controlnet_cond_embedding."):
            rest = key.removeprefix("controlnet_cond_embedding.")
            if rest.startswith("conv_in."):
                new = "input_hint_block.0." + rest.removeprefix("conv_in.")
            elif rest.startswith("conv_out."):
                new = f"input_hint_block.{2 * (blocks + 1)}." + rest.removeprefix("conv_out.")
            else:
                index, _, leaf = rest.removeprefix("blocks.").partition(".")
                new = f"input_hint_block.{2 * (int(index) + 1)}.{leaf}"
        elif key.startswith("controlnet_down_blocks."):
            index, _, leaf = key.removeprefix("controlnet_down_blocks.").partition(".")
            new = f"zero_convs.{index}.0.{leaf}"
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + key.removeprefix("controlnet_mid_block.")
        else:
            new = unet_ldm_key(key, layout)
        out[prefix + new] = value.detach().clone().contiguous()
    return out
