"""Tiny IP-Adapters and CLIP image encoders for the tiny test models, built in code.

The tiny image encoder is a ``CLIPVisionModelWithProjection`` (hidden 32, 2 layers,
projection 32, 32x32 images in 8x8 patches) saved as one ``.safetensors`` file without a
config, as ComfyUI keeps them; ``write_encoder_config`` writes its config folder (what the
shipped vit-h / vit-bigg ones are). A tiny adapter has an image projection to 4 tokens and
a ``to_k_ip``/``to_v_ip`` pair for every cross-attention layer of the model's UNet, numbered
as in the real files (1, 3, 5 ...).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from desktop.engine.ip_adapter import PLAIN, PLUS

TINY_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "image_size": 32,
    "projection_dim": 32,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}


def write_encoder_config(folder: Path) -> Path:
    """The tiny encoder's config folder (``config.json``) at ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "clip_vision_model", **TINY_ENCODER}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A tiny image encoder's weights at ``path`` (one .safetensors file)."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_ENCODER))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def cross_attention_layers(model: Path) -> list[tuple[str, int]]:
    """(processor name, hidden width) of each cross-attention layer, in diffusers' order."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(model / "unet"))
    channels = list(unet.config.block_out_channels)
    layers = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            width = channels[-1]
        elif name.startswith("up_blocks"):
            width = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            width = channels[int(name[len("down_blocks.")])]
        layers.append((name, width))
    return layers


def tiny_adapter(model: Path, path: Path, seed: int = 1, image_width: int = 32) -> Path:
    """A plain IP-Adapter for the tiny model in ``model``: 4 image tokens of its context
    width, read from ``image_width``-wide image embeddings."""
    import torch
    from safetensors.torch import save_file

    context = json.loads((model / "unet" / "config.json").read_text())["cross_attention_dim"]
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.5

    state = {
        "image_proj.proj.weight": random(4 * context, image_width),
        "image_proj.proj.bias": random(4 * context),
        "image_proj.norm.weight": torch.ones(context),
        "image_proj.norm.bias": torch.zeros(context),
    }
    for index, (_, width) in enumerate(cross_attention_layers(model)):
        key = 1 + 2 * index
        state[f"ip_adapter.{key}.to_k_ip.weight"] = random(width, context)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = random(width, context)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


# -- real-size files as headers only (classification never reads a tensor) --------------
def header_only_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A .safetensors file of these shapes with no data (classification reads headers)."""
    header = {
        key: {"dtype": "F16", "shape": list(shape), "data_offsets": [0, 0]}
        for key, shape in shapes.items()
    }
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    return path


def adapter_shapes(context: int, image: int, kind: str = PLAIN) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "ip_adapter.1.to_k_ip.weight": (320, context),
        "ip_adapter.1.to_v_ip.weight": (320, context),
    }
    if kind == PLAIN:
        shapes |= {
            "image_proj.proj.weight": (4 * context, image),
            "image_proj.norm.weight": (context,),
        }
    elif kind == PLUS:
        shapes |= {
            "image_proj.proj_in.weight": (context, image),
            "image_proj.latents": (1, 16, context),
        }
    return shapes


def encoder_shapes(hidden: int, layers: int, projection: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.patch_embedding.weight": (hidden, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, hidden),
        "visual_projection.weight": (projection, hidden),
    }
    for layer in range(layers):
        shapes[f"vision_model.encoder.layers.{layer}.mlp.fc1.weight"] = (hidden * 4, hidden)
    if hidden == 1664:
        shapes["vision_model.encoder.layers.0.mlp.fc1.weight"] = (8192, hidden)
    return shapes
