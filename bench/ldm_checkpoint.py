"""Full-size random-weight checkpoints for benchmarks that need real model shapes.

Other programs (ComfyUI) recognise a checkpoint by its tensor shapes and refuse the tiny
test models, so side-by-side benchmarks need a full-size Stable Diffusion 1.5 file. Random
weights are enough to time the work: every layer has its real size and runs its real code.

``build_sd15_checkpoint`` writes one ``.safetensors`` file in the original LDM key layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``),
fp16 on disk (about 1.1 GB), from the shipped configs in ``resources/model_configs/sd15``.
``build_sdxl_pipeline`` builds a random-weight SDXL pipeline in memory (no file).

    python -m bench.ldm_checkpoint [--path FILE] [--seed N] [--verify]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine.environment import apply_defaults

apply_defaults()  # HF_HUB_OFFLINE=1 before any Hub library loads: there is no network.

from desktop.engine import paths  # noqa: E402 (after apply_defaults, on purpose)
from tests.helpers import ldm  # noqa: E402

if TYPE_CHECKING:
    import torch

SD15_CONFIG = paths.MODEL_CONFIGS / "sd15"
SDXL_CONFIG = paths.MODEL_CONFIGS / "sdxl"


def default_path() -> Path:
    return paths.cache_dir() / "bench" / "sd15-random.safetensors"


# -- building the SD1.5 modules ------------------------------------------------------------


def _unet(config: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))


def _vae(config: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))


def _clip(
    config: Path,
    folder: str = "text_encoder",
    projection: bool = False,
    dtype: torch.dtype | None = None,
):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_config = CLIPTextConfig.from_pretrained(config / folder, local_files_only=True)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    if dtype is None:
        return cls(text_config)
    # transformers takes the dtype from here, not from torch's default dtype.
    return cls._from_config(text_config, dtype=dtype)


def _ldm_parts(name: str, module) -> dict[str, torch.Tensor]:
    """The LDM-layout tensors (with prefix) of one SD1 module, as they come from the module."""
    state = module.state_dict()
    if name == "unet":
        return {ldm.UNET_PREFIX + k: v for k, v in ldm.unet_to_ldm(state).items()}
    if name == "vae":
        return {ldm.VAE_PREFIX + k: v for k, v in ldm.vae_to_ldm(state).items()}
    return {ldm.CLIP_PREFIX + k: v for k, v in ldm.clip_to_ldm(state).items()}


_BUILDERS = {"unet": _unet, "vae": _vae, "text_encoder": _clip}


def expected_keys() -> set[str]:
    """Every key a complete file holds, from modules built on the meta device (no memory)."""
    from accelerate import init_empty_weights

    keys: set[str] = set()
    with init_empty_weights():
        for name, build in _BUILDERS.items():
            keys.update(_ldm_parts(name, build(SD15_CONFIG)))
    return keys


def _is_complete(path: Path, keys: set[str], seed: int) -> bool:
    """Whether ``path`` is a whole file of ours: every key, fp16, not truncated, same seed."""
    from safetensors import safe_open

    from desktop.engine.models import read_safetensors_header

    try:
        header = read_safetensors_header(path)  # also checks the file is not truncated
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, ValueError):
        return False
    return (
        set(header) == keys
        and all(v.get("dtype") == "F16" for v in header.values())
        and metadata.get("sandstorm_seed") == str(seed)
    )


def _fp16(key: str, tensor: torch.Tensor) -> torch.Tensor:
    import torch

    out = tensor.detach().to(torch.float16).contiguous()
    if not torch.isfinite(out).all():
        raise ValueError(f"{key} has inf/NaN values after the cast to fp16")
    return out


def build_sd15_checkpoint(path: Path | None = None, seed: int = 0) -> Path:
    """Write (or reuse) a random-weight full-size SD1.5 checkpoint and return its path.

    Weights: ``torch.manual_seed(seed)``, then the UNet, the VAE and the text encoder are
    built in that order with their default random init, so a given seed always gives the
    same file. A complete file already at ``path`` (readable header, every expected key,
    fp16, the same seed in its metadata) is reused; otherwise it is written to a temporary
    file and renamed into place.
    """
    import torch
    from safetensors.torch import save_file

    path = default_path() if path is None else Path(path)
    keys = expected_keys()
    if path.is_file() and _is_complete(path, keys, seed):
        return path
    torch.manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, build in _BUILDERS.items():
        module = build(SD15_CONFIG)
        for key, value in _ldm_parts(name, module).items():
            if key in state:
                raise AssertionError(f"two modules map to {key}")
            state[key] = _fp16(key, value)
        del module  # keep one fp32 module in memory at a time
    if set(state) != keys:
        raise AssertionError(f"key mismatch: {sorted(set(state) ^ keys)[:5]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "sandstorm_seed": str(seed)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- verification --------------------------------------------------------------------------


def verify(path: Path, seed: int | None = None) -> dict[str, Any]:
    """Check that ``path`` loads as a complete SD1.5 model; raise ``AssertionError`` if not.

    * ``desktop.engine.models`` classifies it as a usable "sd1" checkpoint;
    * diffusers' ``from_single_file`` (with the shipped config) loads it with no weight left
      on the meta device, and every weight it loaded equals the file's tensor under our key
      mapping, with no key left over on either side;
    * with ``seed``, the UNet rebuilt from that seed equals the loaded one (up to the fp16
      cast): the file holds exactly the weights that were generated.

    Loads the whole pipeline in memory (about 4 GB); returns a summary.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from desktop.engine.models import inspect_file

    path = Path(path)
    info = inspect_file(path)
    assert info.family == "sd1" and info.usable, f"classified {info.family!r}: {info.reason}"
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(SD15_CONFIG),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    load_s = time.perf_counter() - start
    summary: dict[str, Any] = {"family": info.family, "load_s": round(load_s, 2)}
    with safe_open(str(path), framework="pt") as handle:
        file_keys = set(handle.keys())
        seen: set[str] = set()
        for name in _BUILDERS:
            module = getattr(pipe, name)
            meta = [n for n, p in module.named_parameters() if p.device.type == "meta"]
            assert not meta, f"{name}: {len(meta)} weights missing (e.g. {meta[0]})"
            parts = _ldm_parts(name, module)
            missing = sorted(set(parts) - file_keys)
            assert not missing, f"{name}: loaded weights with no key in the file: {missing[:3]}"
            for key, loaded in parts.items():
                stored = handle.get_tensor(key)
                assert torch.equal(loaded.detach().to(torch.float16), stored), f"{key} differs"
            seen.update(parts)
            summary[f"{name}_tensors"] = len(parts)
        unused = sorted(file_keys - seen)
        assert not unused, f"file keys the pipeline did not load: {unused[:3]}"
    summary["parameters"] = sum(
        p.numel() for name in _BUILDERS for p in getattr(pipe, name).parameters()
    )
    if seed is not None:
        loaded_unet = pipe.unet.state_dict()
        del pipe
        torch.manual_seed(seed)
        generated = _unet(SD15_CONFIG).state_dict()
        assert generated.keys() == loaded_unet.keys()
        worst = 0.0
        for key, value in generated.items():
            diff = (value.to(torch.float16).float() - loaded_unet[key].float()).abs().max()
            worst = max(worst, float(diff))
        assert worst == 0.0, f"UNet differs from the generated one by up to {worst}"
        summary["unet_matches_seed"] = seed
    return summary


