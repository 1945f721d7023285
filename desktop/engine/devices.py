"""Pick the compute device and the number format the pipelines run in.

torch is imported inside the functions: this module sits on start-up paths (the command
line's argument parsing, the main window) that must not pay for importing torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from desktop.engine.errors import RequestError

if TYPE_CHECKING:
    import torch

#: The device settings offered in menus (``cuda:N`` is accepted too, see ``parse_device``).
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
#: How to write a device, for help texts and error messages.
DEVICE_CHOICES_HELP = "auto, cpu, cuda, cuda:N (N = GPU number) or mps"
DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_device(text: str) -> str:
    """Check how a device is written and normalise it; the one device parser.

    Accepts "auto", "cpu", "cuda", "cuda:N" (N a GPU number) and "mps", in any case and with
    surrounding spaces; empty means "auto". Whether the device exists is not checked here
    (that needs torch; see ``resolve_device``), so it suits argparse ``type=`` and settings.

    Returns:
        The normalised value: "auto", "cpu", "mps", "cuda" or "cuda:N" ("cuda:01" -> "cuda:1").

    Raises:
        RequestError: (a ``ValueError``) the text is not one of those forms.
    """
    value = (text or "").strip().lower() or "auto"
    if value in ("auto", "cpu", "mps", "cuda"):
        return value
    base, sep, index = value.partition(":")
    if base == "cuda" and sep and index.isascii() and index.isdigit():
        return f"cuda:{int(index)}"
    raise RequestError(f"Unknown device {text!r}; use {DEVICE_CHOICES_HELP}.")


def resolve_device(name: str = "auto") -> str:
    """Turn a device setting into a concrete torch device string.

    Args:
        name: "auto" (CUDA, then Apple MPS, then CPU), "cpu", "mps", "cuda" or "cuda:N"
            (anything ``parse_device`` accepts).

    Returns:
        A device string torch accepts ("cuda", "cuda:1", "mps" or "cpu").

    Raises:
        RequestError: the name is unknown or that device is not available on this computer.
    """
    value = parse_device(name)
    if value == "auto":
        if _cuda_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available():
            raise RequestError("The Apple GPU (mps) is not available on this computer; use cpu.")
        return "mps"
    # cuda or cuda:N
    if not _cuda_available():
        raise RequestError(
            "No CUDA GPU is available (no NVIDIA GPU, or this torch build has no CUDA); "
            "use cpu or auto."
        )
    _, _, index = value.partition(":")
    if index:
        import torch

        count = torch.cuda.device_count()
        if int(index) >= count:
            raise RequestError(f"There is no GPU {value}: this computer has {count} CUDA GPU(s).")
    return value


def default_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """The UNet's number format for a device; "auto" is ``plan_compute``'s choice.

    Args:
        device: a string from ``resolve_device``.
        dtype: "auto", "fp16", "bf16" or "fp32".

    Raises:
        RequestError: ``dtype`` is not one of the choices.
    """
    import torch

    choice = (dtype or "auto").strip().lower()
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if choice == "auto":
        # The CPU's bf16 support is read here; a GPU's needs the GPU (see ``probe``).
        facts = probe(device) if device.startswith("cpu") else DeviceFacts(device)
        return torch_dtype(plan_compute(facts).dtype)
    if choice not in table:
        raise RequestError(f"Unknown precision {dtype!r}; use auto, fp16, bf16 or fp32.")
    return table[choice]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name ("fp16", "bf16", "fp32") shown in the UI and in logs."""
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    return names.get(dtype, str(dtype).removeprefix("torch."))


# -- the compute plan: number formats, memory mode and threads, decided in one place ---------

