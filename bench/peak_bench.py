"""The CPU's attainable peak and the UNet's work per step: to say what share of the peak a
full-size job reaches (``python -m bench.peak_bench [--size 512]``).

- ``matmul_gflops``: large square matrix products, the best case for the CPU's matrix units
  (oneDNN uses AMX tiles or AVX512_BF16 for bf16 where the CPU has them). This is the
  *attainable* peak; the datasheet peak (cores × clock × FLOP per cycle) is higher still.
- ``unet_step_flops``: the floating-point operations of one CFG step (batch 2) of the SD1.5
  UNet at a picture size, counted by ``torch.utils.flop_counter`` on the meta device (no
  memory, no compute: only shapes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from desktop.engine.environment import apply_defaults

apply_defaults()


def matmul_gflops(dtype: str = "bf16", n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an n×n by n×n product in ``dtype`` on all torch threads."""
    import torch

    from desktop.engine.devices import torch_dtype

    kind = torch_dtype(dtype)
    a = torch.randn(n, n).to(kind)
    b = torch.randn(n, n).to(kind)
    torch.mm(a, b)  # warm-up (oneDNN picks and caches its kernel)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def unet_step_flops(size: int = 512, config: str = "sd15") -> float:
    """FLOP of one CFG step (UNet on batch 2, 77-token context) at ``size``² pixels."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from desktop.engine import paths

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(paths.MODEL_CONFIGS / config / "unet")
        )
        latents = torch.randn(2, unet.config.in_channels, size // 8, size // 8)
        context = torch.randn(2, 77, unet.config.cross_attention_dim)
        timestep = torch.tensor([500.0, 500.0])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(latents, timestep, encoder_hidden_states=context)
    return float(counter.get_total_flops())


def run(size: int = 512) -> dict[str, Any]:
    import torch

    return {
        "peak_threads": torch.get_num_threads(),
        "peak_matmul_bf16_gflops": matmul_gflops("bf16"),
        "peak_matmul_fp32_gflops": matmul_gflops("fp32"),
        f"unet_step_gflop_{size}": unet_step_flops(size) / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peak_bench")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.size), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
