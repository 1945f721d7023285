"""The loss-curve figure for the model's README (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def _read(path: Path) -> tuple[list[float], list[float]]:
    """Steps and losses of a JSON-lines log; a resumed run's steps continue the count."""
    xs, ys = [], []
    offset = last = 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["step"] <= last - offset:
                offset = last
            last = record["step"] + offset
            xs.append(last)
            ys.append(record["loss"])
    return xs, ys


def _smooth(values: list[float], window: int = 50) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve(workdir: Path, out: Path) -> Path:
    """Plot the VAE, UNet and decoder training losses (raw and a 50-step moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, (name, label) in zip(
        axes,
        (("vae_loss.jsonl", "VAE reconstruction (weighted L1 + MSE)"),
         ("unet_loss.jsonl", "UNet ε-prediction MSE (1/SNR-weighted)"),
         ("decoder_loss.jsonl", "decoder fine-tune (outline-weighted)")),
        strict=True,
    ):  # fmt: skip
        xs, ys = _read(workdir / name)
        ax.plot(xs, ys, color="0.8", linewidth=0.6)
        ax.plot(xs, _smooth(ys), color="C0")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
