"""Will a job fit in memory? An estimate from measured working memory, checked before work.

On the CPU a job that does not fit does not raise: the system kills the app. So the engine
checks each size before it samples, against the memory free at that moment (the model's
weights are loaded by then), and refuses with a sentence saying what fits.

Working memory per output pixel, measured with ``python -m bench.memory_bench`` (SD1.5's
architectures, CPU, peak resident memory above the start):

* one UNet step, batch 2 (an image with classifier-free guidance) in bf16: 620–660 bytes;
  it scales with the pixels (attention runs as PyTorch's fused attention, linear in memory);
* one VAE decode in fp32: 3,840 bytes untiled (2048² would need 15 GiB); tiled, a constant
  960 MiB whatever the size (1024² and 2048² measured), which is why the engine tiles the
  VAE from ``devices.TILED_VAE_PIXELS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1024**3
#: UNet working bytes per pixel per image and per byte of its number format (bf16: 2).
UNET_BYTES_PER_PIXEL_BYTE = 330
#: VAE decode working bytes per pixel per byte of its format, untiled (fp32: 4).
VAE_BYTES_PER_PIXEL_BYTE = 960
#: The tiled VAE's working memory (a constant: one tile at a time), fp32.
VAE_TILED_BYTES = int(1.0 * GIB)
#: The finished images as float arrays and tensors, per pixel.
OUTPUT_BYTES_PER_PIXEL = 32
#: SDXL's UNet has no attention at full resolution but wider lower levels; not measured,
#: so a margin over SD1.5's figure.
FAMILY_FACTOR = {"sdxl": 1.5}
#: Only this share of the free memory is planned for (the rest: the system, fragmentation).
USABLE_SHARE = 0.9


@dataclass(frozen=True)
class JobMemory:
    """The estimated working memory of one image size, in bytes."""

    unet: int
    vae: int
    output: int

    @property
    def total(self) -> int:
        return max(self.unet, self.vae) + self.output


def estimate(
    width: int,
    height: int,
    batch: int = 1,
    family: str = "sd1",
    dtype_bytes: int = 2,
    vae_dtype_bytes: int = 4,
    tiled_vae: bool = False,
) -> JobMemory:
    """The working memory of sampling and decoding ``batch`` images of this size."""
    pixels = width * height
    factor = FAMILY_FACTOR.get(family.split("-")[0], 1.0)
    unet = int(pixels * batch * UNET_BYTES_PER_PIXEL_BYTE * dtype_bytes * factor)
    if tiled_vae:
        vae = int(VAE_TILED_BYTES * vae_dtype_bytes / 4)
    else:
        vae = pixels * VAE_BYTES_PER_PIXEL_BYTE * vae_dtype_bytes
    return JobMemory(unet, vae, pixels * batch * OUTPUT_BYTES_PER_PIXEL)


def available(device: str) -> int | None:
    """Bytes free for a job on ``device`` now (None when unknown)."""
    if device.startswith("cuda"):
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(device))
            reserved = torch.cuda.memory_reserved(torch.device(device))
            allocated = torch.cuda.memory_allocated(torch.device(device))
            return int(free + max(0, reserved - allocated))
        except Exception:  # no driver answer: do not guess
            return None
    if device.startswith("cpu"):
        return system_available()
    return None


def system_available() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else physical pages free (None: unknown)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(value: float) -> str:
    """Bytes as "3.2 GiB" (one decimal under 10 GiB; MiB under 1 GiB)."""
    size = value / GIB
    if size < 1:
        return f"{value / 2**20:.0f} MiB"
    return f"{size:.1f} GiB" if size < 10 else f"{size:.0f} GiB"


def largest_scale(
    width: int, height: int, free: int, fits: FitsAt, start: float = 4.0
) -> float | None:
    """The largest hires scale (in 0.05 steps, from ``start`` down to 1) that fits."""
    steps = math.floor((start - 1.0) / 0.05 + 1e-9)
    for i in range(steps, -1, -1):
        scale = round(1.0 + i * 0.05, 2)
        w, h = round(width * scale / 8) * 8, round(height * scale / 8) * 8
        if fits(w, h) <= free:
            return scale
    return None


class FitsAt:
    """The estimate as a function of size, for one request's other settings."""

    def __init__(
        self,
        batch: int,
        family: str,
        dtype_bytes: int,
        vae_dtype_bytes: int,
        tiled_from: int,
    ) -> None:
        self.batch = batch
        self.family = family
        self.dtype_bytes = dtype_bytes
        self.vae_dtype_bytes = vae_dtype_bytes
        self.tiled_from = tiled_from

    def __call__(self, width: int, height: int) -> int:
        tiled = width * height >= self.tiled_from
        need = estimate(
            width,
            height,
            self.batch,
            self.family,
            self.dtype_bytes,
            self.vae_dtype_bytes,
            tiled,
        )
        return need.total