# -- SDXL, in memory -----------------------------------------------------------------------


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_sdxl_pipeline(seed: int = 0, dtype: torch.dtype | None = None):
    """A random-weight ``StableDiffusionXLPipeline`` from the shipped SDXL configs (no file).

    About 3.5 B parameters: 7 GB of memory in fp16 (the default), 14 GB in float32. The
    modules are created directly in ``dtype``, so building never needs the float32 copy.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    dtype = torch.float16 if dtype is None else dtype
    torch.manual_seed(seed)
    with _default_dtype(dtype):
        unet = _unet(SDXL_CONFIG)
        vae = _vae(SDXL_CONFIG)
        text_encoder = _clip(SDXL_CONFIG, dtype=dtype)
        text_encoder_2 = _clip(SDXL_CONFIG, "text_encoder_2", projection=True, dtype=dtype)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(SDXL_CONFIG / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(SDXL_CONFIG / "tokenizer_2"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(SDXL_CONFIG / "scheduler"),
    )


def parameter_count(pipe) -> dict[str, int]:
    """Parameters per network of a diffusers pipeline, and their total."""
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if hasattr(module, "parameters")
    }
    counts["total"] = sum(counts.values())
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the random-weight SD1.5 checkpoint.")
    parser.add_argument("--path", type=Path, default=None, help=f"default: {default_path()}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", action="store_true", help="load it back and compare")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = build_sd15_checkpoint(args.path, args.seed)
    result: dict[str, Any] = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "build_s": round(time.perf_counter() - start, 1),
    }
    if args.verify:
        result["verify"] = verify(path, seed=args.seed)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
