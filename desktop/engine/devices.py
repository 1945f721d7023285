"""Pick the compute device and the number format the pipelines run in.

torch is imported inside the functions: this module sits on start-up paths (the command
line's argument parsing, the main window) that must not pay for importing torch.
"""

from __future__ import annotations

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
