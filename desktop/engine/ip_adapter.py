"""Reference images: IP-Adapters and their image encoders, found, matched and run offline.

Files come from the folders of ``model_folders.folders_for``: IP-Adapters from
``models/ipadapter`` (ComfyUI's ``models/ipadapter``; AUTOMATIC1111 keeps them in
``models/ControlNet`` beside the ControlNets), the CLIP image encoders they need from
``models/clip_vision`` (``CLIPVisionModelWithProjection`` weights as one ``.safetensors``
file without a config, as ComfyUI keeps them). Both are classified from the
``.safetensors`` header alone:

* an adapter's model family from the width of its ``ip_adapter.1.to_k_ip.weight`` (768:
  SD 1.x, 2048: SDXL), and what it reads from the image encoder: a plain adapter
  (``image_proj.proj``) its projected image embedding (1024 wide from ViT-H, 1280 from
  ViT-bigG), a Plus adapter (``image_proj.proj_in`` and ``latents``) or a Full-face one
  (``image_proj.proj.3``) its penultimate hidden states (1280 from ViT-H, 1664 from
  ViT-bigG);
* an encoder's shape: hidden width, number of layers and projection width (ViT-H:
  1280 / 32 / 1024, ViT-bigG: 1664 / 48 / 1280). It is built from the config folder whose
  fields match those shapes (the shipped ``resources/model_configs/clip_vision/vit-h`` and
  ``vit-bigg``).

Running (``ReferenceLibrary.prepare``): the image encoder and a CLIP feature extractor are
registered on every pipeline of the loaded model (txt2img and img2img share their modules),
``load_ip_adapter`` puts the adapters' attention processors on the shared UNet, and
``set_ip_adapter_scale`` gives each reference its weight; the pipeline gets the reference
images as ``ip_adapter_image``. The adapters stay loaded between jobs while the same ones
are used. A job without references takes them out again and puts back the UNet's own
attention processors (the very objects it had), so the base model's image comes back bit
for bit. That is what ``unload_ip_adapter`` does, except that it replaces every processor
with a new default one, which would lose attention slicing (and fails on a sliced one).

``.bin``/``.pth`` files are pickles and are refused; FaceID adapters need insightface,
which Sandstorm does not include.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.engine import paths
from desktop.engine.errors import ModelError
from desktop.engine.model_folders import folders_for
from desktop.engine.models import FAMILY_LABELS, read_safetensors_header
from desktop.engine.parts import ReferenceImage

if TYPE_CHECKING:
    import torch

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
#: Cross-attention width of an adapter → the model family it is made for.
FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
#: What to install for each family, named in the "none installed" message.
EXAMPLES = {"sd1": "ip-adapter_sd15.safetensors", "sdxl": "ip-adapter_sdxl_vit-h.safetensors"}
#: The standard CLIP image normalisation (what the encoders were trained with).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Kinds of adapters: what each reads from the image encoder.
PLAIN, PLUS, FULL = "plain", "plus", "full"
_ADAPTER_WORDS = re.compile(r"ip[-_ ]?adapter", re.IGNORECASE)
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class KnownEncoder:
    """One of the image encoders IP-Adapters are made for, with its shipped config."""

    label: str
    config: str
    file: str
    hidden_size: int
    layers: int
    projection_dim: int


KNOWN_ENCODERS = (
    KnownEncoder("ViT-H", "vit-h", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", 1280, 32, 1024),
    KnownEncoder(
        "ViT-bigG", "vit-bigg", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", 1664, 48, 1280
    ),
)


def _label(family: str) -> str:
    return FAMILY_LABELS.get(family, family or "an unknown")


@dataclass(frozen=True)
class AdapterFile:
    """One installed IP-Adapter.

    Attributes:
        name: the file stem: what a reference's ``model`` names.
        path: the file.
        family: "sd1", "sd2", "sdxl", or "" when unknown.
        context_width: the width of the text context it attends beside (what must match
            the model's cross-attention width), 0 when unknown.
        kind: "plain", "plus" or "full" (see the module docstring), "" when unknown.
        encoder_width: the width of what it reads from the image encoder: the projected
            image embedding (plain) or the hidden states (plus, full).
        problem: why it cannot be used ("" when it can).
    """

    name: str
    path: Path
    family: str = ""
    context_width: int = 0
    kind: str = ""
    encoder_width: int = 0
    problem: str = ""

    def needs(self) -> str:
        """The image encoder it needs, in words: "the ViT-H image encoder (file name)"."""
        known = self.known_encoder()
        if known is not None:
            return f"the {known.label} image encoder ({known.file})"
        what = "image embeddings" if self.kind == PLAIN else "hidden states"
        return f"an image encoder whose {what} are {self.encoder_width} wide"

    def known_encoder(self) -> KnownEncoder | None:
        """The standard encoder whose output this adapter reads (None: not a standard one)."""
        for known in KNOWN_ENCODERS:
            width = known.projection_dim if self.kind == PLAIN else known.hidden_size
            if width == self.encoder_width:
                return known
        return None


@dataclass(frozen=True)
class EncoderFile:
    """One installed CLIP image encoder (``CLIPVisionModelWithProjection`` weights).

    Attributes:
        name: the file stem.
        path: the file.
        hidden_size, layers, projection_dim, intermediate_size, patch_size, image_size:
            its shape, read from the header (0 when unknown).
        problem: why it cannot be used ("" when it can).
    """

    name: str
    path: Path
    hidden_size: int = 0
    layers: int = 0
    projection_dim: int = 0
    intermediate_size: int = 0
    patch_size: int = 0
    image_size: int = 0
    problem: str = ""

    @property
    def label(self) -> str:
        """ "ViT-H", "ViT-bigG", or its widths for another encoder."""
        for known in KNOWN_ENCODERS:
            shape = (known.hidden_size, known.layers, known.projection_dim)
            if shape == (self.hidden_size, self.layers, self.projection_dim):
                return known.label
        return f"{self.hidden_size}-wide, {self.layers}-layer"

    def fits(self, adapter: AdapterFile) -> bool:
        """Whether ``adapter`` can read this encoder's output."""
        if self.problem or adapter.problem:
            return False
        width = self.projection_dim if adapter.kind == PLAIN else self.hidden_size
        return width == adapter.encoder_width


# -- classification from headers --------------------------------------------------------------
def classify_adapter(shapes: dict[str, list[int]]) -> tuple[int, str, int, str]:
    """(context width, kind, encoder width, problem) of an IP-Adapter's tensor shapes."""
    proj = {k[len("image_proj.") :]: v for k, v in shapes.items() if k.startswith("image_proj.")}
    layers = {k[len("ip_adapter.") :]: v for k, v in shapes.items() if k.startswith("ip_adapter.")}
    if not proj and not layers:
        if any(k.startswith("vision_model.") for k in shapes):
            return (
                0,
                "",
                0,
                "it is an image encoder, not an IP-Adapter (put it in models/clip_vision)",
            )
        return 0, "", 0, "it is not an IP-Adapter (it has no image_proj or ip_adapter weights)"
    if any("lora" in k for k in layers) or any(k.startswith("perceiver_resampler.") for k in proj):
        return (
            0,
            "",
            0,
            (
                "it is a FaceID adapter, which needs face embeddings from insightface; Sandstorm "
                "does not include insightface"
            ),
        )
    key = layers.get("1.to_k_ip.weight")
    if key is None or len(key) != 2:
        return 0, "", 0, "it has no ip_adapter.1.to_k_ip weight, so its model family is unknown"
    width = int(key[1])
    if len(proj.get("proj.weight", [])) == 2:
        return width, PLAIN, int(proj["proj.weight"][1]), ""
    if len(proj.get("proj_in.weight", [])) == 2 and "latents" in proj:
        return width, PLUS, int(proj["proj_in.weight"][1]), ""
    if "proj.3.weight" in proj and len(proj.get("proj.0.weight", [])) == 2:
        return width, FULL, int(proj["proj.0.weight"][1]), ""
    return width, "", 0, "its image projection is of a kind Sandstorm does not know"


def classify_encoder(shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The ``EncoderFile`` fields (shape or ``problem``) of an image encoder's tensor shapes."""
    if not any(k.startswith("vision_model.") for k in shapes):
        if any(k.startswith(("image_proj.", "ip_adapter.")) for k in shapes):
            return {
                "problem": "it is an IP-Adapter, not an image encoder (put it in models/ipadapter)"
            }
        if any(k.startswith("visual.") for k in shapes):
            return {
                "problem": "it is in the open_clip layout; Sandstorm reads the transformers "
                "layout (CLIPVisionModelWithProjection), as ComfyUI's downloads are"
            }
        return {"problem": "it is not a CLIP image encoder (it has no vision_model weights)"}
    patch = shapes.get("vision_model.embeddings.patch_embedding.weight", [])
    projection = shapes.get("visual_projection.weight", [])
    if len(patch) != 4:
        return {"problem": "it has no patch embedding, so it is not a CLIP image encoder"}
    if len(projection) != 2:
        return {
            "problem": "it has no visual projection (a CLIPVisionModel without one); "
            "IP-Adapters need CLIPVisionModelWithProjection weights"
        }
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    fc1 = shapes.get("vision_model.encoder.layers.0.mlp.fc1.weight", [0])
    positions = shapes.get("vision_model.embeddings.position_embedding.weight", [0])
    side = round(max(0, int(positions[0]) - 1) ** 0.5)
    return {
        "hidden_size": int(patch[0]),
        "layers": len(layers),
        "projection_dim": int(projection[0]),
        "intermediate_size": int(fc1[0]),
        "patch_size": int(patch[2]),
        "image_size": side * int(patch[2]),
    }


def _pickle_problem(path: Path) -> str:
    return f"{path.suffix} files are pickles, which could run code; use the .safetensors version"


def _shapes(path: Path) -> dict[str, list[int]]:
    header = read_safetensors_header(path)
    return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}


def describe_adapter(path: Path) -> AdapterFile:
    """Classify one IP-Adapter file (never raises)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return AdapterFile(path.stem, path, problem=_pickle_problem(path))
    try:
        shapes = _shapes(path)
    except (OSError, ValueError) as exc:
        return AdapterFile(path.stem, path, problem=f"the file is damaged ({exc})")
    width, kind, encoder_width, problem = classify_adapter(shapes)
    family = FAMILY_BY_WIDTH.get(width, "")
    return AdapterFile(path.stem, path, family, width, kind, encoder_width, problem)


def describe_encoder(path: Path) -> EncoderFile:
    """Classify one image encoder file (never raises)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return EncoderFile(path.stem, path, problem=_pickle_problem(path))
    try:
        shapes = _shapes(path)
    except (OSError, ValueError) as exc:
        return EncoderFile(path.stem, path, problem=f"the file is damaged ({exc})")
    return EncoderFile(path.stem, path, **classify_encoder(shapes))


# -- finding ----------------------------------------------------------------------------------
def _files(folder: Path) -> Iterator[Path]:
    """The model files under ``folder``, recursively, sorted, hidden ones skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir():
                yield from _files(path)
            elif path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES:
                yield path
        except OSError:
            continue


def list_adapters(extra_sources: Iterable[Path | str] = ()) -> list[AdapterFile]:
    """Every installed IP-Adapter, one per name (the first folder wins), sorted by name.

    In a folder shared with other models (AUTOMATIC1111's ``models/ControlNet``) only the
    files with IP-Adapter keys are listed, and pickles or damaged files only when their name
    says they are IP-Adapters.
    """
    seen: dict[str, AdapterFile] = {}
    for folder in folders_for("ipadapter", extra_sources):
        own = folder.name.casefold() == "ipadapter"
        for path in _files(folder):
            item = describe_adapter(path)
            if not own and item.problem and not _ADAPTER_WORDS.search(item.name):
                continue  # a ControlNet or another model beside the adapters
            if not own and item.problem.startswith("it is not an IP-Adapter"):
                continue
            seen.setdefault(item.name.casefold(), item)
    return sorted(seen.values(), key=lambda item: item.name.casefold())


def list_encoders(extra_sources: Iterable[Path | str] = ()) -> list[EncoderFile]:
    """Every installed image encoder, one per name (the first folder wins), sorted by name."""
    seen: dict[str, EncoderFile] = {}
    for folder in folders_for("clip_vision", extra_sources):
        for path in _files(folder):
            item = describe_encoder(path)
            seen.setdefault(item.name.casefold(), item)
    return sorted(seen.values(), key=lambda item: item.name.casefold())


def _fits_model(item: AdapterFile, family: str, context_width: int) -> bool:
    if context_width:
        return item.context_width == context_width
    return bool(item.family) and item.family == family.removesuffix("-inpaint")


def suggest_adapter(
    family: str,
    adapters: Iterable[AdapterFile],
    encoders: Sequence[EncoderFile] = (),
    context_width: int = 0,
) -> AdapterFile | None:
    """The installed adapter for a model of ``family`` ("sd1", "sdxl" ...; an inpainting
    family counts as its base), or None. With ``context_width`` (the model's
    cross-attention width) the adapter must match it. Adapters whose image encoder is
    installed come first, then plain ones (the most general), then by name."""
    usable = [a for a in adapters if not a.problem and _fits_model(a, family, context_width)]
    if not usable:
        return None

    def rank(item: AdapterFile) -> tuple[bool, bool, str]:
        has_encoder = any(encoder.fits(item) for encoder in encoders)
        return (not has_encoder, item.kind != PLAIN, item.name.casefold())

    return min(usable, key=rank)


def suggest_encoder(
    adapters: Sequence[AdapterFile], encoders: Iterable[EncoderFile]
) -> EncoderFile | None:
    """The installed image encoder every one of ``adapters`` can read, or None."""
    for encoder in encoders:
        if all(encoder.fits(adapter) for adapter in adapters):
            return encoder
    return None


def find_adapter(name: str, extra_sources: Iterable[Path | str] = ()) -> AdapterFile | None:
    """The installed IP-Adapter called ``name`` (file stem, file name or path)."""
    return _named(name, lambda: list_adapters(extra_sources))


def _named(name: str, installed: Callable[[], list[AdapterFile]]) -> AdapterFile | None:
    candidate = Path(name).expanduser()
    if candidate.is_absolute() and candidate.is_file():
        return describe_adapter(candidate)
    suffix = candidate.suffix.lower()
    wanted = candidate.stem if suffix in SAFE_SUFFIXES + PICKLE_SUFFIXES else candidate.name
    for item in installed():
        if item.name.casefold() == wanted.casefold():
            return item
    return None


# -- a job's references -----------------------------------------------------------------------
@dataclass
class PreparedReferences:
    """What one job's references add to the pipeline call.

    Attributes:
        pipeline_kwargs: ``ip_adapter_image`` (one image per reference), or nothing.
        references: the references with ``model`` set to the adapter each one used.
        adapters: the adapters, one per reference; encoder: the image encoder they read.
    """

    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    references: tuple[ReferenceImage, ...] = ()
    adapters: list[AdapterFile] = field(default_factory=list)
    encoder: EncoderFile | None = None


@dataclass
class _Installed:
    """Adapters installed on a UNet, and what it had before (put back on removal)."""

    key: tuple
    unet: weakref.ReferenceType
    pipes: list[weakref.ReferenceType]
    processors: dict[str, Any]
    hid_proj: Any
    hid_type: Any
    feature_extractors: list[Any]
    encoder: Any


def encoder_configs() -> list[Path]:
    """The image-encoder config folders Sandstorm ships (ViT-H, ViT-bigG)."""
    root = paths.MODEL_CONFIGS / "clip_vision"
    return [root / known.config for known in KNOWN_ENCODERS]


class ReferenceLibrary:
    """Finds IP-Adapters and image encoders, and installs them on the loaded model."""

    def __init__(self, configs: Sequence[Path] | None = None) -> None:
        """``configs``: image-encoder config folders (each with a ``config.json``); the one
        whose shape matches an encoder file builds it (default: ``encoder_configs()``)."""
        self.configs = list(configs) if configs is not None else encoder_configs()
        self._installed: _Installed | None = None
        self.loads = 0

    # -- finding -------------------------------------------------------------------------
    def resolve(
        self,
        references: Sequence[ReferenceImage],
        family: str,
        extra_sources: Sequence[Any],
        context_width: int = 0,
    ) -> tuple[list[AdapterFile], EncoderFile]:
        """The adapter of each reference on a model of ``family`` whose cross-attention is
        ``context_width`` wide (0: check the family only), and the image encoder for all.

        Raises:
            ModelError: an adapter or the encoder is missing, unusable or made for another
                model, or the adapters need different encoders.
        """
        base = family.removesuffix("-inpaint")
        installed = list_adapters(extra_sources)
        encoders = list_encoders(extra_sources)
        chosen = [
            self._adapter_for(ref, base, installed, encoders, context_width) for ref in references
        ]
        encoder = suggest_encoder(chosen, encoders)
        if encoder is None:
            raise ModelError(_no_encoder_message(chosen, encoders))
        return chosen, encoder

    def _adapter_for(
        self,
        ref: ReferenceImage,
        base: str,
        installed: list[AdapterFile],
        encoders: list[EncoderFile],
        context_width: int,
    ) -> AdapterFile:
        if ref.model:
            item = _named(ref.model, lambda: installed)
            if item is None:
                wanted = Path(ref.model)
                key = wanted.stem if wanted.suffix else wanted.name
                raise ModelError(
                    f"The IP-Adapter '{key}' is not installed: put {key}.safetensors in "
                    "models/ipadapter, or pick another adapter for the reference image."
                )
        else:
            suggested = suggest_adapter(base, installed, encoders, context_width)
            if suggested is None:
                message = _no_adapter_message(base)
                broken = next((a for a in installed if a.problem), None)
                if broken is not None:  # perhaps the one meant, damaged or a pickle
                    message += (
                        f" The IP-Adapter {broken.path.name} cannot be used: {broken.problem}."
                    )
                raise ModelError(message)
            item = suggested
        if item.problem:
            raise ModelError(f"The IP-Adapter {item.path.name} cannot be used: {item.problem}.")
        if not _fits_model(item, base, context_width):
            if item.family and item.family != base:
                detail = f"this model is {_label(base)}"
            else:  # the same family name, another shape (a custom or test model)
                detail = (
                    f"its text context is {item.context_width} wide, this model's {context_width}"
                )
            raise ModelError(
                f"The IP-Adapter {item.path.name} is made for {_label(item.family)} models; "
                f"{detail}. Pick an adapter made for this model."
            )
        return item

    def config_for(self, encoder: EncoderFile) -> Path:
        """The config folder whose fields match ``encoder``'s shape.

        Raises:
            ModelError: none does (or the shipped one is missing).
        """
        wanted = {
            "hidden_size": encoder.hidden_size,
            "num_hidden_layers": encoder.layers,
            "projection_dim": encoder.projection_dim,
            "intermediate_size": encoder.intermediate_size,
            "patch_size": encoder.patch_size,
            "image_size": encoder.image_size,
        }
        for folder in self.configs:
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if all(not value or config.get(k) == value for k, value in wanted.items()):
                return folder
        if any(encoder.label == known.label for known in KNOWN_ENCODERS):
            raise ModelError(
                f"The {encoder.label} image encoder configuration Sandstorm ships is missing "
                f"({paths.MODEL_CONFIGS / 'clip_vision'}); reinstall Sandstorm."
            )
        raise ModelError(
            f"Sandstorm has no configuration for the image encoder {encoder.path.name} "
            f"({encoder.hidden_size} wide, {encoder.layers} layers, projection "
            f"{encoder.projection_dim}); use the ViT-H or ViT-bigG encoder."
        )

    # -- the loaded model ----------------------------------------------------------------
    def prepare(
        self,
        references: Sequence[ReferenceImage],
        loaded: Any,
        extra_sources: Sequence[Any],
    ) -> PreparedReferences:
        """Install the references' adapters on ``loaded`` (a ``LoadedPipelines``) with their
        weights, and return the pipeline arguments. Without references the adapters of an
        earlier job are taken out, and nothing is added.

        Raises:
            ModelError: an adapter or encoder cannot be found, loaded or used here.
            ImageError: a reference image cannot be read.
        """
        from desktop.engine.images import load_image

        pipes = [loaded.txt2img, loaded.img2img]
        unet = loaded.txt2img.unet
        if not references:
            self.remove()
            return PreparedReferences()
        adapters, encoder = self.resolve(
            references, loaded.info.family, extra_sources, int(unet.config.cross_attention_dim)
        )
        images = [load_image(ref.image) for ref in references]
        if _sequentially_offloaded(unet):
            raise ModelError(
                "Reference images cannot run in the sequential-offload GPU memory mode; "
                "choose another memory mode in the settings."
            )
        self._install(pipes, unet, adapters, encoder)
        pipes[0].set_ip_adapter_scale([float(ref.weight) for ref in references])
        named = tuple(
            replace(ref, model=a.name) for ref, a in zip(references, adapters, strict=True)
        )
        return PreparedReferences({"ip_adapter_image": images}, named, adapters, encoder)

    def _install(
        self, pipes: list[Any], unet: Any, adapters: list[AdapterFile], encoder: EncoderFile
    ) -> None:
        import torch

        dtype = unet.dtype
        key = (*(_file_key(a.path) for a in adapters), _file_key(encoder.path), str(dtype))
        current = self._installed
        if (
            current is not None
            and current.key == key
            and current.unet() is unet
            and all(p is ref() for p, ref in zip(pipes, current.pipes, strict=True))
        ):
            return  # the same adapters: only the weights change
        self.remove()
        config = self.config_for(encoder)
        device = getattr(pipes[0], "_execution_device", unet.device)
        saved = _Installed(
            key,
            weakref.ref(unet),
            [weakref.ref(p) for p in pipes],
            dict(unet.attn_processors),
            unet.encoder_hid_proj,
            unet.config.encoder_hid_dim_type,
            [getattr(p, "feature_extractor", None) for p in pipes],
            None,
        )
        # Recorded first: whatever fails below, ``remove`` puts the model back as it was.
        self._installed = saved
        try:
            with torch.no_grad():
                image_encoder = _load_encoder(encoder, config, dtype, device)
                saved.encoder = image_encoder
                features = _feature_extractor(int(image_encoder.config.image_size))
                for pipe in pipes:
                    pipe.register_modules(image_encoder=image_encoder, feature_extractor=features)
                _load_adapters(pipes[0], unet, adapters, saved.processors)
        except BaseException:
            self.remove()
            raise
        self.loads += 1

    def remove(self) -> None:
        """Take the installed adapters out (no-op when none are), putting back the UNet's
        own attention processors, image projection and the pipelines' feature extractors."""
        installed, self._installed = self._installed, None
        if installed is None:
            return
        unet = installed.unet()
        if unet is not None:
            unet.set_attn_processor(dict(installed.processors))
            unet.encoder_hid_proj = installed.hid_proj
            unet.config.encoder_hid_dim_type = installed.hid_type
        for ref, features in zip(installed.pipes, installed.feature_extractors, strict=True):
            pipe = ref()
            if pipe is not None:
                pipe.register_modules(image_encoder=None, feature_extractor=features)

    @property
    def installed(self) -> bool:
        """Whether adapters are installed on a model now."""
        return self._installed is not None and self._installed.unet() is not None


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _no_adapter_message(family: str) -> str:
    example = EXAMPLES.get(family)
    if example is None:
        return (
            f"No IP-Adapter for {_label(family)} models is installed: put one made for "
            f"{_label(family)} models in models/ipadapter, or remove the reference image."
        )
    vit_h = KNOWN_ENCODERS[0]
    return (
        f"No IP-Adapter for {_label(family)} models is installed: put one (for example "
        f"{example}, with the {vit_h.label} image encoder {vit_h.file} in models/clip_vision) "
        "in models/ipadapter, or pick an adapter for the reference image."
    )


def _conflict(first: AdapterFile, other: AdapterFile) -> bool:
    """Whether no one image encoder can serve both adapters."""
    if (first.kind == PLAIN) == (other.kind == PLAIN):
        return first.encoder_width != other.encoder_width
    known = (first.known_encoder(), other.known_encoder())
    return None not in known and known[0] != known[1]


def _no_encoder_message(adapters: list[AdapterFile], encoders: list[EncoderFile]) -> str:
    unique = list({a.path: a for a in adapters}.values())
    for i, first in enumerate(unique):
        for other in unique[i + 1 :]:
            if _conflict(first, other):
                return (
                    f"The IP-Adapters {first.path.name} and {other.path.name} need different "
                    f"image encoders ({first.needs()} and {other.needs()}); Sandstorm runs one "
                    "image encoder at a time, so pick adapters that share one."
                )
    missing = next(a for a in unique if not any(e.fits(a) for e in encoders))
    message = f"The IP-Adapter {missing.path.name} needs {missing.needs()} in models/clip_vision."
    broken = [e for e in encoders if e.problem]
    if broken:
        message += f" The image encoder {broken[0].path.name} cannot be used: {broken[0].problem}."
    return message


def _feature_extractor(size: int) -> Any:
    """CLIP's preprocessing (resize the short side, centre crop, normalise), made in code."""
    import transformers

    # transformers 5 names the PIL-based one (no torchvision needed) apart; before 5 it is
    # the only one.
    processor: Any = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor is None:
        processor = transformers.CLIPImageProcessor
    return processor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def _load_encoder(encoder: EncoderFile, config: Path, dtype: torch.dtype, device: Any) -> Any:
    """``CLIPVisionModelWithProjection`` from the config folder and the encoder's weights."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:
        state = {
            k: v
            for k, v in load_file(str(encoder.path)).items()
            if k.startswith(("vision_model.", "visual_projection."))
        }
        built: Any = CLIPVisionModelWithProjection.from_pretrained(
            None,
            config=CLIPVisionConfig.from_pretrained(str(config)),
            state_dict=state,
            dtype=dtype,
            output_loading_info=True,
        )
        model, info = built
    except Exception as exc:  # the libraries raise many types for a bad file
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelError(
            f"The image encoder {encoder.path.name} could not be loaded: it is damaged or not "
            f"a CLIP image encoder ({detail})."
        ) from exc
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ModelError(
            f"The image encoder {encoder.path.name} is incomplete ({len(missing)} weights "
            f"missing, e.g. {missing[:3]})."
        )
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def _load_adapters(pipe: Any, unet: Any, adapters: list[AdapterFile], own: dict[str, Any]) -> None:
    """``load_ip_adapter`` for ``adapters`` (in order), keeping the UNet's own processors
    for self-attention.

    diffusers builds a new processor of the same class for each self-attention layer, which
    fails for a sliced one (it needs its slice size): the layers get plain processors for
    the load and their own ones back after it.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor({name: AttnProcessor2_0() for name in own})
    try:
        pipe.load_ip_adapter(
            [str(a.path.parent) for a in adapters],
            subfolder="",
            weight_name=[a.path.name for a in adapters],
            image_encoder_folder=None,
            local_files_only=True,
        )
    except Exception as exc:  # the libraries raise many types for a bad file
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        names = ", ".join(dict.fromkeys(a.path.name for a in adapters))
        raise ModelError(
            f"The IP-Adapter {names} could not be loaded: it is damaged or does not fit this "
            f"model ({detail})."
        ) from exc
    processors = unet.attn_processors
    unet.set_attn_processor(
        {name: p if _is_adapter_processor(p) else own[name] for name, p in processors.items()}
    )


def _is_adapter_processor(processor: Any) -> bool:
    from diffusers.models import attention_processor as ap

    kinds = (ap.IPAdapterAttnProcessor, ap.IPAdapterAttnProcessor2_0)
    xformers = getattr(ap, "IPAdapterXFormersAttnProcessor", None)
    return isinstance(processor, kinds + ((xformers,) if xformers is not None else ()))


def _sequentially_offloaded(unet: Any) -> bool:
    """Whether accelerate offloads the UNet layer by layer: modules added after that (the
    adapters' processors) would stay off the GPU."""
    return any(
        bool(getattr(getattr(module, "_hf_hook", None), "offload", False))
        for module in unet.modules()
    )
