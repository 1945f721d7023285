"""The engine: turn a ``GenerationRequest`` into images, with a preview at every step.

Reads top to bottom like a diffusers pipeline call, because that is what it wraps:
1. resolve the model, 2. load it (cached) and fix the seed, 3. fuse the LoRAs and read the
embeddings, 4. build the sampler, 5. encode the prompts and prepare the init image,
6. denoise with a per-step callback, 7. check the output.

The engine owns at most one loaded model. A second request on the same model loads nothing;
a request on another model releases the old one first, so memory returns.
"""

from __future__ import annotations

import dataclasses
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

from desktop.engine.control import ControlHook, ControlLibrary  # noqa: E402
from desktop.engine.devices import (  # noqa: E402
    ComputeOptions,
    ComputePlan,
    dtype_name,
    torch_dtype,
)
from desktop.engine.embeddings import EmbeddingLibrary  # noqa: E402
from desktop.engine.errors import (  # noqa: E402
    Cancelled,
    GenerationError,
    ModelError,
    RequestError,
)
from desktop.engine.hires import HiresPlan, plan_hires, upscale_latents  # noqa: E402
from desktop.engine.inpaint import (  # noqa: E402
    InpaintPlan,
    LatentBlender,
    masked_init_latents,
    prepare_inpaint,
)
from desktop.engine.ip_adapter import ReferenceLibrary  # noqa: E402
from desktop.engine.lora import LoraState, LoraUse, lora_uses  # noqa: E402
from desktop.engine.models import ModelInfo, find_model  # noqa: E402
from desktop.engine.previews import Previewer, previewer_for  # noqa: E402
from desktop.engine.progress import Progress, StepUpdate  # noqa: E402
from desktop.engine.prompt_conditioning import Conditioning, steps_run  # noqa: E402
from desktop.engine.request import GenerationRequest  # noqa: E402
from desktop.engine.resources import Resources, hash_resources, used_loras  # noqa: E402
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
    #: The hashes of the LoRA and embedding files it was made with (for the infotext).
    resources: Resources | None = None


@dataclass
class GenerationResult:
    """What one ``Engine.generate`` call produced."""

    job_id: str
    request: GenerationRequest
    images: list[GeneratedImage]
    model: ModelInfo
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    timings: JobTimings | None = None


