"""Tiny Stable Diffusion pipelines built in code (no Hub), saved as diffusers folders.

They use the real shipped tokenizers, so prompts tokenize exactly as for real models, but
every network is a few hundred kilobytes and a 64x64 image takes milliseconds per step.
"""

from __future__ import annotations

import json
from pathlib import Path

from desktop.engine.environment import apply_defaults
from desktop.engine.paths import MODEL_CONFIGS

apply_defaults()

SD1_TOKENIZER = MODEL_CONFIGS / "sd15" / "tokenizer"
SDXL_TOKENIZER_2 = MODEL_CONFIGS / "sdxl" / "tokenizer_2"


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )


def _text_encoder(projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        projection_dim=32,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def build_tiny_sd(folder: Path, seed: int = 0, in_channels: int = 4) -> Path:
    """Write a tiny SD1-style diffusers folder (StableDiffusionPipeline; with
    ``in_channels=9`` a StableDiffusionInpaintPipeline) and return it."""
    import torch
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=_text_encoder(),
        tokenizer=CLIPTokenizer.from_pretrained(SD1_TOKENIZER),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl(folder: Path, seed: int = 0, in_channels: int = 4) -> Path:
    """Write a tiny SDXL-style diffusers folder (StableDiffusionXLPipeline; with
    ``in_channels=9`` a StableDiffusionXLInpaintPipeline) and return it."""
    import torch
    from diffusers import (
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,
    )
    cls = StableDiffusionXLInpaintPipeline if in_channels == 9 else StableDiffusionXLPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=_text_encoder(),
        text_encoder_2=_text_encoder(projection=True),
        tokenizer=CLIPTokenizer.from_pretrained(SD1_TOKENIZER),
        tokenizer_2=CLIPTokenizer.from_pretrained(SDXL_TOKENIZER_2),
        unet=unet,
        scheduler=_scheduler(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def mark_native_size(folder: Path, size: int = 64) -> None:
    """Tell discovery the tiny model's native size so defaults stay tiny."""
    (folder / "sandstorm.json").write_text(json.dumps({"native_size": size}))


def build_tiny_controlnet(
    unet_folder: Path, target: Path, seed: int = 0, fresh: bool = True, single_file: bool = False
) -> Path:
    """A ControlNet for the tiny model whose UNet is in ``unet_folder`` (its config, its
    context width). ``fresh``: zero output convolutions, as a new ControlNet has (its output
    changes nothing); otherwise random ones, so it steers. Written as a diffusers folder, or
    with ``single_file`` as one diffusers-layout ``.safetensors`` file."""
    import inspect
    import json

    import torch
    from diffusers import ControlNetModel

    config = json.loads((unet_folder / "unet" / "config.json").read_text())
    allowed = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    settings = {k: v for k, v in config.items() if k in allowed}
    settings["conditioning_embedding_out_channels"] = (8, 8, 16, 16)
    torch.manual_seed(seed)
    net = ControlNetModel(**settings)
    if not fresh:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.5)
            conv = net.controlnet_cond_embedding.conv_out
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.2)
    if single_file:
        from safetensors.torch import save_file

        target.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(target))
        return target
    net.save_pretrained(target, safe_serialization=True)
    return target
