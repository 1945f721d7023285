"""Pick the compute device and the number format the pipelines run in.

torch is imported inside the functions: this module sits on start-up paths (the command
line's argument parsing, the main window) that must not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desktop.engine.errors import RequestError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> str:
    """Turn a device setting into a concrete torch device string.

    Args:
        name: "auto" (CUDA, then Apple MPS, then CPU), "cpu", "mps", "cuda" or "cuda:N".

    Returns:
        A device string torch accepts ("cuda", "cuda:1", "mps" or "cpu").

    Raises:
        RequestError: the name is unknown or that device is not available on this computer.
    """
    value = (name or "auto").strip().lower()
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
    base, _, index = value.partition(":")
    if base == "cuda":
        if index and not index.isdigit():
            raise RequestError(f"Unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N.")
        if not _cuda_available():
            raise RequestError(
                "No CUDA GPU is available (no NVIDIA GPU, or this torch build has no CUDA); "
                "use cpu or auto."
            )
        if index:
            import torch

            count = torch.cuda.device_count()
            if int(index) >= count:
                raise RequestError(
                    f"There is no GPU {value}: this computer has {count} CUDA GPU(s)."
                )
        return value
    raise RequestError(f"Unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N.")


def default_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """The number format for a device: half precision on GPUs, float32 on the CPU.

    float16 on the CPU is several times slower than float32 and some kernels lack it, so
    "auto" never picks it there.

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
        kind = device.split(":", 1)[0]
        return torch.float16 if kind in ("cuda", "mps") else torch.float32
    if choice not in table:
        raise RequestError(f"Unknown precision {dtype!r}; use auto, fp16, bf16 or fp32.")
    return table[choice]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name ("fp16", "bf16", "fp32") shown in the UI and in logs."""
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    return names.get(dtype, str(dtype).removeprefix("torch."))
