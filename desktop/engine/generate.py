"""The engine: turn a ``GenerationRequest`` into images, with a preview at every step.

Reads top to bottom like a diffusers pipeline call, because that is what it wraps:
1. resolve the model, 2. load it (cached), 3. fix the seed, 4. build the sampler,
5. prepare prompt and init image, 6. denoise with a per-step callback, 7. check the output.

The engine owns at most one loaded model. A second request on the same model loads nothing;
a request on another model releases the old one first, so memory returns.
"""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.engine.environment import apply_defaults

# Before torch and the Hub libraries load: offline, sleeping OpenMP workers (see environment).
# The imports below must come after it (E402 is expected for them).
apply_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from desktop.engine.errors import (  # noqa: E402
    Cancelled,
    GenerationError,
    ModelError,
    RequestError,
)
from desktop.engine.models import ModelInfo, find_model  # noqa: E402
from desktop.engine.previews import Previewer, previewer_for  # noqa: E402
from desktop.engine.progress import Progress, StepUpdate  # noqa: E402
from desktop.engine.request import GenerationRequest  # noqa: E402
from desktop.engine.samplers import SAMPLERS, make_scheduler  # noqa: E402

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")


def _quiet_libraries() -> None:
    """Library progress bars and chatter go to the terminal, not to the user; the engine
    reports progress and warnings (e.g. prompt truncation) itself."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for module in (diffusers_logging, transformers_logging):
        module.set_verbosity_error()
        module.disable_progress_bar()


_quiet_libraries()


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image and the single-image request that reproduces it."""

    image: Image.Image
    request: GenerationRequest


