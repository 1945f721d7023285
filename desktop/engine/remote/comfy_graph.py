"""A ``GenerationRequest`` as a graph of stock ComfyUI nodes (API format), no custom nodes.

``unsupported(request, models)`` says, before anything is sent, what a server cannot run
(one sentence per problem); ``build_graph`` turns a request it can run into the graph that
``POST /prompt`` takes, calling ``upload(filename, png_bytes)`` for every image the graph
needs. Every setting of a request is either translated or refused with a reason: nothing is
dropped silently (``HANDLING`` lists each field, and a test keeps that list complete).

The graph, for each image ``i`` of the batch::

    CheckpointLoaderSimple ─ [VAELoader] ─ [CLIPSetLastLayer] ─ LoraLoader × n
      CLIPTextEncode (+ ConditioningConcat per BREAK chunk), positive and negative
      ControlNetLoader + ControlNetApplyAdvanced per control layer
      EmptyLatentImage | LoadImage → VAEEncode [→ SetLatentNoiseMask]
      KSampler(seed + i) [→ hires: LatentUpscale / ImageScale / upscale model → KSampler]
      VAEDecode [→ ImageScale → ImageCompositeMasked onto the init image]
    ImageBatch of all images → PreviewImage (a fresh node id per job)

Decisions, and why:

* **One sampler per image, seed + i.** Sandstorm records image ``i`` of a batch as the
  request with ``seed + i`` and batch 1 (``GenerationRequest.for_image``). ComfyUI draws one
  noise tensor for a whole batch from one seed, so a batched latent would make image 1 of a
  batch unrepeatable. Each image gets its own ``KSampler`` (the encoded init image and the
  conditioning are shared nodes, computed once), and ``ImageBatch`` joins the results.
* **Steps for img2img.** Sandstorm (like diffusers and AUTOMATIC1111) runs
  ``int(steps × strength)`` steps of a ``steps``-step schedule; ComfyUI's ``KSampler`` runs
  ``steps`` steps of an ``int(steps / denoise)``-step schedule. The graph asks for
  ``request.img2img_steps`` steps at ``denoise = strength``, so both run the same steps
  over about the same noise levels (and the server's progress counts what Sandstorm's does).
* **Inpainting and outpainting** reuse ``desktop.engine.inpaint.prepare_inpaint``: the
  mask blur, "only masked" crop and padding, the "fill" pre-fill and the grown canvas are
  made here, and the work image, its soft mask and the composite mask are uploaded. The
  graph uses ``SetLatentNoiseMask`` (not ``VAEEncodeForInpaint``): it keeps the init
  image's content under the mask, works at any denoise and blends through a soft mask at
  every step, which is what Sandstorm's own inpainting does; ``VAEEncodeForInpaint`` greys
  the masked pixels and is meant for denoise 1 with inpainting checkpoints. The decoded
  result is scaled to the crop and pasted onto the whole init image through the feathered
  mask (``ImageCompositeMasked``), so pixels outside it are the input's, as locally.
  "latent nothing" zeroes the latents under the mask (``LatentCompositeMasked`` with an
  empty latent); "latent noise" has no stock node and is refused.
* **Control images are preprocessed here** (``control_images.preprocess``) and the result
  is uploaded, although stock ComfyUI has a ``Canny`` node: one preprocessor for local and
  remote jobs gives the same control image either way, and scribble, lineart and tile have
  no stock node at all. The inpaint control type needs -1 values a PNG cannot carry
  (stock ComfyUI has no inpaint preprocessor), so it is refused.
* **Prompts** are read with Sandstorm's A1111 grammar and written back in the syntax
  ComfyUI's ``CLIPTextEncode`` reads: every run of text with its absolute weight as
  ``(text:1.21)`` (ComfyUI reads ``[a]`` as text, and nested weights do not multiply
  there), literal brackets escaped. ``BREAK`` chunks are encoded separately and joined with
  ``ConditioningConcat``. Prompt editing and alternation change the prompt during sampling,
  which stock nodes cannot, so they are refused. When the server's embeddings are known (an
  ``embeddings`` attribute on the models object) a word naming one becomes
  ``embedding:name``, as ComfyUI triggers them.
* **Clip skip 1** adds no node (the model's default; for SDXL ComfyUI's default is not its
  last layer, so ``CLIPSetLastLayer(-1)`` would change it); clip skip N adds
  ``CLIPSetLastLayer(-N)``.
* **Schedules.** "Automatic" is ComfyUI's ``normal``, except DDIM (``ddim_uniform``, its own
  spacing) and LCM (``sgm_uniform``, what ComfyUI's LCM examples use).
* **Output.** ``PreviewImage`` (stock in every version; outputs go to the server's temp
  folder and are fetched with ``/view``). Its node id is new for every job: ComfyUI caches
  an identical graph and would report the old output without running anything.

No Qt and no torch here: plain image work with PIL and numpy.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from desktop.engine.control_images import fit_control, preprocess
from desktop.engine.controlnet import control_type_of
from desktop.engine.errors import RequestError
from desktop.engine.images import fit_to_size, load_image
from desktop.engine.inpaint import MASK_THRESHOLD, InpaintPlan, prepare_inpaint
from desktop.engine.parts import ControlUnit, HiresSpec
from desktop.engine.prompt_syntax import Piece, parse_prompt
from desktop.engine.request import GenerationRequest
from desktop.engine.resources import LORA_KINDS, used_loras

#: Sandstorm sampler → ComfyUI ``sampler_name``. Samplers missing here have none there
#: (see ``UNAVAILABLE_SAMPLERS``).
SAMPLER_NAMES: dict[str, str] = {
    "Euler": "euler",
    "Euler a": "euler_ancestral",
    "Heun": "heun",
    "DPM2": "dpm_2",
    "DPM2 a": "dpm_2_ancestral",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ SDE": "dpmpp_sde",
    "DDIM": "ddim",
    "UniPC": "uni_pc",
    "LMS": "lms",
    "LCM": "lcm",
}
#: Sandstorm samplers ComfyUI has no equivalent of.
UNAVAILABLE_SAMPLERS: frozenset[str] = frozenset({"PLMS"})
#: Sandstorm schedule → ComfyUI ``scheduler``.
SCHEDULE_NAMES: dict[str, str] = {
    "Automatic": "normal",
    "Karras": "karras",
    "Exponential": "exponential",
}
#: The scheduler "Automatic" means for samplers with their own spacing.
AUTOMATIC_SCHEDULERS: dict[str, str] = {"DDIM": "ddim_uniform", "LCM": "sgm_uniform"}
#: A1111's "Latent" hires upscaler is a bilinear resize of the latents.
LATENT_UPSCALE_METHOD = "bilinear"
#: File suffixes dropped when names are compared by stem.
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")

#: How every field of a request (and of its parts) reaches the server: "translated: …",
#: "refused: …" or "ignored: …", each with how or why. A test fails when a field is missing.
HANDLING: dict[str, str] = {
    "prompt": "translated: CLIPTextEncode, weights rewritten for ComfyUI, BREAK chunks joined "
    "with ConditioningConcat; prompt editing, alternation and non-LoRA tags refused",
    "negative_prompt": "translated: as the prompt, into KSampler's negative",
    "steps": "translated: KSampler steps (img2img: the steps that actually run)",
    "sampler": "translated: SAMPLER_NAMES; PLMS refused (ComfyUI has none)",
    "schedule": "translated: SCHEDULE_NAMES (AUTOMATIC_SCHEDULERS for DDIM and LCM)",
    "cfg_scale": "translated: KSampler cfg",
    "seed": "translated: KSampler seed, seed + i for image i (one sampler per image)",
    "width": "translated: EmptyLatentImage width / init image fitted to it",
    "height": "translated: EmptyLatentImage height / init image fitted to it",
    "model": "translated: CheckpointLoaderSimple (match_name); empty (built-in) refused",
    "vae": "translated: VAELoader (match_name)",
    "strength": "translated: KSampler denoise",
    "clip_skip": "translated: CLIPSetLastLayer(-N) when above 1",
    "batch_size": "translated: one KSampler per image, joined with ImageBatch",
    "init_image": "translated: uploaded (fitted like the local engine), LoadImage → VAEEncode",
    "loras": "translated: LoraLoader chain (prompt tags too)",
    "controls": "translated: ControlNetLoader + ControlNetApplyAdvanced; inpaint type refused",
    "references": "refused: IP-Adapter needs custom nodes on ComfyUI",
    "mask": "translated: prepared locally, SetLatentNoiseMask + ImageCompositeMasked",
    "expand": "translated: the grown canvas prepared locally, inpainted like a mask",
    "hires": "translated: second KSampler after LatentUpscale / ImageScale / upscale model; "
    "refused with an init image",
    "LoraRef.name": "translated: LoraLoader lora_name (match_name)",
    "LoraRef.unet_strength": "translated: LoraLoader strength_model",
    "LoraRef.text_strength": "translated: LoraLoader strength_clip",
    "ControlUnit.type": "translated: the local preprocessor's result is uploaded; inpaint "
    "refused (needs -1 values no PNG carries)",
    "ControlUnit.image": "translated: fitted, preprocessed, uploaded, LoadImage",
    "ControlUnit.model": "translated: ControlNetLoader (match_name; empty: the server's one "
    "ControlNet of that type)",
    "ControlUnit.strength": "translated: ControlNetApplyAdvanced strength",
    "ControlUnit.start": "translated: ControlNetApplyAdvanced start_percent",
    "ControlUnit.end": "translated: ControlNetApplyAdvanced end_percent",
    "ControlUnit.resize": "translated: control_images.fit_control before upload",
    "ReferenceImage.image": "refused: with the whole reference image",
    "ReferenceImage.weight": "refused: with the whole reference image",
    "ReferenceImage.model": "refused: with the whole reference image",
    "MaskSpec.image": "translated: read by prepare_inpaint, uploaded as masks",
    "MaskSpec.blur": "translated: blurred locally (the uploaded soft masks)",
    "MaskSpec.mode": "translated: original / fill (pre-filled locally), latent nothing "
    "(LatentCompositeMasked); latent noise refused",
    "MaskSpec.padding": "translated: the crop made by prepare_inpaint",
    "MaskSpec.only_masked": "translated: the crop made by prepare_inpaint",
    "ExpandSpec.left": "translated: the canvas grown by prepare_inpaint",
    "ExpandSpec.right": "translated: the canvas grown by prepare_inpaint",
    "ExpandSpec.top": "translated: the canvas grown by prepare_inpaint",
    "ExpandSpec.bottom": "translated: the canvas grown by prepare_inpaint",
    "ExpandSpec.fill": "translated: the canvas filled by prepare_inpaint",
    "ExpandSpec.feather": "translated: the soft mask made by prepare_inpaint",
    "HiresSpec.scale": "translated: the second pass's size",
    "HiresSpec.upscaler": "translated: Latent → LatentUpscale, Lanczos → ImageScale, other "
    "names → UpscaleModelLoader (match_name)",
    "HiresSpec.steps": "translated: the second KSampler's steps",
    "HiresSpec.denoise": "translated: the second KSampler's denoise",
}

Link = list[Any]  # [node id, output index], as the API format writes a connection
Upload = Callable[[str, bytes], str]


class ServerModelLists(Protocol):
    """What ``unsupported`` and ``build_graph`` read of a server's models: any object with
    these attributes (``comfy_client.ServerModels`` is one). An optional ``embeddings``
    attribute (the server's embedding names) lets prompt words become ``embedding:name``."""

    @property
    def checkpoints(self) -> Sequence[str]: ...
    @property
    def loras(self) -> Sequence[str]: ...
    @property
    def vaes(self) -> Sequence[str]: ...
    @property
    def controlnets(self) -> Sequence[str]: ...
    @property
    def upscale_models(self) -> Sequence[str]: ...
    @property
    def samplers(self) -> Sequence[str]: ...
    @property
    def schedulers(self) -> Sequence[str]: ...


# -- names ----------------------------------------------------------------------------------
def _path_parts(name: str) -> list[str]:
    return [part for part in re.split(r"[\\/]+", name.strip()) if part]


def _stem(file_name: str) -> str:
    lowered = file_name.lower()
    for suffix in MODEL_SUFFIXES:
        if lowered.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def match_name(wanted: str, available: Sequence[str]) -> str | None:
    """The server's name for a local model, LoRA, VAE or ControlNet, or None.

    Tried in order, the first server name that matches wins: the exact string; the same
    path with either separator; a server path ending with ``wanted`` (a name with
    subfolders); the same file name ignoring the server's subfolders; the file name, then
    the stem (known model suffixes dropped), case-insensitively. So a local
    ``/x/models/checkpoints/dreamshaper_8.safetensors`` or ``dreamshaper_8`` finds the
    server's ``SD1.5\\dreamshaper_8.safetensors``. The server's string is returned unchanged.
    """
    parts = _path_parts(wanted)
    if not parts:
        return None
    if wanted in available:
        return wanted
    joined = "/".join(parts)
    servers = [(name, _path_parts(name)) for name in available]
    tests: list[Callable[[list[str]], bool]] = [
        lambda p: "/".join(p) == joined,
        lambda p: len(p) >= len(parts) and p[-len(parts) :] == parts,
        lambda p: bool(p) and p[-1] == parts[-1],
        lambda p: bool(p) and p[-1].casefold() == parts[-1].casefold(),
        lambda p: bool(p) and _stem(p[-1]).casefold() == _stem(parts[-1]).casefold(),
    ]
    for test in tests:
        for name, server_parts in servers:
            if test(server_parts):
                return name
    return None


def _short(name: str) -> str:
    """A local path or server name without folders and model suffix: its stem."""
    parts = _path_parts(name)
    return _stem(parts[-1]) if parts else name


def comfy_sampler(request: GenerationRequest) -> tuple[str, str]:
    """ComfyUI's (sampler_name, scheduler) for the request; ``KeyError`` for PLMS."""
    sampler = SAMPLER_NAMES[request.sampler]
    if request.schedule == "Automatic" and request.sampler in AUTOMATIC_SCHEDULERS:
        return sampler, AUTOMATIC_SCHEDULERS[request.sampler]
    return sampler, SCHEDULE_NAMES[request.schedule]


def _embeddings(models: ServerModelLists) -> Sequence[str] | None:
    names = getattr(models, "embeddings", None)
    return tuple(names) if names is not None else None


# -- prompts --------------------------------------------------------------------------------
_EMBEDDING_TRIGGER = re.compile(r"embedding:([^\s,()]+)", re.IGNORECASE)


def _escape(text: str) -> str:
    return text.replace("(", "\\(").replace(")", "\\)")


def _weight_text(weight: float) -> str:
    return f"{round(weight, 4):g}"


def _with_embeddings(text: str, embeddings: Sequence[str]) -> str:
    """Words naming one of the server's embeddings written as ComfyUI triggers them."""
    by_stem = {_short(name).casefold(): name for name in embeddings if name.strip()}
    if not by_stem:
        return text
    words = "|".join(re.escape(stem) for stem in sorted(by_stem, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w:])({words})(?![\w])", re.IGNORECASE)

    def trigger(match: re.Match[str]) -> str:
        # ComfyUI finds "embedding:" only at the start of a text or after a space.
        before = "" if match.start() == 0 or text[match.start() - 1].isspace() else " "
        name = _stem(by_stem[match.group(1).casefold()])  # ComfyUI adds the suffix
        return f"{before}embedding:{name}"

    return pattern.sub(trigger, text)


def _render(pieces: Sequence[Piece], embeddings: Sequence[str] | None) -> str:
    out = []
    for piece in pieces:
        text = _escape(piece.text)
        if embeddings:
            text = _with_embeddings(text, embeddings)
        if abs(piece.weight - 1.0) < 1e-6 or not text.strip():
            out.append(text)
        else:
            out.append(f"({text}:{_weight_text(piece.weight)})")
    return "".join(out)


def prompt_chunks(text: str, steps: int = 1, embeddings: Sequence[str] | None = None) -> list[str]:
    """The texts of a prompt's ``BREAK`` chunks in ComfyUI's weighting syntax (at least one;
    empty chunks dropped). Only the first step's prompt: scheduled prompts are refused by
    ``unsupported``."""
    parsed = parse_prompt(text, steps)
    chunks: list[list[Piece]] = [[]]
    for piece in parsed.pieces:
        if piece.brk:
            chunks.append([])
        else:
            chunks[-1].append(piece)
    rendered = [_render(chunk, embeddings) for chunk in chunks]
    kept = [chunk for chunk in rendered if chunk.strip()]
    return kept or [rendered[0] if rendered else ""]


def _prompt_problems(
    text: str, label: str, steps: int, embeddings: Sequence[str] | None
) -> list[str]:
    parsed = parse_prompt(text, steps)
    problems = []
    if parsed.scheduled:
        problems.append(
            f"The {label} uses prompt editing or alternation ([a:b:0.5], [a|b]), which "
            "ComfyUI servers cannot run; write it without them to generate there."
        )
    for tag in parsed.tags:
        if tag.kind not in LORA_KINDS:
            problems.append(
                f"The {label}'s tag {tag.source} has no stock ComfyUI equivalent; remove it "
                "to generate on a server."
            )
    if embeddings is not None:
        for name in _EMBEDDING_TRIGGER.findall(parsed.text):
            if match_name(name, embeddings) is None:
                problems.append(f"The embedding {name} in the {label} is not on this server.")
    return problems


# -- what a server cannot run ---------------------------------------------------------------
def unsupported(request: GenerationRequest, models: ServerModelLists) -> list[str]:
    """Why ``request`` cannot run on the server with ``models``: one sentence per problem,
    empty when it can. Cheap (no image is read): the pool asks this for every server.

    An empty ``samplers`` or ``schedulers`` list means the server did not say, and is not
    held against it.
    """
    problems: list[str] = []
    problems += _sampler_problems(request, models)
    problems += _model_problems(request, models)
    embeddings = _embeddings(models)
    for text, label in ((request.prompt, "prompt"), (request.negative_prompt, "negative prompt")):
        problems += _prompt_problems(text, label, request.steps, embeddings)
    for name, _unet, _text in used_loras(request):
        if match_name(name, models.loras) is None:
            problems.append(f"The LoRA {name} is not on this server; add it there or remove it.")
    for index, unit in enumerate(request.controls):
        problems += _control_problems(index, unit, request, models)
    if request.references:
        problems.append(
            "Reference images (IP-Adapter) need custom nodes on ComfyUI servers; remove them "
            "to generate on a server."
        )
    if request.mask is not None and request.mask.mode == "latent noise":
        problems.append(
            "Masked content “latent noise” has no stock ComfyUI node; pick original, fill or "
            "latent nothing to inpaint on a server."
        )
    if request.hires is not None:
        problems += _hires_problems(request, request.hires, models)
    return problems


def _sampler_problems(request: GenerationRequest, models: ServerModelLists) -> list[str]:
    if request.sampler not in SAMPLER_NAMES:
        return [
            f"The sampler {request.sampler} is not available on ComfyUI servers; pick another "
            "sampler."
        ]
    sampler, scheduler = comfy_sampler(request)
    problems = []
    if models.samplers and sampler not in models.samplers:
        problems.append(
            f"The sampler {request.sampler} ({sampler}) is not available on this server; pick "
            "another sampler."
        )
    if models.schedulers and scheduler not in models.schedulers:
        problems.append(
            f"The schedule {request.schedule} ({scheduler}) is not available on this server; "
            "pick another schedule type."
        )
    return problems


def _model_problems(request: GenerationRequest, models: ServerModelLists) -> list[str]:
    problems = []
    if not request.model:
        problems.append(
            "No model is selected, and Sandstorm's built-in model is not on ComfyUI servers; "
            "pick one of the server's checkpoints."
        )
    elif match_name(request.model, models.checkpoints) is None:
        problems.append(
            f"The model {_short(request.model)} is not on this server; add it there or pick "
            "one of its checkpoints."
        )
    if request.vae and match_name(request.vae, models.vaes) is None:
        problems.append(
            f"The VAE {_short(request.vae)} is not on this server; add it there or use the "
            "model's own VAE."
        )
    return problems


def _is_xl(name: str) -> bool:
    return bool(re.search(r"xl|pony|illustrious", name, re.IGNORECASE))


def _controlnet(
    unit: ControlUnit, checkpoint: str, models: ServerModelLists
) -> tuple[str | None, list[str]]:
    """The server's ControlNet for ``unit``: its ``model``, or when that is empty the one
    ControlNet of the unit's type (by file name; among several, the one whose name says
    SDXL when the checkpoint's does, or not). (name, []) or (None, candidates)."""
    if unit.model:
        return match_name(unit.model, models.controlnets), []
    candidates = [
        name
        for name in models.controlnets
        if control_type_of(_stem(_path_parts(name)[-1] if _path_parts(name) else name)) == unit.type
    ]
    if len(candidates) > 1:
        same_kind = [name for name in candidates if _is_xl(name) == _is_xl(checkpoint)]
        if len(same_kind) == 1:
            return same_kind[0], []
    if len(candidates) == 1:
        return candidates[0], []
    return None, candidates


def _control_problems(
    index: int, unit: ControlUnit, request: GenerationRequest, models: ServerModelLists
) -> list[str]:
    layer = f"Control layer {index + 1}"
    if unit.type == "inpaint":
        return [
            f"{layer}: the inpaint control type needs a preprocessor stock ComfyUI lacks; use "
            "a mask for inpainting on a server instead."
        ]
    checkpoint = match_name(request.model, models.checkpoints) or request.model
    name, candidates = _controlnet(unit, checkpoint, models)
    if name is not None:
        return []
    if unit.model:
        return [
            f"{layer}: the ControlNet {_short(unit.model)} is not on this server; add it there "
            "or pick another."
        ]
    if candidates:
        return [
            f"{layer}: several {unit.type} ControlNets are on this server "
            f"({', '.join(candidates)}); pick one for the layer."
        ]
    return [f"{layer}: no {unit.type} ControlNet is on this server; add one or pick a model."]


def _hires_problems(
    request: GenerationRequest, hires: HiresSpec, models: ServerModelLists
) -> list[str]:
    problems = []
    if request.init_image is not None:
        problems.append(
            "Hires fix works on text to image only; remove it or the init image to generate "
            "on a server."
        )
    if hires.upscaler not in ("Latent", "Lanczos") and (
        match_name(hires.upscaler, models.upscale_models) is None
    ):
        problems.append(
            f"The hires upscaler {hires.upscaler} is not on this server; pick Latent, Lanczos "
            "or one of its upscale models."
        )
    if _hires_steps(request, hires) < 1:
        problems.append(
            f"Hires fix at denoise {hires.denoise:g} would run no step; raise the hires "
            "denoise or its steps."
        )
    return problems


def _hires_steps(request: GenerationRequest, hires: HiresSpec) -> int:
    """The steps the hires pass runs (A1111's img2img counting, as for ``strength``)."""
    steps = hires.steps or request.steps
    return min(int(steps * hires.denoise), steps)


def hires_size(request: GenerationRequest, hires: HiresSpec) -> tuple[int, int]:
    """The hires pass's size: the request's scaled, down to multiples of 8 (as A1111)."""
    return (
        max(8, int(request.width * hires.scale) // 8 * 8),
        max(8, int(request.height * hires.scale) // 8 * 8),
    )


# -- the graph ------------------------------------------------------------------------------
class _Graph:
    """API-format nodes with sequential string ids."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, node_id: str | None = None, **inputs: Any) -> str:
        node_id = node_id or str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    def find(self, class_type: str) -> str | None:
        """The first node of ``class_type`` (for loaders shared by a batch's images)."""
        return next((k for k, n in self.nodes.items() if n["class_type"] == class_type), None)


def _out(node: str, index: int = 0) -> Link:
    return [node, index]


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG file data."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _Uploader:
    """Uploads each distinct image once, named by its content (so a new image never takes
    the name of another and the same image is not sent twice in one job)."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.names: dict[str, str] = {}

    def __call__(self, role: str, image: Image.Image) -> str:
        data = png_bytes(image)
        digest = hashlib.sha256(data).hexdigest()[:20]
        if digest not in self.names:
            self.names[digest] = self.upload(f"sandstorm-{role}-{digest}.png", data)
        return self.names[digest]


@dataclass(frozen=True)
class _Sampler:
    """What every ``KSampler`` of a job shares."""

    model: Link
    positive: Link
    negative: Link
    cfg: float
    sampler_name: str
    scheduler: str

    def sample(self, graph: _Graph, seed: int, steps: int, latent: Link, denoise: float) -> Link:
        node = graph.add(
            "KSampler",
            model=self.model,
            seed=seed,
            steps=steps,
            cfg=self.cfg,
            sampler_name=self.sampler_name,
            scheduler=self.scheduler,
            positive=self.positive,
            negative=self.negative,
            latent_image=latent,
            denoise=denoise,
        )
        return _out(node)


def build_graph(
    request: GenerationRequest,
    models: ServerModelLists,
    upload: Upload,
    output_node: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The API-format graph (node id → ``{"class_type", "inputs"}``) that runs ``request``
    on a server with ``models``; see the module docstring for its shape.

    ``upload(filename, png_bytes)`` is called for each image the graph needs and returns the
    server's name for it. ``output_node``: the id of the ``PreviewImage`` node holding the
    results (default: a new uuid4 hex; use a new one per job, and not a plain number: the
    other nodes are numbered "1", "2", …).

    Raises:
        RequestError: the server cannot run the request (the ``unsupported`` sentences), or
            the seed is still -1 (resolve it first: it is what gets recorded).
        ImageError: an init, mask or control image cannot be read.
    """
    problems = unsupported(request, models)
    if problems:
        raise RequestError(" ".join(problems))
    if request.seed == -1:
        raise RequestError("Resolve the seed before building a server graph.")
    graph = _Graph()
    uploads = _Uploader(upload)
    model, clip, vae = _loaders(graph, request, models)
    embeddings = _embeddings(models)
    positive = _encode(graph, clip, request.prompt, request.steps, embeddings)
    negative = _encode(graph, clip, request.negative_prompt, request.steps, embeddings)
    plan = None
    if request.init_image is not None and (request.mask or request.expand):
        plan = prepare_inpaint(
            request.mask, request.init_image, request.width, request.height, request.expand
        )
    positive, negative = _controls(graph, request, models, uploads, plan, (positive, negative, vae))
    latent, steps, denoise = _latent(graph, request, uploads, plan, vae)
    sampler = _Sampler(model, positive, negative, request.cfg_scale, *comfy_sampler(request))
    paste = _paste_inputs(graph, uploads, plan) if plan is not None else None
    images: list[Link] = []
    for index in range(request.batch_size):
        seed = request.seed + index
        result = sampler.sample(graph, seed, steps, latent, denoise)
        if request.hires is not None:
            result = _hires(graph, request, request.hires, models, result, vae)
            hires_steps = _hires_steps(request, request.hires)
            result = sampler.sample(graph, seed, hires_steps, result, request.hires.denoise)
        image = _out(graph.add("VAEDecode", samples=result, vae=vae))
        if plan is not None and paste is not None:
            image = _composite(graph, plan, paste, image)
        images.append(image)
    batch = images[0]
    for image in images[1:]:
        batch = _out(graph.add("ImageBatch", image1=batch, image2=image))
    output_node = output_node or uuid.uuid4().hex
    if output_node in graph.nodes:
        raise ValueError(f"The output node id {output_node!r} is taken; use a fresh one.")
    graph.add("PreviewImage", node_id=output_node, images=batch)
    return graph.nodes


def _loaders(
    graph: _Graph, request: GenerationRequest, models: ServerModelLists
) -> tuple[Link, Link, Link]:
    """Model, CLIP and VAE outputs after the checkpoint, VAE, clip skip and LoRAs."""
    checkpoint = graph.add(
        "CheckpointLoaderSimple", ckpt_name=match_name(request.model, models.checkpoints)
    )
    model, clip, vae = _out(checkpoint, 0), _out(checkpoint, 1), _out(checkpoint, 2)
    if request.vae:
        vae = _out(graph.add("VAELoader", vae_name=match_name(request.vae, models.vaes)))
    if request.clip_skip > 1:
        clip = _out(graph.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-request.clip_skip))
    for name, unet, text in used_loras(request):
        lora = graph.add(
            "LoraLoader",
            model=model,
            clip=clip,
            lora_name=match_name(name, models.loras),
            strength_model=unet,
            strength_clip=text,
        )
        model, clip = _out(lora, 0), _out(lora, 1)
    return model, clip, vae


def _encode(
    graph: _Graph, clip: Link, text: str, steps: int, embeddings: Sequence[str] | None
) -> Link:
    chunks = prompt_chunks(text, steps, embeddings)
    encoded = _out(graph.add("CLIPTextEncode", text=chunks[0], clip=clip))
    for chunk in chunks[1:]:
        more = _out(graph.add("CLIPTextEncode", text=chunk, clip=clip))
        encoded = _out(
            graph.add("ConditioningConcat", conditioning_to=encoded, conditioning_from=more)
        )
    return encoded


def control_image(
    unit: ControlUnit, size: tuple[int, int], plan: InpaintPlan | None = None
) -> Image.Image:
    """The control image a server gets for ``unit``, as the local engine makes it: fitted
    to the picture (the whole grown canvas when inpainting), preprocessed, cropped to the
    inpainting work area and scaled to the work size ``size``."""
    canvas = plan.init.size if plan is not None else size
    fitted = fit_control(load_image(unit.image), canvas[0], canvas[1], unit.resize)
    image = preprocess(unit.type, fitted)
    if plan is not None:
        image = image.crop(plan.box)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def _controls(
    graph: _Graph,
    request: GenerationRequest,
    models: ServerModelLists,
    uploads: _Uploader,
    plan: InpaintPlan | None,
    conditioning: tuple[Link, Link, Link],
) -> tuple[Link, Link]:
    positive, negative, vae = conditioning
    size = plan.work_image.size if plan is not None else (request.width, request.height)
    checkpoint = match_name(request.model, models.checkpoints) or request.model
    for index, unit in enumerate(request.controls):
        name, _ = _controlnet(unit, checkpoint, models)
        net = graph.add("ControlNetLoader", control_net_name=name)
        picture = uploads(f"control{index}", control_image(unit, size, plan))
        applied = graph.add(
            "ControlNetApplyAdvanced",
            positive=positive,
            negative=negative,
            control_net=_out(net),
            image=_out(graph.add("LoadImage", image=picture)),
            strength=unit.strength,
            start_percent=unit.start,
            end_percent=unit.end,
            vae=vae,
        )
        positive, negative = _out(applied, 0), _out(applied, 1)
    return positive, negative


def _mask_node(graph: _Graph, uploads: _Uploader, role: str, mask: Image.Image) -> Link:
    """A grey mask (255 = repaint) as ``LoadImageMask`` reads it (its red channel)."""
    name = uploads(role, mask.convert("L"))
    return _out(graph.add("LoadImageMask", image=name, channel="red"))


def _latent(
    graph: _Graph,
    request: GenerationRequest,
    uploads: _Uploader,
    plan: InpaintPlan | None,
    vae: Link,
) -> tuple[Link, int, float]:
    """The latent the sampler starts from, with its steps and denoise."""
    if request.init_image is None:
        empty = graph.add(
            "EmptyLatentImage", width=request.width, height=request.height, batch_size=1
        )
        return _out(empty), request.steps, 1.0
    if plan is None:
        init = fit_to_size(load_image(request.init_image), request.width, request.height)
        picture = graph.add("LoadImage", image=uploads("init", init))
    else:
        picture = graph.add("LoadImage", image=uploads("work", plan.work_image))
    latent = _out(graph.add("VAEEncode", pixels=_out(picture), vae=vae))
    if plan is not None:
        if plan.mode == "latent nothing":
            width, height = plan.work_image.size
            zeros = graph.add("EmptyLatentImage", width=width, height=height, batch_size=1)
            hard = plan.work_mask.point(lambda v: 255 if v >= MASK_THRESHOLD else 0)
            latent = _out(
                graph.add(
                    "LatentCompositeMasked",
                    destination=latent,
                    source=_out(zeros),
                    x=0,
                    y=0,
                    resize_source=False,
                    mask=_mask_node(graph, uploads, "hardmask", hard),
                )
            )
        mask = _mask_node(graph, uploads, "mask", plan.work_mask)
        latent = _out(graph.add("SetLatentNoiseMask", samples=latent, mask=mask))
    return latent, request.img2img_steps, request.strength


def _paste_inputs(graph: _Graph, uploads: _Uploader, plan: InpaintPlan) -> tuple[Link, Link]:
    """The whole init image and the feathered mask of the work box, shared by the batch."""
    base = graph.add("LoadImage", image=uploads("init", plan.init))
    mask = _mask_node(graph, uploads, "blend", plan.soft_mask.crop(plan.box))
    return _out(base), mask


def _composite(graph: _Graph, plan: InpaintPlan, paste: tuple[Link, Link], image: Link) -> Link:
    """The repaint scaled to its box and pasted onto the whole init image through the
    feathered mask: outside it every pixel is the input's."""
    left, top, right, bottom = plan.box
    size = (right - left, bottom - top)
    if size != plan.work_image.size:
        image = _out(
            graph.add(
                "ImageScale",
                image=image,
                upscale_method="lanczos",
                width=size[0],
                height=size[1],
                crop="disabled",
            )
        )
    base, mask = paste
    pasted = graph.add(
        "ImageCompositeMasked",
        destination=base,
        source=image,
        x=left,
        y=top,
        resize_source=False,
        mask=mask,
    )
    return _out(pasted)


def _hires(
    graph: _Graph,
    request: GenerationRequest,
    hires: HiresSpec,
    models: ServerModelLists,
    latent: Link,
    vae: Link,
) -> Link:
    """The first pass's latent at the hires size."""
    width, height = hires_size(request, hires)
    if hires.upscaler == "Latent":
        return _out(
            graph.add(
                "LatentUpscale",
                samples=latent,
                upscale_method=LATENT_UPSCALE_METHOD,
                width=width,
                height=height,
                crop="disabled",
            )
        )
    image = _out(graph.add("VAEDecode", samples=latent, vae=vae))
    if hires.upscaler != "Lanczos":
        name = match_name(hires.upscaler, models.upscale_models)
        loader = graph.find("UpscaleModelLoader") or graph.add(
            "UpscaleModelLoader", model_name=name
        )
        image = _out(graph.add("ImageUpscaleWithModel", upscale_model=_out(loader), image=image))
    scaled = graph.add(
        "ImageScale",
        image=image,
        upscale_method="lanczos",
        width=width,
        height=height,
        crop="disabled",
    )
    return _out(graph.add("VAEEncode", pixels=_out(scaled), vae=vae))


def describe_seed_difference() -> str:
    """One sentence for the window: why a seed repeats its picture only on the same kind of
    machine."""
    return (
        "The same seed gives a different picture on a ComfyUI server than on this computer: "
        "the server makes and scales the starting noise with its own code (each image of a "
        "batch with its own seed, seed + 1, …), spaces the denoising steps its own way, "
        "encodes an init image with the VAE's mean instead of a sample, and applies the "
        "denoising strength as its “denoise”, so a seed repeats its picture only on a "
        "ComfyUI server."
    )
