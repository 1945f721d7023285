"""The interface a front end drives generations through, and the local implementation.

The window's worker thread and the command line talk to a ``Backend``: the local engine
here, a remote server later. A backend turns a ``GenerationRequest`` into a
``GenerationResult`` and reports progress through ``Progress``; it never saves (see
``desktop.engine.results.save_results``, which every front end uses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from desktop.engine.devices import ComputeOptions
from desktop.engine.progress import Progress
from desktop.engine.request import GenerationRequest

if TYPE_CHECKING:
    from desktop.engine.generate import Engine, GenerationResult


@runtime_checkable
class Backend(Protocol):
    """Something that can run generation requests, one at a time, on one thread.

    ``generate`` raises ``Cancelled`` when ``progress``'s cancel event is set, and a
    ``SandstormError`` with a user-facing message for anything else that goes wrong.
    """

    #: Shown in the window ("Local (cpu)", a server's address, ...).
    name: str

    def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult: ...

    def preload(self, model: str, progress: Progress) -> None:
        """Get ``model`` ready so the next job on it starts at once (may do nothing)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (memory, connections)."""
        ...


#: Makes the backend for a device setting and the performance settings.
BackendFactory = Callable[[str, ComputeOptions], Backend]


class LocalBackend:
    """Runs requests on this machine with the engine (torch is imported on creation)."""

    def __init__(
        self,
        device: str = "auto",
        model_folders: list[Path] | None = None,
        options: ComputeOptions | None = None,
    ) -> None:
        from desktop.engine.generate import Engine

        self.engine: Engine = Engine(device=device, model_folders=model_folders, options=options)
        self.name = f"Local ({self.engine.device})"

    def generate(self, request: GenerationRequest, progress: Progress) -> GenerationResult:
        return self.engine.generate(request, progress)

    def preload(self, model: str, progress: Progress) -> None:
        info = self.engine.resolve_model(model)
        self.engine.load(info, "", progress)

    def close(self) -> None:
        self.engine.unload()


def local_backend(device: str = "auto", options: ComputeOptions | None = None) -> Backend:
    """The default backend factory: the local engine on ``device`` with ``options``."""
    return LocalBackend(device, options=options)