@dataclass
class GenerationResult:
    """What one ``Engine.generate`` call produced."""

    job_id: str
    request: GenerationRequest
    images: list[GeneratedImage]
    model: ModelInfo
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class _X0Recorder:
    """Keeps the scheduler's latest x0 prediction so previews show the predicted image.

    diffusers pipelines drop ``pred_original_sample`` and pass only x_t to the step callback,
    so the scheduler's ``step`` is wrapped. ``functools.wraps`` keeps the signature visible:
    pipelines inspect it to decide whether to pass ``generator`` and ``eta``.
    """

    def __init__(self, scheduler: Any, from_model_outputs: bool) -> None:
        self.x0: torch.Tensor | None = None
        self._scheduler = scheduler
        self._from_model_outputs = from_model_outputs
        original = scheduler.step

        @functools.wraps(original)
        def step(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
            output = original(*args, return_dict=True, **kwargs)
            self.x0 = getattr(output, "pred_original_sample", None)
            return output if return_dict else output.to_tuple()

        scheduler.step = step

    def latest(self) -> torch.Tensor | None:
        if self._from_model_outputs:
            outputs = getattr(self._scheduler, "model_outputs", None)
            if outputs and outputs[-1] is not None:
                return outputs[-1]
        return self.x0


class Engine:
    """Runs generation requests on one device, keeping the last model loaded.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        dtype: "auto", "fp16", "bf16" or "fp32" (auto: fp16 on GPUs, fp32 on CPU).
        model_folders: folders searched for models named in requests (default: ``scan()``'s).
        extra_sources: the user's extra model sources (``settings.extra_model_folders``:
            ComfyUI / AUTOMATIC1111 installs, ``extra_model_paths.yaml``); VAEs named in
            requests are looked up in their VAE folders too. None: read them from the
            settings file when a VAE is looked up.
    """

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "auto",
        model_folders: list[Path] | None = None,
        extra_sources: list[str] | None = None,
    ) -> None:
        from desktop.engine.devices import default_dtype, resolve_device

        self.device = resolve_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model_folders = model_folders
        self.extra_sources = extra_sources
        self.loads = 0
        self._loaded: Any = None
        self._loaded_key: tuple | None = None
        self._base_scheduler: dict[str, Any] = {}
        self._previewer: Previewer | None = None

    # -- model cache -------------------------------------------------------------------
    @property
    def loaded_model(self) -> ModelInfo | None:
        return None if self._loaded is None else self._loaded.info

    def resolve_model(self, name_or_path: str) -> ModelInfo:
        """The model a request names; raises ``ModelError`` if it cannot be used."""
        from desktop.engine.models import scan

        models = scan(self.model_folders) if self.model_folders is not None else None
        info = find_model(name_or_path, models)
        if not info.usable:
            raise ModelError(f"The model '{info.name}' cannot be used: {info.reason}.")
        return info

    def load(self, info: ModelInfo, vae: str = "", progress: Progress | None = None) -> Any:
        """Load ``info`` (and a VAE override) unless it is already the loaded model."""
        vae_path = self._resolve_vae(vae)
        key = (str(info.path.resolve()), str(vae_path or ""), info.prediction_type)
        if self._loaded is not None and self._loaded_key == key:
            return self._loaded
        self.unload()
        if progress is not None:
            progress.set_status(f"Loading model {info.name}…")
        from desktop.engine.loader import load_pipeline

        self._loaded = load_pipeline(info, self.device, self.dtype, vae_path=vae_path)
        self._loaded_key = key
        self._base_scheduler = dict(self._loaded.txt2img.scheduler.config)
        self._previewer = previewer_for(self._loaded.info, self.device)
        self.loads += 1
        return self._loaded

    def unload(self) -> None:
        """Release the loaded model and return its memory."""
        if self._loaded is None:
            return
        self._loaded = None
        self._loaded_key = None
        self._previewer = None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _resolve_vae(self, vae: str) -> Path | None:
        """The VAE file or folder ``vae`` names: a path, or a name (file name or stem) in
        the VAE folders of ``folders_for("vae", extra_sources)``."""
        if not vae:
            return None
        candidate = Path(vae).expanduser()
        if candidate.exists():
            return candidate
        from desktop.engine.model_folders import folders_for

        sources = self.extra_sources
        if sources is None:
            from desktop.engine.settings import load_settings

            sources = load_settings().extra_model_folders
        folders = folders_for("vae", sources)
        for folder in folders:
            for entry in sorted(folder.glob("*")) if folder.is_dir() else []:
                if vae in (entry.name, entry.stem) and (
                    entry.is_dir() or entry.suffix.lower() in VAE_SUFFIXES
                ):
                    return entry
        searched = ", ".join(str(folder) for folder in folders if folder.is_dir())
        raise ModelError(
            f"No VAE named {vae!r} was found in models/vae"
            + (f" (searched {searched})." if searched else ".")
        )

    # -- generation --------------------------------------------------------------------
    def generate(
        self, request: GenerationRequest, progress: Progress | None = None
    ) -> GenerationResult:
        """Run one request. Raises ``Cancelled`` or a ``SandstormError`` with a clear message."""
        progress = progress or Progress()
        started = time.perf_counter()
        check_supported(request)
        progress.check_cancelled()
        # 1. Resolve and load the model (a no-op when it is already loaded).
        info = self.resolve_model(request.model)
        loaded = self.load(info, request.vae, progress)
        progress.check_cancelled()
        # 2. A concrete seed, recorded in the result.
        request = request.resolved()
        warnings: list[str] = []
        pipe = loaded.img2img if request.is_img2img else loaded.txt2img
        # 3. The sampler, built fresh from the model's training schedule.
        pipe.scheduler = make_scheduler(request.sampler, request.schedule, self._base_scheduler)
        recorder = _X0Recorder(pipe.scheduler, SAMPLERS[request.sampler].x0_from_model_outputs)
        # 4. Prompt length and init image.
        for text in (request.prompt, request.negative_prompt):
            if warning := _truncation_warning(pipe.tokenizer, text):
                warnings.append(warning)
                progress.warn(warning)
        kwargs = self._pipeline_kwargs(request)
        # 5. Denoise, previewing every step.
        progress.set_status("Generating…")
        callback = self._step_callback(progress, recorder, started)
        try:
            with torch.inference_mode():
                output = pipe(**kwargs, callback_on_step_end=callback, output_type="np")
        except Cancelled:
            raise
        except torch.OutOfMemoryError as exc:
            self._after_oom()
            raise GenerationError(
                f"Out of memory at {request.width}×{request.height} with batch "
                f"{request.batch_size}. Try a smaller size or batch size."
            ) from exc
        # 6. Refuse silently broken output.
        images = _to_images(output.images)
        results = [GeneratedImage(img, request.for_image(i)) for i, img in enumerate(images)]
        return GenerationResult(
            progress.job_id, request, results, loaded.info, warnings, time.perf_counter() - started
        )

    def _pipeline_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        generators = [
            torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.batch_size)
        ]
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "num_images_per_prompt": request.batch_size,
            "generator": generators,
        }
        if request.init_image is not None:
            from desktop.engine.images import fit_to_size, load_image

            init = fit_to_size(load_image(request.init_image), request.width, request.height)
            kwargs.update(image=init, strength=request.strength)
        else:
            kwargs.update(width=request.width, height=request.height)
        return kwargs

    def _step_callback(self, progress: Progress, recorder: _X0Recorder, started: float) -> Any:
        previewer = self._previewer

        def on_step_end(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            progress.check_cancelled()
            preview = None
            if progress.previews and previewer is not None:
                x0 = recorder.latest()
                preview = previewer(x0 if x0 is not None else tensors["latents"])
            total = int(getattr(pipe, "num_timesteps", 0) or 0)
            elapsed = time.perf_counter() - started
            progress.set_progress(StepUpdate(progress.job_id, index + 1, total, elapsed, preview))
            return {}

        return on_step_end

    def _after_oom(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


#: The request's list parts this engine can run so far (each later feature adds its own).
SUPPORTED_PARTS: frozenset[str] = frozenset()


def check_supported(request: GenerationRequest) -> None:
    """Refuse, before any work, a request that uses a part this engine cannot run yet."""
    missing = [part for part in request.used_parts() if part not in SUPPORTED_PARTS]
    if missing:
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise RequestError(
            f"{names} {'is' if len(missing) == 1 else 'are'} not supported yet "
            "by this version of Sandstorm; remove "
            f"{'it' if len(missing) == 1 else 'them'} from the request to generate."
        )


def _truncation_warning(tokenizer: Any, text: str) -> str | None:
    """A warning when ``text`` exceeds the model's token limit (the rest is ignored)."""
    if not text or tokenizer is None:
        return None
    limit = int(getattr(tokenizer, "model_max_length", 77))
    if limit > 10_000:  # tokenizers without a real limit report a huge sentinel
        return None
    ids = tokenizer(text, truncation=False).input_ids
    if len(ids) <= limit:
        return None
    kept = tokenizer.decode(ids[1 : limit - 1])
    return (
        f"The prompt is {len(ids) - 2} tokens long; the model reads only {limit - 2}, "
        f"so everything after “…{kept[-40:]}” was ignored."
    )


def _to_images(array: np.ndarray) -> list[Image.Image]:
    """Convert the pipeline's float output to images, refusing NaN/inf output."""
    if not np.isfinite(array).all():
        raise GenerationError(
            "The model produced invalid values (NaN), which would save as a black image. "
            "Try another VAE, fp32 precision, or a different sampler."
        )
    pixels = (array.clip(0.0, 1.0) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(p, "RGB") for p in pixels]
