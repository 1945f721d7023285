"""Pieces of the built-in model's training recipe: losses, weights, initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from desktop.training import architecture, common, data, evaluate, train_unet, train_vae


def _one_shape_picture() -> torch.Tensor:
    scene = data.Scene("blue", (data.ShapeSpec("square", "red", "big", "center"),))
    return common.to_tensor([data.render(scene)])


def test_reconstruction_loss_weighs_the_shape_more_than_the_background() -> None:
    images = _one_shape_picture()
    shape = (images - images[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1
    # The same amount of error, once on background pixels and once on shape pixels.
    count = int(shape.sum())
    background_idx = torch.nonzero(~shape.flatten())[:count].flatten()
    shape_idx = torch.nonzero(shape.flatten())[:count].flatten()
    losses = []
    for idx in (background_idx, shape_idx):
        recon = images.clone().reshape(1, 3, -1)
        recon[:, :, idx] += 0.5
        losses.append(float(train_vae.reconstruction_loss(recon.reshape(images.shape), images)))
    assert losses[1] > 3 * losses[0]
    assert float(train_vae.reconstruction_loss(images, images)) == 0.0


def test_edge_weight_puts_extra_weight_on_the_outline() -> None:
    images = _one_shape_picture()
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    plain = float(train_vae.reconstruction_loss(blurred, images))
    edged = float(train_vae.reconstruction_loss(blurred, images, edge_weight=8.0))
    # A blur only errs along the outline, so weighting the outline raises the loss.
    assert edged > 1.5 * plain


def test_every_word_starts_with_a_distinct_embedding() -> None:
    torch.manual_seed(0)
    model = architecture.make_text_encoder(64, 62, 63)
    weight = model.get_input_embeddings().weight.detach()
    assert abs(float(weight.std()) - architecture.TOKEN_INIT_STD) < 0.1
    ids = torch.tensor([[62, 5, 63], [62, 6, 63]])  # two one-word prompts
    with torch.no_grad():
        hidden = model(ids).last_hidden_state
    # Different words give clearly different encodings from the first step.
    assert float((hidden[0, 1] - hidden[1, 1]).norm()) > 0.5 * float(hidden[0, 1].norm())


def test_high_noise_weights_are_clamped_and_grow_with_noise() -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear",
    )  # fmt: skip
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weights = (1 / snr).clamp(1.0, train_unet.HIGH_NOISE_WEIGHT)
    assert float(weights[0]) == 1.0 and float(weights[-1]) == train_unet.HIGH_NOISE_WEIGHT
    assert bool((weights[1:] >= weights[:-1]).all())


class _PerfectVAE(torch.nn.Module):
    """Encodes a picture as itself, so reconstructions are exact."""

    class _Dist:
        def __init__(self, x: torch.Tensor) -> None:
            self.mean = x

    class _Out:
        def __init__(self, x: torch.Tensor) -> None:
            self.latent_dist = _PerfectVAE._Dist(x)
            self.sample = x

    def encode(self, x: torch.Tensor) -> _Out:
        return self._Out(x)

    def decode(self, x: torch.Tensor) -> _Out:
        return self._Out(x)


def test_reconstruction_accuracy_of_a_perfect_autoencoder_is_full() -> None:
    accuracy = evaluate.reconstruction_accuracy(_PerfectVAE(), data.evaluation_cases(8))
    assert accuracy == dict.fromkeys(accuracy, 1.0)
