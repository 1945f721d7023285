"""Stage 1: train the ``AutoencoderKL`` on generated pictures (64×64 -> 8×8×4)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from desktop.training import architecture, common


def train_vae(
    workdir: Path,
    minutes: float = 6.0,
    batch_size: int = 16,
    seed: int = 0,
    lr: float = 5e-4,
    resume: bool = False,
) -> Path:
    """Train for ``minutes`` of wall time; save to ``workdir/vae`` and return that folder.

    With ``resume``, training continues from the VAE already in ``workdir/vae``.

    The loss is L1 + MSE on the reconstruction of the posterior mean, with the shape's pixels
    weighted up (see :func:`reconstruction_loss`), plus a tiny KL term that keeps latents near
    a unit Gaussian. Decoding the mean rather than a sample trains several times faster at
    this size, and the UNet is trained on posterior means too.
    """
    common.seed_everything(seed)
    if resume and (workdir / "vae" / "config.json").exists():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(workdir / "vae").train()
        seed += 1000  # fresh pictures, not a replay of the first run's
    else:
        vae = architecture.make_vae().train()
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    total = minutes * 60
    bar = common.ProgressBar("vae", total, workdir / "vae_loss.jsonl")
    step = 0
    while bar.elapsed < total:
        frac = bar.elapsed / total
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * frac))
        images = common.image_batch(rng, batch_size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            posterior = vae.encode(images).latent_dist
            recon = vae.decode(posterior.mean).sample
        rec = reconstruction_loss(recon.float(), images)
        kl = posterior.kl().mean() / images[0].numel()
        loss = rec + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(step, float(rec), kl=float(kl))
    bar.close()
    vae.eval()
    # Latents * scaling_factor should have unit variance, as the UNet's noise does.
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(common.image_batch(rng, 64)).latent_dist.mean for _ in range(8)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    out = workdir / "vae"
    vae.save_pretrained(out)
    psnr = _psnr(vae, rng)
    with (workdir / "vae_stats.txt").open("a", encoding="utf-8") as stats:
        stats.write(
            f"steps {step}\nminutes {bar.elapsed / 60:.1f}\npsnr {psnr:.2f}\n"
            f"scaling_factor {vae.config.scaling_factor:.4f}\n"
        )
    print(f"vae: {step} steps, PSNR {psnr:.1f} dB, scaling factor {vae.config.scaling_factor:.3f}")
    return out


def reconstruction_loss(
    recon: torch.Tensor, images: torch.Tensor, edge_weight: float = 0.0
) -> torch.Tensor:
    """L1 + MSE with the shape's pixels weighted five times.

    A shape covers only 5-20 % of the picture; with a plain mean the background dominates
    and the shape's colour and outline come out washed. Shape pixels are those unlike the
    top-left corner, which is always background. ``edge_weight`` adds weight to the pixels
    along the shape's outline, where a small circle and a small square differ.
    """
    corner = images[:, :, :1, :1]
    mask = ((images - corner).abs().amax(dim=1, keepdim=True) > 0.1).float()
    weight = 1 + 4 * mask
    if edge_weight:
        dilated = F.max_pool2d(mask, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
        weight = weight + edge_weight * (dilated - eroded)
    err = recon - images
    return (weight * (err.abs() + err**2)).mean() / weight.mean()


@torch.no_grad()
def _psnr(vae: torch.nn.Module, rng: random.Random) -> float:
    images = common.image_batch(rng, 64)
    recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    mse = float(((recon - images) / 2).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def finetune_decoder(
    workdir: Path,
    minutes: float,
    batch_size: int = 16,
    seed: int = 0,
    lr: float = 3e-4,
    edge_weight: float = 8.0,
) -> Path:
    """Sharpen the decoder of ``workdir/vae`` with the encoder frozen (outlines weighted up).

    The latents the UNet learns from depend on the encoder only, so this can run after (or
    alongside) UNet training without invalidating it.
    """
    from diffusers import AutoencoderKL

    common.seed_everything(seed + 2000)
    rng = random.Random(seed + 2000)
    vae = AutoencoderKL.from_pretrained(workdir / "vae")
    vae.encoder.requires_grad_(False).eval()
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = minutes * 60
    bar = common.ProgressBar("decoder", total, workdir / "decoder_loss.jsonl")
    step = 0
    while bar.elapsed < total:
        frac = bar.elapsed / total
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
        images = common.image_batch(rng, batch_size)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.mean
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon = vae.decode(latents).sample
        loss = reconstruction_loss(recon.float(), images, edge_weight=edge_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(step, float(loss))
    bar.close()
    vae.eval()
    psnr = _psnr(vae, rng)
    staging = workdir / "vae.partial"
    vae.save_pretrained(staging)
    out = workdir / "vae"
    for file in staging.iterdir():
        file.replace(out / file.name)
    staging.rmdir()
    with (workdir / "vae_stats.txt").open("a", encoding="utf-8") as stats:
        stats.write(f"decoder steps {step}\nminutes {bar.elapsed / 60:.1f}\npsnr {psnr:.2f}\n")
    print(f"decoder: {step} steps, PSNR {psnr:.1f} dB")
    return out
