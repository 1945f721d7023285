"""Engine benchmarks: overhead vs bare diffusers, preview cost, second job, memory.

All numbers are ratios or medians measured side by side in one run; nothing here is
asserted anywhere, because machines are noisy.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

from desktop.engine.environment import apply_defaults

apply_defaults()


def bench_model() -> tuple[str, int]:
    """The built-in model when present (what users run first), else a tiny test model."""
    from desktop.engine import paths

    if (paths.BUILTIN_MODEL / "model_index.json").is_file():
        from desktop.engine.models import inspect_folder

        return str(paths.BUILTIN_MODEL), inspect_folder(paths.BUILTIN_MODEL).native_size
    from tests.helpers.tiny_models import build_tiny_sd

    folder = Path(tempfile.mkdtemp(prefix="sandstorm-bench-")) / "tiny-sd"
    build_tiny_sd(folder)
    return str(folder), 64


def _request(model: str, size: int, steps: int = 20, seed: int = 1):
    from desktop.engine.request import GenerationRequest

    return GenerationRequest(
        prompt="a big red circle on the left, blue background",
        model=model,
        sampler="Euler",
        steps=steps,
        cfg_scale=5.0,
        seed=seed,
        width=size,
        height=size,
    )


def engine_overhead(model: str, size: int, rounds: int = 7) -> dict:
    """What the engine adds to the pipeline's work: measured inside each job from its
    ``JobTimings`` (the stable figure), and as A/B pairs of whole jobs against a bare
    diffusers call on the same loaded pipeline (noisier: machines drift between jobs)."""
    import torch

    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress
    from desktop.engine.samplers import make_scheduler

    engine = Engine(device="cpu")
    request = _request(model, size)
    engine.generate(request)  # load + warm up
    pipe = engine._loaded.txt2img
    base = engine._base_scheduler

    def bare() -> None:
        pipe.scheduler = make_scheduler("Euler", "Automatic", base)
        with torch.inference_mode():
            pipe(
                prompt=request.prompt,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                width=size,
                height=size,
                generator=[torch.Generator("cpu").manual_seed(request.seed)],
                output_type="np",
            )

    in_job: list[float] = []

    def ours(previews: bool) -> None:
        result = engine.generate(request, Progress(previews=previews))
        if previews and result.timings is not None:
            in_job.append(result.timings.overhead_ratio)

    # Rotate the order every round so warm-up and drift do not favour one variant.
    variants = {"bare": bare, "previews": lambda: ours(True), "no_previews": lambda: ours(False)}
    names = list(variants)
    ratios, preview_ratios = [], []
    for round_index in range(rounds):
        order = names[round_index % 3 :] + names[: round_index % 3]
        times = {name: _timed(variants[name]) for name in order}
        ratios.append(times["previews"] / times["bare"])
        preview_ratios.append(times["previews"] / times["no_previews"])
    step_ms = statistics.median([_timed(lambda: ours(False)) for _ in range(3)]) / request.steps
    # The preview's own cost, timed directly (the A/B ratio above is within run-to-run noise).
    latents = torch.randn(1, pipe.unet.config.in_channels, size // 8, size // 8)
    previewer = engine._previewer
    preview_s = _timed(lambda: [previewer(latents) for _ in range(200)]) / 200
    return {
        # Inside each job: (model work + engine work) / model work, from the job's own
        # timings. One job's split is not disturbed by the machine's drift between jobs,
        # unlike the A/B ratio of whole jobs below it.
        "engine_overhead_ratio": statistics.median(in_job),
        "engine_overhead_ratio_min": min(in_job),
        "engine_overhead_ratio_max": max(in_job),
        "engine_overhead_ab_ratio": statistics.median(ratios),
        "preview_cost_ratio": statistics.median(preview_ratios),
        "preview_ms_per_step": preview_s * 1000,
        "preview_share_of_step": preview_s / step_ms,
        "step_ms": step_ms * 1000,
    }


def second_job(model: str, size: int) -> dict:
    """Time from a second request to its first preview, and how many loads it caused."""
    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress

    engine = Engine(device="cpu")
    engine.generate(_request(model, size, steps=4))
    loads_before = engine.loads
    first: list[float] = []

    class FirstPreview(Progress):
        def set_progress(self, update):
            if not first:
                first.append(time.perf_counter())

    start = time.perf_counter()
    engine.generate(_request(model, size, seed=2), FirstPreview())
    return {
        "second_job_loads": engine.loads - loads_before,
        "second_job_first_preview_seconds": first[0] - start,
    }


def memory(model: str, size: int, generations: int = 100) -> dict:
    """RSS growth over many generations, and after switching models twice."""
    from desktop.engine.generate import Engine

    engine = Engine(device="cpu")
    for i in range(5):
        engine.generate(_request(model, size, steps=4, seed=i))
    gc.collect()
    start = _rss()
    for i in range(generations):
        engine.generate(_request(model, size, steps=4, seed=i))
    gc.collect()
    end = _rss()
    result = {
        "rss_growth_percent": (end - start) / start * 100,
        "rss_mb": end / 2**20,
        "generations": generations,
    }
    from tests.helpers.tiny_models import build_tiny_sd

    other = Path(tempfile.mkdtemp(prefix="sandstorm-bench-")) / "other"
    build_tiny_sd(other, seed=3)
    engine.generate(_request(str(other), 64, steps=2))
    engine.generate(_request(model, size, steps=2))
    gc.collect()
    result["rss_after_switch_twice_percent"] = (_rss() - end) / end * 100
    return result


def discovery(files: int = 100) -> dict:
    """Model discovery over ``files`` checkpoints: headers only, so it stays in milliseconds."""
    import torch
    from safetensors.torch import save_file

    from desktop.engine.models import scan

    folder = Path(tempfile.mkdtemp(prefix="sandstorm-scan-"))
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(
            4096, 768
        ),
    }
    for i in range(files):
        save_file(tensors, str(folder / f"model-{i:03d}.safetensors"))
    start = time.perf_counter()
    found = scan([folder], include_builtin=False)
    elapsed = time.perf_counter() - start
    assert len(found) == files
    return {"scan_100_files_ms": elapsed * 1000 * 100 / files}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
