"""Small helpers shared by the training stages: seeding, batches, a text progress bar."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from desktop.training import data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensor(images: list) -> torch.Tensor:
    """PIL images -> float tensor in [-1, 1], shape (N, 3, H, W)."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def image_batch(rng: random.Random, count: int) -> torch.Tensor:
    return to_tensor([data.render(data.random_scene(rng), rng) for _ in range(count)])


class ProgressBar:
    """A one-line progress bar on stderr with the running loss, plus a JSON-lines loss log."""

    def __init__(self, label: str, total_seconds: float, log_path: Path | None = None) -> None:
        self.label = label
        self.total = total_seconds
        self.started = time.perf_counter()
        self.log = log_path.open("a", encoding="utf-8") if log_path else None
        self._last_draw = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, step: int, loss: float, **extra: float) -> None:
        if self.log is not None:
            record = {"step": step, "time": round(self.elapsed, 2), "loss": loss, **extra}
            self.log.write(json.dumps(record) + "\n")
        now = time.perf_counter()
        if now - self._last_draw < 2.0:
            return
        self._last_draw = now
        frac = min(1.0, self.elapsed / self.total) if self.total else 0.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        sys.stderr.write(
            f"\r{self.label} [{bar}] {self.elapsed / 60:5.1f}/{self.total / 60:.0f} min "
            f"step {step} loss {loss:.4f}   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        if self.log is not None:
            self.log.close()
