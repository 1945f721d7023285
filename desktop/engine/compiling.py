"""Opt-in ``torch.compile`` of the UNet, with the compiled kernels cached between launches.

Compiling costs minutes on a CPU the first time; the inductor caches (FX graph cache and
AOT autograd cache) live in Sandstorm's cache folder so the next launch reuses them and
compiles in seconds. What it gained on each machine is in ``bench/results`` (levers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from desktop.engine import paths


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels for Sandstorm (per user, never committed)."""
    return paths.cache_dir() / "torch-compile"


def use_compile_cache() -> Path:
    """Point inductor's caches at ``compile_cache_dir`` unless the user set them."""
    folder = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return folder


def compile_unet(unet: Any) -> Any:
    """Compile ``unet`` in place (it keeps its type, config and weights); returns it.

    The compile itself happens on the first forward call, i.e. in the first job.
    """
    use_compile_cache()
    unet.compile()
    return unet