@dataclass
class JobTimings:
    """Where one job's time went, to measure what the engine adds to the pipeline's work.

    Attributes:
        total_s: the whole ``generate`` call.
        load_s: loading the model (0 when it was loaded already).
        pipeline_s: inside the diffusers pipeline call (denoising, callbacks included).
        callback_s: inside Sandstorm's step callback (previews, progress, cancel checks).
        decode_s: the VAE decode (the pipeline's own last step, done by the engine).
    """

    total_s: float = 0.0
    load_s: float = 0.0
    pipeline_s: float = 0.0
    callback_s: float = 0.0
    decode_s: float = 0.0

    @property
    def engine_s(self) -> float:
        """Sandstorm's own work: everything but loading and the pipeline's computation."""
        model_work = self.pipeline_s - self.callback_s + self.decode_s
        return max(0.0, self.total_s - self.load_s - model_work)

    @property
    def overhead_ratio(self) -> float:
        """(model work + engine work) / model work: 1.0 means the engine adds nothing."""
        model_work = self.pipeline_s - self.callback_s + self.decode_s
        return (model_work + self.engine_s) / model_work if model_work > 0 else 1.0


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
        dtype: "auto", "fp16", "bf16" or "fp32" for the UNet and text encoders (auto: see
            ``devices.plan_compute``); ``options`` wins when given.
        model_folders: folders searched for models named in requests (default: ``scan()``'s).
        options: precision, VAE precision, GPU memory mode and torch.compile (the
            settings); the plan made from them and the device is ``self.plan``.
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
        options: ComputeOptions | None = None,
    ) -> None:
        from desktop.engine.devices import plan_compute, probe, resolve_device

        self.device = resolve_device(device)
        self.options = options or ComputeOptions(precision=dtype)
        self.facts = probe(self.device)
        self.plan = plan_compute(self.facts, self.options)
        if self.plan.threads and torch.get_num_threads() != self.plan.threads:
            torch.set_num_threads(self.plan.threads)
        self.model_folders = model_folders
        self.extra_sources = extra_sources
        self.loads = 0
        self._loaded: Any = None
        self._loaded_key: tuple | None = None
        self._base_scheduler: dict[str, Any] = {}
        self._previewer: Previewer | None = None
        self._loaded_plan: ComputePlan = self.plan
        self._loras: LoraState | None = None
        self._embeddings = EmbeddingLibrary()
        self._controls = ControlLibrary()
        self._references = ReferenceLibrary()
        #: The last upscaler model used by a hires pass: (file, loaded model).
        self._upscaler: tuple[Path, Any] | None = None

    # -- model cache -------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The UNet's and text encoders' number format (for the default family)."""
        return torch_dtype(self.plan.dtype)

    def plan_for(self, family: str) -> ComputePlan:
        """The compute plan for a model family (GPU memory modes depend on the model size)."""
        from desktop.engine.devices import plan_compute

        return plan_compute(self.facts, self.options, family)

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

        plan = self.plan_for(info.family)
        loaded = load_pipeline(
            info,
            self.device,
            torch_dtype(plan.dtype),
            vae_path=vae_path,
            vae_dtype=torch_dtype(plan.vae_dtype),
            on_device=plan.memory_mode not in ("offload", "sequential"),
        )
        _apply_plan(loaded, plan)
        self._loaded = loaded
        self._loaded_plan = plan
        self._loaded_key = key
        self._base_scheduler = dict(self._loaded.txt2img.scheduler.config)
        self._previewer = previewer_for(self._loaded.info, self.device)
        self._loras = LoraState(loaded.txt2img, loaded.info.family, loaded.info.name)
        self.loads += 1
        return self._loaded

    def unload(self) -> None:
        """Release the loaded model and return its memory."""
        if self._loaded is None:
            return
        self._references.remove()  # drops the image encoder with the model
        self._loaded = None
        self._loaded_key = None
        self._previewer = None
        self._loras = None
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

        folders = folders_for("vae", self.sources())
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

    def sources(self) -> list[Any]:
        """The user's extra model sources (from the settings file unless given)."""
        if self.extra_sources is not None:
            return list(self.extra_sources)
        from desktop.engine.settings import load_settings

        return list(load_settings().extra_model_folders)

    @property
    def lora_state(self) -> LoraState | None:
        """The LoRAs fused into the loaded model (None when no model is loaded)."""
        return self._loras

    def _apply_loras(
        self, request: GenerationRequest, warnings: list[str], progress: Progress
    ) -> list[LoraUse]:
        """Fuse exactly the request's LoRAs into the loaded model (none: the base model);
        returns the LoRAs applied."""
        state = self._loras
        if state is None:
            return []
        wanted = used_loras(request)
        if not wanted and not state.applied:
            return []
        uses = lora_uses(wanted, self.sources())
        if uses:
            names = ", ".join(use.name for use in uses)
            progress.set_status(f"Applying LoRA {names}…")
        for warning in state.apply(uses):
            warnings.append(warning)
            progress.warn(warning)
        return uses

    # -- generation --------------------------------------------------------------------
    def generate(
        self, request: GenerationRequest, progress: Progress | None = None
    ) -> GenerationResult:
        """Run one request. Raises ``Cancelled`` or a ``SandstormError`` with a clear message."""
        progress = progress or Progress()
        started = time.perf_counter()
        timings = JobTimings()
        check_supported(request)
        hires = plan_hires(request)
        progress.check_cancelled()
        # 1. Resolve and load the model (a no-op when it is already loaded).
        info = self.resolve_model(request.model)
        loads = self.loads
        loaded = self.load(info, request.vae, progress)
        if self.loads != loads:
            timings.load_s = time.perf_counter() - started
        progress.check_cancelled()
        # 2. A concrete seed, recorded in the result; a size that cannot fit is refused.
        request = request.resolved()
        self._check_memory(request, hires, loaded)
        warnings: list[str] = []
        # 3. LoRAs fused into the weights, and the embeddings the prompts trigger: a file
        # that cannot be used stops the job here, before any sampling.
        uses = self._apply_loras(request, warnings, progress)
        embeddings = self._embeddings.for_prompts(
            [request.prompt, request.negative_prompt or ""], self.sources()
        )
        embeddings.check_widths(_text_widths(loaded.txt2img), info.family)
        resources = hash_resources(
            [(use.name, use.path) for use in uses],
            [(item.name, item.path) for item in embeddings.items.values()],
        )
        # A 9-channel inpainting model's own pipeline runs every job, masked or not.
        inpaint_model = loaded.info.is_inpaint
        pipe = loaded.img2img if request.is_img2img and not inpaint_model else loaded.txt2img
        # 4. The sampler, built fresh from the model's training schedule.
        pipe.scheduler = make_scheduler(request.sampler, request.schedule, self._base_scheduler)
        recorder = _X0Recorder(pipe.scheduler, SAMPLERS[request.sampler].x0_from_model_outputs)
        # 5. The prompts (A1111 weights, any length, scheduled edits) and the init image.
        _set_vae_tiling(pipe.vae, self._tiled(request.width, request.height))
        inpaint = None
        if (request.mask or request.expand) and request.init_image is not None:
            inpaint = prepare_inpaint(
                request.mask, request.init_image, request.width, request.height, request.expand
            )
            for note in inpaint.notes:
                warnings.append(note)
                progress.warn(note)
        kwargs, blender = self._pipeline_kwargs(request, loaded, inpaint)
        control = self._control_hook(request, loaded, inpaint, warnings, progress)
        if control.units:
            # The results record the ControlNet each layer used (the suggested one by name).
            named = tuple(dataclasses.replace(p.unit, model=p.name) for p in control.units)
            request = dataclasses.replace(request, controls=named)
        # Reference images: IP-Adapters on the shared UNet (taken out again when none).
        if request.references:
            progress.set_status("Preparing reference images…")
        sources = self.sources() if request.references else []
        references = self._references.prepare(request.references, loaded, sources)
        kwargs.update(references.pipeline_kwargs)
        if request.references:
            # The results record the adapter each reference used (the suggested one by name).
            request = dataclasses.replace(request, references=references.references)
        with torch.inference_mode():
            conditioning = Conditioning.build(pipe, request, embeddings)
        for warning in conditioning.warnings:
            warnings.append(warning)
            progress.warn(warning)
        kwargs.update(conditioning.pipeline_kwargs())
        # 6. Denoise, previewing every step; the engine decodes the latents itself so the
        # VAE can run in its own number format and be retried in fp32.
        progress.set_status("Generating…")
        callback = self._step_callback(
            progress,
            recorder,
            started,
            timings,
            conditioning,
            blender,
            inpaint,
            control,
            after=hires.steps if hires else 0,
        )
        try:
            with torch.inference_mode(), control.installed(pipe.unet):
                begun = time.perf_counter()
                output = pipe(**kwargs, callback_on_step_end=callback, output_type="latent")
                timings.pipeline_s = time.perf_counter() - begun
            progress.check_cancelled()
            latents = output.images
            upscaled: list[Image.Image] | None = None
            if hires is not None:
                # 6b. Hires fix: upscale, then img2img at the larger size.
                latents, upscaled = self._hires_pass(
                    request, hires, loaded, latents, embeddings, references.pipeline_kwargs,
                    warnings, progress, started, timings,
                    int(getattr(pipe, "num_timesteps", 0) or steps_run(request)),
                )  # fmt: skip
                _set_vae_tiling(pipe.vae, self._tiled(hires.width, hires.height))
            if upscaled is None:
                begun = time.perf_counter()
                with torch.inference_mode():
                    array = self._decode(loaded, latents, warnings, progress)
                timings.decode_s += time.perf_counter() - begun
        except Cancelled:
            raise
        except torch.OutOfMemoryError as exc:
            self._after_oom()
            width, height = request.width, request.height
            if hires is not None:
                width, height = hires.width, hires.height
            raise GenerationError(
                f"Out of memory at {width}×{height} with batch "
                f"{request.batch_size}. Try a smaller size or batch size"
                + (", or a lower-memory mode in the settings." if self.device != "cpu" else ".")
            ) from exc
        # 7. Refuse silently broken output.
        images = upscaled if upscaled is not None else _to_images(array)
        if inpaint is not None:
            # Outside the mask and its feather, exactly the input's pixels.
            images = [inpaint.composite(image) for image in images]
        results = [
            GeneratedImage(img, request.for_image(i), resources) for i, img in enumerate(images)
        ]
        timings.total_s = time.perf_counter() - started
        return GenerationResult(
            progress.job_id,
            request,
            results,
            loaded.info,
            warnings,
            timings.total_s,
            timings,
        )

    def _check_memory(
        self, request: GenerationRequest, hires: HiresPlan | None, loaded: Any
    ) -> None:
        """Refuse, with what fits, a job whose working memory exceeds what is free now
        (on the CPU it would not fail cleanly: the system would kill the app)."""
        from desktop.engine import memory

        free = memory.available(str(self.device))
        if free is None:
            return
        budget = int(free * memory.USABLE_SHARE)
        fits = memory.FitsAt(
            request.batch_size,
            loaded.info.family,
            loaded.dtype.itemsize,
            getattr(loaded, "vae_dtype", torch.float32).itemsize,
            self._loaded_plan.tiled_vae_pixels,
        )
        batch = f" with batch {request.batch_size}" if request.batch_size > 1 else ""
        need = fits(request.width, request.height)
        if need > budget:
            raise GenerationError(
                f"{request.width}×{request.height}{batch} needs about {memory.gib(need)} of "
                f"working memory and {memory.gib(free)} is free. Use a smaller size or batch "
                "size, or close other programs."
            )
        if hires is None or request.hires is None:
            return
        need = fits(hires.width, hires.height)
        if need > budget:
            best = memory.largest_scale(
                request.width, request.height, budget, fits, start=request.hires.scale
            )
            advice = (
                f"a hires upscale of ×{best:g} fits"
                if best is not None and best > 1
                else "use a smaller base size or batch size"
            )
            raise GenerationError(
                f"Hires fix ×{request.hires.scale:g} makes {hires.width}×{hires.height}{batch}, "
                f"which needs about {memory.gib(need)} of working memory; "
                f"{memory.gib(free)} is free: {advice}."
            )

    def _tiled(self, width: int, height: int) -> bool:
        """Whether the VAE works in tiles at this size (memory)."""
        return width * height >= self._loaded_plan.tiled_vae_pixels

    def _hires_pass(
        self,
        request: GenerationRequest,
        plan: HiresPlan,
        loaded: Any,
        latents: torch.Tensor,
        embeddings: Any,
        reference_kwargs: dict[str, Any],
        warnings: list[str],
        progress: Progress,
        started: float,
        timings: JobTimings,
        done_steps: int,
    ) -> tuple[torch.Tensor, list[Image.Image] | None]:
        """The hires fix's upscale and second pass on the first pass's latents.

        Returns the final latents, or (denoise 0 with a pixel upscaler) the upscaled
        images themselves, which need no decode.
        """
        pipe = loaded.img2img
        generators = [
            torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.batch_size)
        ]
        if plan.latent:
            progress.set_status("Hires fix: upscaling the latents…")
            start = upscale_latents(latents, plan.width, plan.height)
        else:
            begun = time.perf_counter()
            with torch.inference_mode():
                array = self._decode(loaded, latents, warnings, progress)
            timings.decode_s += time.perf_counter() - begun
            images = [self._upscale(image, plan, progress) for image in _to_images(array)]
            if plan.steps == 0:
                return latents, images
            progress.set_status("Hires fix: encoding the upscaled image…")
            _set_vae_tiling(pipe.vae, self._tiled(plan.width, plan.height))
            with torch.inference_mode():
                start = torch.cat(
                    [
                        _vae_encode(pipe, image, [generator], loaded.dtype)
                        for image, generator in zip(images, generators, strict=True)
                    ]
                )
        if plan.steps == 0:
            return start, None
        progress.check_cancelled()
        # The second pass: the same prompts and settings at the larger size, its own steps
        # (prompt editing counts them); control images are resized to the new size.
        second = dataclasses.replace(
            request, width=plan.width, height=plan.height, steps=plan.steps, hires=None
        )
        pipe.scheduler = make_scheduler(request.sampler, request.schedule, self._base_scheduler)
        recorder = _X0Recorder(pipe.scheduler, SAMPLERS[request.sampler].x0_from_model_outputs)
        control = self._control_hook(second, loaded, None, [], progress)
        with torch.inference_mode():
            conditioning = Conditioning.build(pipe, second, embeddings)
        kwargs: dict[str, Any] = {
            "image": start.to(loaded.dtype),
            "strength": plan.denoise,
            "num_inference_steps": plan.scheduler_steps,
            "guidance_scale": request.cfg_scale,
            "num_images_per_prompt": request.batch_size,
            "generator": generators,
            **reference_kwargs,
            **conditioning.pipeline_kwargs(),
        }
        callback = self._step_callback(
            progress,
            recorder,
            started,
            timings,
            conditioning,
            control=control,
            offset=done_steps,
        )
        progress.set_status(f"Hires fix: {plan.steps} steps at {plan.width}×{plan.height}…")
        with torch.inference_mode(), control.installed(pipe.unet):
            begun = time.perf_counter()
            output = pipe(**kwargs, callback_on_step_end=callback, output_type="latent")
            timings.pipeline_s += time.perf_counter() - begun
        progress.check_cancelled()
        return output.images, None

    def _upscale(self, image: Image.Image, plan: HiresPlan, progress: Progress) -> Image.Image:
        """One decoded image at the hires size, by Lanczos or an upscaler model."""
        from desktop.engine import upscalers

        size = (plan.width, plan.height)
        if plan.upscaler == upscalers.LANCZOS:
            progress.set_status("Hires fix: upscaling (Lanczos)…")
            return image.resize(size, Image.Resampling.LANCZOS)
        info = upscalers.find_upscaler(plan.upscaler, self.sources())
        assert info.path is not None
        if self._upscaler is None or self._upscaler[0] != info.path:
            self._upscaler = None
            progress.set_status(f"Loading upscaler {info.name}…")
            self._upscaler = (info.path, upscalers.load_upscaler(info, self.device))
        model = self._upscaler[1]

        def tiles(done: int, total: int) -> None:
            progress.set_status(f"Hires fix: upscaling with {info.name} (tile {done}/{total})…")

        progress.set_status(f"Hires fix: upscaling with {info.name}…")
        result = model.upscale(
            image, plan.width / image.width, cancel=progress.cancel_event, progress=tiles
        )
        return result if result.size == size else result.resize(size, Image.Resampling.LANCZOS)

    def _control_hook(
        self,
        request: GenerationRequest,
        loaded: Any,
        inpaint: InpaintPlan | None,
        warnings: list[str],
        progress: Progress,
    ) -> ControlHook:
        """The request's control layers, loaded and ready to run beside the UNet."""
        if not request.controls:
            return ControlHook([], request.denoising_steps)
        progress.set_status("Preparing control layers…")
        size = inpaint.work_image.size if inpaint is not None else (request.width, request.height)
        unet = loaded.txt2img.unet
        notes: list[str] = []
        units = self._controls.prepare(
            request.controls,
            loaded.info.family,
            size,
            unet.dtype,
            str(loaded.device),
            self.sources(),
            inpaint,
            notes,
            int(unet.config.cross_attention_dim),
        )
        for note in notes:
            warnings.append(note)
            progress.warn(note)
        return ControlHook(units, request.denoising_steps)

    def _decode(
        self, loaded: Any, latents: torch.Tensor, warnings: list[str], progress: Progress
    ) -> np.ndarray:
        """Latents to float RGB in [0, 1], as the pipeline would; NaN in a half-precision
        VAE (the black-image problem) switches the VAE to fp32 for good and decodes again."""
        pipe = loaded.txt2img
        array = _vae_decode(pipe, latents)
        if not np.isfinite(array).all() and pipe.vae.dtype != torch.float32:
            if not torch.isfinite(latents).all():
                return array  # the UNet's output is broken; a VAE in fp32 cannot help
            name = dtype_name(pipe.vae.dtype)
            pipe.vae.to(torch.float32)
            loaded.vae_dtype = torch.float32
            warning = (
                f"The VAE gave invalid values (NaN) in {name}, which would be a black image; "
                "it now runs in fp32 for this model, and this image was decoded again."
            )
            warnings.append(warning)
            progress.warn(warning)
            array = _vae_decode(pipe, latents)
        return array

    def _pipeline_kwargs(
        self, request: GenerationRequest, loaded: Any, inpaint: InpaintPlan | None = None
    ) -> tuple[dict[str, Any], LatentBlender | None]:
        """The pipeline's arguments, and for inpainting the per-step latent blender."""
        generators = [
            torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.batch_size)
        ]
        kwargs: dict[str, Any] = {
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "num_images_per_prompt": request.batch_size,
            "generator": generators,
        }
        if inpaint is not None:
            # Encoded here (not by the pipeline): the blender needs the init latents, and
            # the latent masked-content modes change them before the noise is added.
            with torch.inference_mode():
                latents = _vae_encode(loaded.img2img, inpaint.work_image, generators, loaded.dtype)
                mask = inpaint.latent_mask((latents.shape[-1], latents.shape[-2]))
                noise = torch.randn(
                    latents.shape,
                    generator=torch.Generator("cpu").manual_seed(request.seed + 7919),
                    dtype=torch.float32,
                ).to(latents.device, latents.dtype)
                start = masked_init_latents(inpaint, latents, generators[0])
            kwargs.update(image=start, strength=request.strength)
            if loaded.info.is_inpaint:
                kwargs.update(
                    self._inpaint_model_inputs(
                        loaded, inpaint.work_image, inpaint.work_mask, generators
                    )
                )
            return kwargs, LatentBlender(latents, mask, noise)
        if loaded.info.is_inpaint:
            # A 9-channel model without a mask: the whole picture is "masked" (A1111's way),
            # from the init image, or from plain grey at full strength for text to image.
            from desktop.engine.images import fit_to_size, load_image

            size = (request.width, request.height)
            if request.init_image is not None:
                picture = fit_to_size(load_image(request.init_image), *size)
                strength = request.strength
            else:
                picture, strength = Image.new("RGB", size, (128, 128, 128)), 1.0
            with torch.inference_mode():
                latents = _vae_encode(loaded.txt2img, picture, generators, loaded.dtype)
                kwargs.update(image=latents, strength=strength)
                kwargs.update(
                    self._inpaint_model_inputs(
                        loaded, picture, Image.new("L", size, 255), generators
                    )
                )
            return kwargs, None
        if request.init_image is not None:
            from desktop.engine.images import fit_to_size, load_image

            init = fit_to_size(load_image(request.init_image), request.width, request.height)
            image: Any = init
            if loaded.vae_dtype != loaded.dtype:
                # The pipeline would feed the image to the VAE in the UNet's format.
                image = _vae_encode(loaded.img2img, init, generators, loaded.dtype)
            kwargs.update(image=image, strength=request.strength)
        else:
            kwargs.update(width=request.width, height=request.height)
        return kwargs, None

    def _inpaint_model_inputs(
        self,
        loaded: Any,
        image: Image.Image,
        mask: Image.Image,
        generators: list[torch.Generator],
    ) -> dict[str, Any]:
        """The extra inputs of a 9-channel model: its mask and the masked image's latents,
        encoded here so the VAE gets its own number format (the pipeline would feed it the
        UNet's)."""
        pipe = loaded.txt2img
        vae = pipe.vae
        pixels = pipe.image_processor.preprocess(image).to(vae.device, vae.dtype)
        keep = torch.from_numpy(np.asarray(mask, dtype=np.float32) < 127.5)
        masked = pixels * keep.to(vae.device, vae.dtype)[None, None]
        latents = []
        with torch.inference_mode():
            for generator in generators:
                dist = vae.encode(masked).latent_dist
                latents.append(dist.sample(generator) * vae.config.scaling_factor)
        return {
            "mask_image": mask,
            "masked_image_latents": torch.cat(latents).to(loaded.dtype),
            "height": image.height,
            "width": image.width,
        }

    def _step_callback(
        self,
        progress: Progress,
        recorder: _X0Recorder,
        started: float,
        timings: JobTimings,
        conditioning: Conditioning,
        blender: LatentBlender | None = None,
        inpaint: InpaintPlan | None = None,
        control: ControlHook | None = None,
        offset: int = 0,
        after: int = 0,
    ) -> Any:
        """The pipeline's step callback. ``offset`` and ``after``: the job's steps before
        and after this pass (a hires fix counts both passes as one job)."""
        previewer = self._previewer

        def on_step_end(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            entered = time.perf_counter()
            try:
                return report(pipe, index, tensors)
            finally:
                timings.callback_s += time.perf_counter() - entered

        def report(pipe: Any, index: int, tensors: dict) -> dict:
            progress.check_cancelled()
            preview = None
            if progress.previews and previewer is not None:
                x0 = recorder.latest()
                preview = previewer(x0 if x0 is not None else tensors["latents"])
                if inpaint is not None:
                    preview = inpaint.preview(preview)  # the repaint growing in place
            steps = offset + int(getattr(pipe, "num_timesteps", 0) or 0) + after
            elapsed = time.perf_counter() - started
            update = StepUpdate(progress.job_id, offset + index + 1, steps, elapsed, preview)
            progress.set_progress(update)
            # Prompt editing and alternation: the next step's embeddings, when they change.
            changes = conditioning.switch(pipe, index + 1)
            if control is not None:
                control.set_step(index + 1)  # control layers outside their range stop
            if blender is not None:
                # Soft per-step masking: outside the mask, the init image at this noise level.
                changes["latents"] = blender.blend(pipe.scheduler, tensors["latents"])
            return changes

        return on_step_end

    def _after_oom(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


#: The request's list parts this engine can run so far (each later feature adds its own).
SUPPORTED_PARTS: frozenset[str] = frozenset(
    {"LoRAs", "Mask", "Outpaint", "Control layers", "Reference images", "Hires fix"}
)


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


def _text_widths(pipe: Any) -> dict[str, int]:
    """The hidden width of each text encoder (what an embedding's vectors must match)."""
    widths = {}
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None:
            widths[name] = int(encoder.get_input_embeddings().weight.shape[-1])
    return widths


def _apply_plan(loaded: Any, plan: ComputePlan) -> None:
    """Put a just-loaded model in the plan's memory mode and, if asked, compile its UNet."""
    pipe = loaded.txt2img
    mode = plan.memory_mode
    if mode in ("tiling", "offload", "sequential"):
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
    if mode == "offload":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    if plan.compile:
        from desktop.engine.compiling import compile_unet

        compile_unet(pipe.unet)


def _set_vae_tiling(vae: Any, on: bool) -> None:
    """Tile the VAE for large images (memory); a low-memory mode keeps it tiled always."""
    if getattr(vae, "_sandstorm_always_tiled", None) is None:
        vae._sandstorm_always_tiled = bool(getattr(vae, "use_tiling", False))
    vae.use_tiling = on or vae._sandstorm_always_tiled


def _vae_decode(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """What the pipeline's last step does, in the VAE's own number format."""
    vae = pipe.vae
    scaled = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        scaled = scaled + shift
    image = vae.decode(scaled, return_dict=False)[0]
    return pipe.image_processor.postprocess(image.float(), output_type="np")


def _vae_encode(
    pipe: Any, image: Image.Image, generators: list[torch.Generator], dtype: torch.dtype
) -> torch.Tensor:
    """Init-image latents for img2img, encoded in the VAE's format and scaled, one sample
    per image of the batch from that image's generator (what the pipeline would do)."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(image).to(vae.device, vae.dtype)
    latents = []
    for generator in generators:
        dist = vae.encode(pixels).latent_dist
        latents.append(dist.sample(generator) * vae.config.scaling_factor)
    return torch.cat(latents).to(dtype)


def _to_images(array: np.ndarray) -> list[Image.Image]:
    """Convert the pipeline's float output to images, refusing NaN/inf output."""
    if not np.isfinite(array).all():
        raise GenerationError(
            "The model produced invalid values (NaN), which would save as a black image. "
            "Try another VAE, fp32 precision, or a different sampler."
        )
    pixels = (array.clip(0.0, 1.0) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(p, "RGB") for p in pixels]