#: Number formats a user can ask for; "auto" lets ``plan_compute`` choose for the device.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: The built-in model's family: its 13 M-parameter UNet gains nothing from bf16 on a CPU.
SMALL_FAMILY = "builtin"
#: How much GPU memory to save, from none to the most (and the slowest).
MEMORY_MODES = ("auto", "off", "tiling", "offload", "sequential")
MEMORY_MODE_HELP = {
    "off": "everything stays on the GPU",
    "tiling": "VAE tiling and attention slicing (less memory, nearly the same speed)",
    "offload": "model CPU offload: only the module that runs sits on the GPU",
    "sequential": "sequential CPU offload: layer by layer (least memory, slowest)",
}
#: Images with at least this many pixels decode and encode in tiles (memory; see bench).
TILED_VAE_PIXELS = 1024 * 1024
GIB = 1024**3
#: Rough weight sizes in half precision and working memory per family (bytes), used to
#: choose a GPU memory mode. SD1.x ≈ 1.07 B parameters, SD2 ≈ 1.3 B, SDXL ≈ 3.5 B.
_HALF_WEIGHTS = {"sd1": 2.1 * GIB, "sd2": 2.6 * GIB, "sdxl": 7.0 * GIB, "builtin": 0.05 * GIB}
_WORKING = {"sd1": 1.5 * GIB, "sd2": 2.0 * GIB, "sdxl": 3.5 * GIB, "builtin": 0.2 * GIB}
#: The UNet's share of the weights: the largest module model offload must fit at once.
_UNET_SHARE = 0.8


@dataclass(frozen=True)
class DeviceFacts:
    """What the plan is decided from; ``probe`` reads them, tests make them up.

    Attributes:
        device: a string from ``resolve_device``.
        cpu_capability: torch's CPU kernel level ("AVX2", "AVX512", ...).
        native_bf16: the CPU computes bf16 in hardware (AVX512_BF16 or AMX), as torch sees it.
        gpu_name: the GPU's name ("" on the CPU).
        gpu_bf16: the GPU computes bf16 at full speed (NVIDIA compute capability 8.0 and up).
        free_memory / total_memory: GPU memory in bytes (None when unknown, e.g. MPS).
        physical_cores / logical_cpus: of this computer (None when unknown).
        threads: torch's current intra-op thread count.
    """

    device: str
    cpu_capability: str = ""
    native_bf16: bool = False
    gpu_name: str = ""
    gpu_bf16: bool = False
    free_memory: int | None = None
    total_memory: int | None = None
    physical_cores: int | None = None
    logical_cpus: int | None = None
    threads: int | None = None

    @property
    def kind(self) -> str:
        return self.device.split(":", 1)[0]


