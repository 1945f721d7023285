"""Peak working memory of the SD1.5 UNet and VAE by image size, on the CPU.

What ``desktop.engine.memory`` estimates from: one UNet step (batch 2, as classifier-free
guidance runs it) in bf16 and one VAE decode in fp32, plain and tiled, with random weights of
the real architectures (memory does not depend on the weights' values). Memory is the
process's resident set, sampled every 2 ms by a thread, minus what it was before the call.

    PYTHONPATH=. python -m bench.memory_bench [--sides 256,512,768,1024] [--vae-sides ...]

Prints one JSON line per measurement and the bytes per output pixel of each part.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "resources" / "model_configs" / "sd15"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def peak_during(work: Callable[[], object]) -> tuple[int, float]:
    """(peak resident bytes above the start, seconds) while ``work`` runs."""
    import gc

    gc.collect()
    start = _rss()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    begun = time.perf_counter()
    try:
        work()
    finally:
        elapsed = time.perf_counter() - begun
        done.set()
        thread.join()
    return max(0, max(peak, _rss()) - start), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="256,384,512,768")
    parser.add_argument("--vae-sides", default="256,512,768,1024")
    parser.add_argument("--tiled-sides", default="1024,2048")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / "unet")).to(
        torch.bfloat16
    )
    unet.eval()
    text = torch.zeros(2, 77, 768, dtype=torch.bfloat16)
    for side in [int(s) for s in args.sides.split(",") if s]:
        latents = torch.zeros(2, 4, side // 8, side // 8, dtype=torch.bfloat16)

        def step(latents: torch.Tensor = latents) -> None:
            with torch.inference_mode():
                unet(latents, 500, encoder_hidden_states=text)

        used, seconds = peak_during(step)
        _report("unet_step_bf16_batch2", side, used, seconds)
    unet.to("meta")  # frees the weights before the VAE is measured

    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "vae")).float()
    vae.eval()
    for tiled, sides in ((False, args.vae_sides), (True, args.tiled_sides)):
        if tiled:
            vae.enable_tiling()
        for side in [int(s) for s in sides.split(",") if s]:
            latents = torch.zeros(1, 4, side // 8, side // 8)

            def decode(latents: torch.Tensor = latents) -> None:
                with torch.inference_mode():
                    vae.decode(latents)

            used, seconds = peak_during(decode)
            _report("vae_decode_fp32_tiled" if tiled else "vae_decode_fp32", side, used, seconds)


def _report(part: str, side: int, used: int, seconds: float) -> None:
    line = {
        "part": part,
        "side": side,
        "peak_mib": round(used / 2**20, 1),
        "bytes_per_pixel": round(used / (side * side), 1),
        "seconds": round(seconds, 2),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
