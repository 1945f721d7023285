"""The built-in model's scribble ControlNet recipe: data, initialisation, a few steps, saving."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch

from desktop.engine import paths
from desktop.training import data
from desktop.training import train_controlnet as tc

MODEL = paths.BUILTIN_MODEL


@pytest.fixture(scope="module")
def frozen():
    _, unet, text, tokenizer = tc.load_builtin(MODEL)
    return unet, text, tokenizer


def test_pictures_are_drawn_as_data_render_draws_them() -> None:
    for seed in range(6):
        scene = data.Scene("blue", (data.ShapeSpec(data.SHAPES[seed % 3], "red", "big", "left"),))
        layout = tc.Layout("blue", (tc.place(scene.shapes[0], random.Random(seed)),))
        expected = np.asarray(data.render(scene, random.Random(seed)))
        assert np.array_equal(np.asarray(tc.render_layout(layout)), expected)


def test_a_sketch_becomes_white_strokes_around_the_shape() -> None:
    rng = random.Random(1)
    spec = data.ShapeSpec("circle", "red", "big", "left")
    layout = tc.Layout("blue", (tc.place(spec, None),))
    control = tc.control_image(tc.draw_sketch(layout, rng)[0])
    assert control.shape == (64, 64, 3) and control.min() == 0.0 and control.max() == 1.0
    ys, xs = np.nonzero(control[..., 0] > 0.5)
    placed = layout.shapes[0]
    radius = np.hypot(xs + 0.5 - placed.cx, ys + 0.5 - placed.cy)
    assert abs(float(np.median(radius)) - placed.r) < 2.5  # on the outline, not inside
    assert tc.grid_position(placed.cx, placed.cy) == "left"


def test_a_new_controlnet_copies_the_unet_encoder_and_changes_nothing(frozen) -> None:
    unet, _, _ = frozen
    net = tc.make_controlnet(unet)
    assert net.config.cross_attention_dim == 128
    assert tuple(net.config.block_out_channels) == tuple(
        tc.controlnet_config()["block_out_channels"]
    )
    torch.manual_seed(0)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([900, 50]), torch.randn(2, 6, 128)
    cond = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        down, mid = net(
            x, t, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False
        )
        assert all(float(d.abs().max()) == 0.0 for d in down) and float(mid.abs().max()) == 0.0
        plain = unet(x, t, context).sample
        steered = unet(
            x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        assert torch.equal(plain, steered)
        # With identity output convolutions (and no control image) the net returns the UNet's
        # own mid-block features: its encoder, time embedding included, is an exact copy.
        probe = copy.deepcopy(net)
        for conv in [*probe.controlnet_down_blocks, probe.controlnet_mid_block]:
            conv.weight.zero_()
            conv.weight[:, :, 0, 0] = torch.eye(conv.weight.shape[0])
        features = {}
        hook = unet.mid_block.register_forward_hook(lambda m, i, o: features.update(mid=o))
        unet(x, t, context)
        hook.remove()
        _, copied = probe(
            x, t, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False
        )
    assert torch.allclose(copied, features["mid"], atol=1e-4)


def test_a_few_steps_train_and_the_saved_folder_loads(tmp_path) -> None:
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    net, stats = tc.train_controlnet(
        MODEL, steps=2, workdir=None, batch_size=4, cache_size=8, warmup=1, log_every=0
    )
    assert stats["steps"] == 2
    # The zero convolutions have started to move.
    assert float(net.controlnet_mid_block.weight.abs().max()) > 0
    out = tc.save_controlnet(net, tmp_path / "builtin_scribble")
    shipped = json.loads((tc.CONFIG / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == shipped
    weights = out / "diffusion_pytorch_model.safetensors"
    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float16}
    assert weights.stat().st_size < 14_000_000
    loaded = ControlNetModel.from_pretrained(out, torch_dtype=torch.float32)
    expected = net.controlnet_mid_block.weight.half().float()
    assert torch.equal(loaded.controlnet_mid_block.weight, expected)
