"""Sizes of the built-in model: the same building blocks as Stable Diffusion, made small.

64×64 pictures are encoded to 8×8×4 latents. The UNet goes down to a 1×1 feature map: with
zero padding at every level, the deepest layers see the borders from different sides at each
position, which gives the network a sense of absolute position that plain convolutions and
self-attention lack — "on the left" has to mean a place in the picture.
"""

from __future__ import annotations

from typing import Any

import torch

LATENT_CHANNELS = 4
LATENT_SIZE = 8
TEXT_HIDDEN = 128
TOKEN_INIT_STD = 1.0

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": LATENT_CHANNELS,
    "norm_num_groups": 8,
    "sample_size": 64,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "block_out_channels": (64, 128, 160, 192),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_HIDDEN,
    "attention_head_dim": 32,
    "norm_num_groups": 32,
    # The attention-pooled prompt is added to the timestep embedding, so every ResNet block
    # is conditioned on the whole prompt (as a class-conditional model is), not only the
    # cross-attention layers whose queries carry no position of their own.
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 4,
    # ...and it scales as well as shifts their features (FiLM), so a word can switch on the
    # features of one place in the picture.
    "resnet_time_scale_shift": "scale_shift",
    # Half the default (4 × 64): keeps the FiLM projections, hence the model, within 30 MB.
    "time_embedding_dim": 128,
}

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 32,
    "projection_dim": TEXT_HIDDEN,
}

# Stable Diffusion's training schedule, so every sampler in the table behaves as with SD.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "clip_sample": False,
}


def make_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def make_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        **TEXT_CONFIG,
    )
    model = CLIPTextModel(config)
    # CLIP starts every word at a tiny random embedding (std 0.02). Words the UNet does not
    # use yet then stay nearly identical after training — "left" and "right" ended up almost
    # the same vector while colour words separated — and the UNet cannot start using them.
    # Start each word from a clearly distinct direction instead.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(std=TOKEN_INIT_STD)
    return model


def use_classic_attention(unet: Any) -> None:
    """Plain matmul attention: on CPU its backward pass is about twice as fast as SDPA's."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
