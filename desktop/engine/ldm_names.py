"""The original (LDM / SGM) names of a diffusers UNet's weights.

Checkpoints and many LoRAs use the key layout of the original Stable Diffusion code:
``input_blocks.4.1.transformer_blocks.0.attn1.to_q`` where diffusers says
``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``. kohya's SDXL LoRAs name
their UNet modules this way (``lora_unet_input_blocks_4_1_…``), so the LoRA loader needs
the mapping; the test helpers use it to write checkpoints in the original layout (which
diffusers' own converter then reads back, checking the mapping).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# diffusers ResnetBlock2D module names -> LDM ResBlock names.
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
}


class UnetLayout:
    """What the mapping needs to know about a UNet: resnets per down block and which up
    blocks have attention (their upsampler sits one slot later)."""

    def __init__(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.layers = 1 + max(
            (
                int(m.group(1))
                for k in keys
                if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k)) is not None
            ),
            default=0,
        )
        self.up_with_attention = {
            int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))
        }


def _resnet(rest: str) -> str:
    module, _, leaf = rest.partition(".")
    return f"{_RESNET[module]}.{leaf}"


def unet_ldm_key(key: str, layout: UnetLayout) -> str:
    """The LDM name of a diffusers UNet parameter key (``….weight``); raises ``KeyError``."""
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    layers = layout.layers
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers + 1) + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_resnet(rest)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        index = 1 + int(m[1]) * (layers + 1) + layers
        return f"input_blocks.{index}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        kind, layer, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * layer}.{_resnet(rest)}"
        return f"middle_block.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_resnet(rest)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        index = block * (layers + 1) + layers
        slot = 2 if block in layout.up_with_attention else 1
        return f"output_blocks.{index}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def unet_ldm_module_name(module: str, layout: UnetLayout) -> str | None:
    """The LDM name of a diffusers UNet module (no ``.weight``), or None when it has none."""
    try:
        return unet_ldm_key(f"{module}.weight", layout).removesuffix(".weight")
    except KeyError:
        return None
