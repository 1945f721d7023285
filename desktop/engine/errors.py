"""Errors the engine raises. Every message is written for the person using the app."""


class SandstormError(Exception):
    """Base class: ``str(error)`` is a complete sentence that can be shown to a user."""


class RequestError(SandstormError, ValueError):
    """A generation request has an invalid value; raised before any work starts."""


class ModelError(SandstormError):
    """A model file or folder cannot be used (unreadable, unsupported, unsafe)."""


class ImageError(SandstormError):
    """An input image cannot be read or used."""


class GenerationError(SandstormError):
    """A generation failed while running (out of memory, NaN output, ...)."""


class Cancelled(SandstormError):
    """The job was cancelled by the user."""

    def __init__(self, message: str = "Cancelled.") -> None:
        super().__init__(message)