@dataclass(frozen=True)
class ComputeOptions:
    """The user's performance settings (settings file, ``--dtype`` and friends)."""

    precision: str = "auto"
    vae_precision: str = "auto"
    memory_mode: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("precision", PRECISION_CHOICES),
            ("vae_precision", PRECISION_CHOICES),
            ("memory_mode", MEMORY_MODES),
        ):
            value = str(getattr(self, name) or "auto").strip().lower()
            if value not in allowed:
                label = name.replace("_", " ")
                raise RequestError(f"Unknown {label} {value!r}; use {', '.join(allowed)}.")
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class ComputePlan:
    """How a model runs on a device, with the reason for every choice (for ``--check``).

    Attributes:
        dtype: the UNet's and text encoders' number format ("fp32", "bf16", "fp16").
        vae_dtype: the VAE's; decoding retries in fp32 when it gives NaN.
        memory_mode: "off", "tiling", "offload" or "sequential" (see ``MEMORY_MODE_HELP``).
        tiled_vae_pixels: images this large or larger decode and encode in tiles.
        threads: intra-op threads for the CPU (None: leave torch's count).
        compile: the UNet goes through ``torch.compile``.
    """

    device: str
    dtype: str
    vae_dtype: str
    memory_mode: str = "off"
    tiled_vae_pixels: int = TILED_VAE_PIXELS
    threads: int | None = None
    compile: bool = False
    reasons: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per choice, for ``sandstorm --check`` and the log."""
        retry = "" if self.vae_dtype == "fp32" else " (retried in fp32 if it gives NaN)"
        out = [f"UNet and text encoder in {self.dtype}; VAE in {self.vae_dtype}{retry}"]
        if self.device.startswith("cpu"):
            out.append(f"system memory; the VAE works in tiles from {_side(self.tiled_vae_pixels)}")
        else:
            out.append(
                f"memory mode {self.memory_mode}: {MEMORY_MODE_HELP[self.memory_mode]}; "
                f"the VAE works in tiles from {_side(self.tiled_vae_pixels)}"
            )
        if self.threads:
            out.append(f"{self.threads} CPU threads")
        out.append(f"torch.compile {'on' if self.compile else 'off'}")
        return out + [f"because {reason}" for reason in self.reasons]


def _side(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}×{side}" if side * side == pixels else f"{pixels} pixels"


def probe(device: str) -> DeviceFacts:
    """Read the facts ``plan_compute`` needs from torch (and psutil for the core count)."""
    import torch

    kind = device.split(":", 1)[0]
    cpu = torch.cpu
    capability = ""
    with contextlib.suppress(AttributeError, RuntimeError):
        capability = str(torch.backends.cpu.get_cpu_capability())
    native_bf16 = any(
        bool(getattr(cpu, name, lambda: False)())
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    physical, logical = _core_counts()
    facts = DeviceFacts(
        device=device,
        cpu_capability=capability,
        native_bf16=native_bf16,
        physical_cores=physical,
        logical_cpus=logical,
        threads=torch.get_num_threads(),
    )
    if kind == "cuda":
        index = int(device.partition(":")[2] or 0)
        free, total = torch.cuda.mem_get_info(index)
        major, _ = torch.cuda.get_device_capability(index)
        return replace(
            facts,
            gpu_name=torch.cuda.get_device_name(index),
            gpu_bf16=major >= 8,
            free_memory=int(free),
            total_memory=int(total),
        )
    if kind == "mps":
        return replace(facts, gpu_name="Apple GPU")
    return facts


def _core_counts() -> tuple[int | None, int | None]:
    import os

    logical = os.cpu_count()
    try:
        import psutil

        return psutil.cpu_count(logical=False) or logical, logical
    except ImportError:
        return logical, logical


def plan_compute(
    facts: DeviceFacts, options: ComputeOptions | None = None, family: str = "sd1"
) -> ComputePlan:
    """Choose number formats, memory mode and threads for ``family`` on ``facts.device``.

    CPU: bf16 where the CPU computes it natively (2.45× faster than fp32 for an SD1.5 UNet
    on an AVX512_BF16 EPYC), else fp32; fp16 never (several times slower, kernels missing);
    the VAE in fp32. CUDA: bf16 on GPUs that run it at full speed (no fp16 overflow, so no
    black images), else fp16; MPS: fp16. The VAE follows the UNet on GPUs except SDXL's in
    fp16, which overflows, so it is upcast. GPU memory mode from free memory.
    """
    options = options or ComputeOptions()
    reasons: list[str] = []
    dtype = _unet_dtype(facts, options.precision, reasons, family)
    vae_dtype = _vae_dtype(facts, options.vae_precision, dtype, family, reasons)
    memory = _memory_mode(facts, options.memory_mode, dtype, family, reasons)
    threads = None
    if facts.kind == "cpu" and facts.physical_cores:
        threads = facts.physical_cores
        if facts.logical_cpus and facts.logical_cpus > facts.physical_cores:
            reasons.append(
                f"{threads} threads, one per physical core: the hyper-threads share a core's "
                "vector units and only add contention"
            )
    if options.compile:
        reasons.append("torch.compile is on: the first job on a model compiles the UNet")
    return ComputePlan(
        device=facts.device,
        dtype=dtype,
        vae_dtype=vae_dtype,
        memory_mode=memory,
        threads=threads,
        compile=options.compile,
        reasons=tuple(reasons),
    )


def _unet_dtype(facts: DeviceFacts, choice: str, reasons: list[str], family: str) -> str:
    if facts.kind == "cpu":
        if choice == "fp16":
            reasons.append(
                "fp16 was asked for, but on the CPU it is several times slower "
                "than fp32 and some kernels lack it: using fp32"
            )
            return "fp32"
        if choice == "bf16" and not facts.native_bf16:
            reasons.append(
                f"bf16 was asked for; this CPU ({facts.cpu_capability or 'unknown'}) has no "
                "native bf16, so it is emulated and far slower than fp32"
            )
            return "bf16"
        if choice != "auto":
            reasons.append(f"{choice} was asked for in the settings")
            return choice
        if facts.native_bf16 and family == SMALL_FAMILY:
            reasons.append(
                "the built-in model is too small for bf16 to pay on the CPU (its evaluation: "
                "the same pictures, no faster than fp32): fp32"
            )
            return "fp32"
        if facts.native_bf16:
            reasons.append(
                "this CPU computes bf16 natively (AVX512_BF16/AMX): bf16 is "
                "about 2.4× faster than fp32 for the UNet"
            )
            return "bf16"
        reasons.append(
            f"this CPU ({facts.cpu_capability or 'unknown'}) has no native bf16 "
            "(AVX512_BF16 or AMX), where bf16 is emulated and far slower: fp32"
        )
        return "fp32"
    if choice != "auto":
        reasons.append(f"{choice} was asked for in the settings")
        return choice
    if facts.kind == "cuda" and facts.gpu_bf16:
        reasons.append(
            f"{facts.gpu_name or 'this GPU'} runs bf16 at fp16's speed without "
            "fp16's overflow (black images): bf16"
        )
        return "bf16"
    reasons.append(f"{facts.gpu_name or 'this GPU'}: half precision (fp16)")
    return "fp16"


def _vae_dtype(facts: DeviceFacts, choice: str, dtype: str, family: str, reasons: list[str]) -> str:
    if choice != "auto":
        if facts.kind == "cpu" and choice == "fp16":
            reasons.append("an fp16 VAE on the CPU is slow and lacks kernels: VAE in fp32")
            return "fp32"
        reasons.append(f"VAE in {choice}, as asked for in the settings")
        return choice
    if facts.kind == "cpu":
        if dtype != "fp32":
            reasons.append(
                "the VAE stays fp32 on the CPU: it keeps colours exact and is a "
                "small share of a job"
            )
        return "fp32"
    if dtype == "fp16" and family.startswith("sdxl"):
        reasons.append("SDXL's VAE overflows in fp16 (black images): it is upcast to fp32")
        return "fp32"
    return dtype


def _memory_mode(
    facts: DeviceFacts, choice: str, dtype: str, family: str, reasons: list[str]
) -> str:
    if facts.kind == "cpu":
        if choice not in ("auto", "off"):
            reasons.append(f"memory mode {choice} is for GPUs; the CPU uses system memory")
        return "off"
    if choice != "auto":
        reasons.append(f"memory mode {choice}, as asked for in the settings")
        return choice
    if facts.free_memory is None:
        return "off"
    scale = 2.0 if dtype == "fp32" else 1.0
    weights = _HALF_WEIGHTS.get(family, _HALF_WEIGHTS["sd1"]) * scale
    working = _WORKING.get(family, _WORKING["sd1"])
    free = facts.free_memory
    have = f"{free / GIB:.1f} GB free on the GPU"
    if free >= weights + working:
        return "off"
    if free >= weights + working / 3:
        mode = "tiling"
    elif free >= weights * _UNET_SHARE + working / 3:
        mode = "offload"
    else:
        mode = "sequential"
    need = f"a {family} model needs about {(weights + working) / GIB:.1f} GB"
    reasons.append(f"{have}, {need}: memory mode {mode}")
    return mode


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for "fp32", "bf16" or "fp16"."""
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
